//! Start-up: [`Gateway::build`] turns a config into bound listeners and live
//! clients ([`router`] routes the public port); [`Gateway::run_until_stopped`] serves until told to stop, then
//! turns unready for `shutdown_grace`, closes the port, drains in-flight
//! requests and closes the AMQP connection. The public port
//! is served by [`crate::listener`] (limits, TLS); the admin port serves
//! `/healthz`, `/readyz` (Redis, RabbitMQ, topology; Redis down is only
//! `degraded` under `on_redis_error = "publish"`) and `/metrics`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::middleware::map_response_with_state;
use axum::response::Response;
use axum::routing::post;
use sluice_shared::admin::{self, Check, Readiness};
use sluice_shared::config::{Config, ConfigError, RedisErrorPolicy};
use tokio::net::{TcpListener, TcpSocket};
use tokio_util::sync::CancellationToken;

use crate::dedup::DedupStore;
use crate::listener::tls::{ReloadableTls, TlsError};
use crate::listener::{self, PublicPort};
use crate::metrics::GatewayMetrics;
use crate::ordered::OrderedRoutes;
use crate::publisher::{self, ConfirmedPublisher};
use crate::source::Sources;
use crate::state::AppState;
use crate::{handshake, webhook};

/// How often Redis is pinged for `sluice_gateway_redis_up` between requests.
const REDIS_PROBE_PERIOD: Duration = Duration::from_secs(5);

/// Why the gateway cannot start. Config problems exit 64.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot listen on {addr}: {source} (is another process using it?)")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("redis.url is not a usable Redis URL: {0}")]
    Redis(#[from] redis::RedisError),
    #[error(transparent)]
    Publisher(#[from] publisher::OpenError),
    #[error("metrics registry: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error(transparent)]
    Tls(#[from] TlsError),
}

pub struct Gateway {
    listener: TcpListener,
    admin_listener: TcpListener,
    state: Arc<AppState>,
    /// The certificate in force, when the public port speaks TLS.
    tls: Option<Arc<ReloadableTls>>,
    /// Stops the AMQP supervisor when the gateway stops.
    background: CancellationToken,
}

impl Gateway {
    pub async fn build(config: Config) -> Result<Self, StartError> {
        let sources = Sources::from_config(&config.gateway, &config.sources)?;
        let metrics = GatewayMetrics::new()?;
        metrics.register_sources(config.sources.keys().map(String::as_str));
        let dedup = DedupStore::new(&config.redis)?.with_metrics(metrics.clone());
        let background = CancellationToken::new();
        let channels = config.gateway.publisher_channels;
        let publisher = ConfirmedPublisher::start(
            &config.amqp,
            &config.routes,
            channels,
            metrics.clone(),
            background.clone(),
        )
        .await?;
        let tls = match config.gateway.tls.clone() {
            Some(files) => Some(Arc::new(ReloadableTls::load(files, metrics.clone())?)),
            None => None,
        };
        let listener = bind(config.gateway.listen).await?;
        let admin_listener = bind(config.gateway.admin_listen).await?;
        let mut state = AppState::new(config.gateway, sources, dedup, publisher, metrics);
        let ordered = OrderedRoutes::new(&config.routes);
        state.ingestor = state.ingestor.with_ordered_routes(ordered);
        let state = Arc::new(state);
        Ok(Self {
            listener,
            admin_listener,
            state,
            tls,
            background,
        })
    }

    /// The public address (the real port when configured with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| unreachable!("a bound listener has an address"))
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_listener
            .local_addr()
            .unwrap_or_else(|_| unreachable!("a bound listener has an address"))
    }

    /// Serves until `shutdown`, then stops in three steps: `/readyz`
    /// answers 503 for `gateway.shutdown_grace` while requests are still
    /// served (the load balancer takes the replica out); the public port
    /// closes; requests in flight get up to `ack_budget` to finish. Then the
    /// AMQP connection and the admin port close.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> std::io::Result<()> {
        let probe = self.state.ingestor.dedup().clone();
        tokio::spawn(probe.probe_every(REDIS_PROBE_PERIOD, self.background.clone()));
        tokio::spawn(crate::reroute::run(
            self.state.ingestor.publisher().clone(),
            self.state.metrics.clone(),
            self.background.clone(),
        ));
        let readiness = GatewayReadiness(self.state.clone());
        let admin = admin::router(self.state.metrics.registry.clone(), readiness);
        let admin_stop = CancellationToken::new();
        let close_port = CancellationToken::new();
        tokio::spawn(close_after_grace(
            shutdown,
            self.state.clone(),
            close_port.clone(),
        ));
        let admin_until = admin_stop.clone();
        let admin_task = tokio::spawn(async move {
            axum::serve(self.admin_listener, admin)
                .with_graceful_shutdown(admin_until.cancelled_owned())
                .await
        });
        let addr = self.listener.local_addr()?;
        if let Some(tls) = &self.tls {
            tokio::spawn(tls.clone().watch(self.background.clone()));
            tracing::info!(%addr, "gateway listening (HTTPS)");
        } else if addr.ip().is_loopback() {
            tracing::info!(%addr, "gateway listening (plain HTTP)");
        } else {
            tracing::warn!(%addr, "gateway listening with plain HTTP on a non-loopback address: \
                providers need HTTPS; set [gateway.tls] or put a TLS-terminating proxy in front \
                (docs/operations.md, \"TLS\")");
        }
        let port = PublicPort {
            router: router(self.state.clone()),
            limits: self.state.config.limits.clone(),
            tls: self.tls.clone(),
            metrics: self.state.metrics.clone(),
            drain_limit: self.state.config.ack_budget,
        };
        listener::serve(self.listener, port, close_port).await;
        self.background.cancel();
        self.state.ingestor.publisher().close().await;
        admin_stop.cancel();
        let _ = admin_task.await;
        tracing::info!("gateway stopped");
        Ok(())
    }
}

