//! The public port: accepts connections under `[gateway.limits]`, with TLS
//! when `[gateway.tls]` is set, and serves HTTP/1.1 with hyper.
//!
//! - `max_connections`: past it a new connection is answered 503 with
//!   `Retry-After` (on plain HTTP; on TLS it is closed) and closed at once;
//! - `header_read_timeout` and `idle_timeout` ([`connection`]): a half-sent
//!   request head, or a connection left idle, is closed;
//! - a request head is capped by the HTTP parser at
//!   [`PARSER_HEAD_LIMIT`] (its own bare 431); the finer
//!   `max_header_bytes` and `max_headers` give a JSON 431 in
//!   [`crate::webhook`].
//!
//! Each peer address travels with its requests as `ConnectInfo`. On stop the
//! connections the kernel completed are taken, the listener closes, each
//! connection may start a request for [`SHUTDOWN_LINGER`] more, then
//! finishes its request in progress (for at most `drain_limit`) and closes.

pub mod connection;
pub mod tls;

use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use futures_util::FutureExt;
use hyper::body::Incoming;
use hyper::service::Service as _;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use sluice_shared::config::{LimitsConfig, PARSER_HEAD_LIMIT};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::connection::{Activity, Watched, watchdog};
use self::tls::ReloadableTls;
use crate::error::{GatewayError, Overload};
use crate::metrics::GatewayMetrics;

/// The answer to a connection over `max_connections`.
static SHED_ANSWER: LazyLock<Vec<u8>> = LazyLock::new(GatewayError::shed_connection_answer);

/// How long a shed connection is given to take its 503.
const SHED_LINGER: Duration = Duration::from_millis(200);
/// Shed connections lingering at once; past it they are closed without an answer.
const MAX_LINGERING: usize = 256;
/// At a stop, how long an open connection may still start a request before
/// it is closed (one accepted just before the port closed, its request on
/// the way); a request started in time finishes.
const SHUTDOWN_LINGER: Duration = Duration::from_millis(250);
/// Pause after a failed accept (out of file descriptors), so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Everything a connection needs.
#[derive(Clone)]
pub struct PublicPort {
    pub router: Router,
    pub limits: LimitsConfig,
    pub tls: Option<Arc<ReloadableTls>>,
    pub metrics: GatewayMetrics,
    /// After the stop, how long requests in flight may take to finish
    /// (`ack_budget`: none of them is due later).
    pub drain_limit: Duration,
}

/// Serves `listener` until `shutdown`, then drains the open connections.
pub async fn serve(listener: TcpListener, port: PublicPort, shutdown: CancellationToken) {
    let slots = Arc::new(Semaphore::new(port.limits.max_connections));
    let lingering = Arc::new(Semaphore::new(MAX_LINGERING));
    let tracker = TaskTracker::new();
    let admit = |stream: TcpStream, peer: SocketAddr| {
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            let label = Overload::Connections.label();
            port.metrics.shed.with_label_values(&[label]).inc();
            shed(stream, port.tls.is_some(), &lingering);
            return;
        };
        tracker.spawn(connection(
            stream,
            peer,
            slot,
            port.clone(),
            shutdown.clone(),
        ));
    };
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    port.metrics.accept_errors.inc();
                    tracing::warn!(error = %e, "accept failed (out of file descriptors?): pausing");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        admit(stream, peer);
    }
    // Connections the kernel completed already are served too: closing the
    // listener would reset them, and the requests on them, unread.
    while let Some(Ok((stream, peer))) = listener.accept().now_or_never() {
        admit(stream, peer);
    }
    drop(listener);
    tracker.close();
    if tokio::time::timeout(port.drain_limit, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            connections = tracker.len(),
            "connections still open after the ack budget; closing them"
        );
    }
}

/// Answers 503 and closes, without holding anything for long.
fn shed(mut stream: TcpStream, tls: bool, lingering: &Arc<Semaphore>) {
    let Ok(permit) = lingering.clone().try_acquire_owned() else {
        return;
    };
    if tls {
        return;
    }
    tokio::spawn(async move {
        let _permit = permit;
        let answer = async {
            stream.write_all(&SHED_ANSWER).await?;
            stream.shutdown().await?;
            // Read what the client sent, so closing does not reset the answer away.
            let mut sink = [0u8; 4096];
            while stream.read(&mut sink).await? > 0 {}
            Ok::<_, std::io::Error>(())
        };
        let _ = tokio::time::timeout(SHED_LINGER, answer).await;
    });
}

/// One connection, from accept (and TLS handshake) to close.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    _slot: OwnedSemaphorePermit,
    port: PublicPort,
    shutdown: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    port.metrics.connections_open.inc();
    let activity = Activity::new();
    let watched = Watched::new(stream, activity.clone());
    match &port.tls {
        None => http(watched, peer, activity, &port, shutdown).await,
        Some(tls) => {
            let handshake = tls.acceptor().accept(watched);
            match tokio::time::timeout(port.limits.header_read_timeout, handshake).await {
                Ok(Ok(stream)) => http(stream, peer, activity, &port, shutdown).await,
                Ok(Err(_)) => port.metrics.closed("tls_handshake"),
                Err(_) => port.metrics.closed("header_timeout"),
            }
        }
    }
    port.metrics.connections_open.dec();
}

/// HTTP/1.1 on an accepted (and decrypted) stream, under the watchdog.
async fn http<T>(
    io: T,
    peer: SocketAddr,
    activity: Arc<Activity>,
    port: &PublicPort,
    shutdown: CancellationToken,
) where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let router = TowerToHyperService::new(port.router.clone());
    let tracked = activity.clone();
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        let busy = tracked.busy();
        let answer = router.call(request);
        async move {
            let response = answer.await;
            drop(busy);
            response
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .header_read_timeout(None)
        .max_buf_size(PARSER_HEAD_LIMIT + 16 * 1024)
        .max_header_size(PARSER_HEAD_LIMIT);
    // Above hyper's default of 100 the parser must allow more; below it the
    // JSON 431 in the handler applies the configured figure.
    if port.limits.max_headers > 100 {
        builder.max_headers(port.limits.max_headers);
    }
    let connection = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    let limits = &port.limits;
    let dog = watchdog(activity, limits.header_read_timeout, limits.idle_timeout);
    tokio::pin!(dog);
    let mut stopping = false;
    let mut closing = false;
    let linger = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(linger);
    loop {
        tokio::select! {
            _ = connection.as_mut() => return,
            expired = dog.as_mut() => {
                port.metrics.closed(expired.label());
                return;
            }
            () = shutdown.cancelled(), if !stopping => {
                stopping = true;
                linger.as_mut().reset(tokio::time::Instant::now() + SHUTDOWN_LINGER);
            }
            // hyper closes a connection it holds no request of at once, even
            // one whose request is on its way: read it first.
            () = linger.as_mut(), if stopping && !closing => {
                closing = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
}