/// On `shutdown`: marks the gateway draining (`/readyz` 503), waits
/// `shutdown_grace` while requests are still served, then closes the port.
async fn close_after_grace(
    shutdown: CancellationToken,
    state: Arc<AppState>,
    close_port: CancellationToken,
) {
    shutdown.cancelled().await;
    state.draining.store(true, Ordering::Relaxed);
    let grace = state.config.shutdown_grace;
    tracing::info!(
        grace = ?grace,
        "stopping: /readyz answers 503; requests are served until the grace ends"
    );
    tokio::time::sleep(grace).await;
    tracing::info!("closing the public port; requests in flight finish within the ack budget");
    close_port.cancel();
}

/// The public port's routes: `POST` and `GET /webhooks/{source}`, a JSON
/// 405 and 404 for anything else. The router tests call it on a state built
/// without brokers.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route(
            "/webhooks/{source}",
            post(webhook::receive).get(handshake::handshake),
        )
        .method_not_allowed_fallback(webhook::method_not_allowed)
        .fallback(webhook::not_found)
        .layer(map_response_with_state(state.clone(), close_when_draining))
        .with_state(state)
}

/// While the gateway drains, every answer asks its client to close the
/// connection (hyper then closes it once the answer is written), so the
/// providers' keep-alive connections are gone before the port closes: a
/// request sent on an idle one at that moment would be cut unread.
async fn close_when_draining(
    State(state): State<Arc<AppState>>,
    mut response: Response,
) -> Response {
    if state.draining.load(Ordering::Relaxed) {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// Accept backlog of the listeners: bursts of new connections (a provider
/// reconnecting after an outage, a flood being shed) wait in the kernel
/// instead of having their SYNs dropped and retried a second later. The
/// kernel caps it at `net.core.somaxconn`.
const ACCEPT_BACKLOG: u32 = 4096;

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    let bound = || {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(ACCEPT_BACKLOG)
    };
    bound().map_err(|source| StartError::Bind { addr, source })
}

#[derive(Clone)]
struct GatewayReadiness(Arc<AppState>);

impl Readiness for GatewayReadiness {
    async fn check(&self) -> BTreeMap<&'static str, Check> {
        let redis = match (
            self.0.ingestor.dedup().ping().await,
            self.0.config.on_redis_error,
        ) {
            (Ok(()), _) => Check::Ok,
            // The policy keeps accepting without Redis: stay in the load
            // balancer, and say so.
            (Err(e), RedisErrorPolicy::Publish) => Check::Degraded(format!(
                "{e}; accepting events without deduplication (on_redis_error = publish)"
            )),
            (Err(e), RedisErrorPolicy::Reject) => {
                Check::Down(format!("{e}; answering 503 (on_redis_error = reject)"))
            }
        };
        // A session exists only once the topology is declared on it.
        let publisher = self.0.ingestor.publisher();
        let (rabbitmq, topology) = if let Some(why) = publisher.blocked() {
            (
                Err(format!(
                    "RabbitMQ blocks publishing ({why}): webhooks are answered 503"
                )),
                Ok(()),
            )
        } else if let Some(why) = publisher.routing_broken() {
            (Ok(()), Err(why))
        } else if publisher.is_connected() {
            (Ok(()), Ok(()))
        } else {
            (
                Err("not connected (reconnecting)".to_owned()),
                Err("not declared: waiting for a RabbitMQ connection".to_owned()),
            )
        };
        let shutdown = if self.0.draining.load(Ordering::Relaxed) {
            Check::Down("shutting down: the port closes after gateway.shutdown_grace".into())
        } else {
            Check::Ok
        };
        BTreeMap::from([
            ("redis", redis),
            ("rabbitmq", rabbitmq.into()),
            ("topology", topology.into()),
            ("shutdown", shutdown),
        ])
    }
}

#[cfg(test)]
mod tests;
