//! Publishing the gateway's events over one long-lived AMQP connection.
//!
//! A [`ConfirmedPublisher`] holds one connection and its
//! [`ConfirmChannels`]: each request's messages go out on a confirm channel
//! lent to that request alone, all in flight at once, so a 1,000-event batch
//! costs one confirm round trip, and a returned message is paired with the
//! right event (see [`sluice_shared::publish`]). A supervisor task re-opens
//! the connection (and re-declares the topology) when the broker goes away
//! and comes back. Only `Ack` for a routed message counts: a nack, a returned
//! (unroutable) mandatory message or a lost connection is an error, never a
//! 200. While RabbitMQ blocks the connection (`connection.blocked`, a memory
//! or disk alarm) nothing is sent: publishes fail at once and `/readyz` says
//! why, so nothing piles up in memory through an alarm.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::{Connection, Event};
use sluice_shared::amqp::{ConnectError, connect_with_heartbeat};
use sluice_shared::config::{AmqpConfig, RouteConfig};
pub use sluice_shared::publish::Outgoing;
use sluice_shared::publish::{self, ConfirmChannels};
use sluice_shared::topology::{Topology, TopologyError};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::metrics::GatewayMetrics;

/// Why a publish did not end in a confirm.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("not connected to RabbitMQ (reconnecting in the background)")]
    NotConnected,
    /// Nothing was sent: a blocked connection would hold it unconfirmed.
    #[error("RabbitMQ has blocked publishing ({0}): free its memory or disk to lift the alarm")]
    Blocked(String),
    #[error(transparent)]
    Publish(#[from] publish::PublishError),
}

/// How long routing counts as broken after the last unroutable message.
pub const ROUTING_SETTLE: Duration = Duration::from_secs(5);

fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl PublishError {
    /// Whether RabbitMQ may have stored the messages all the same (see
    /// [`publish::PublishError::outcome_unknown`]); nothing was sent while
    /// not connected or blocked.
    pub fn outcome_unknown(&self) -> bool {
        match self {
            Self::NotConnected | Self::Blocked(_) => false,
            Self::Publish(e) => e.outcome_unknown(),
        }
    }
}

/// Why the publisher could not open its first session (a topology mismatch
/// is fatal; an absent broker is retried in the background).
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Topology(#[from] TopologyError),
    #[error(transparent)]
    Connect(#[from] ConnectError),
}

/// A live connection and its confirm channels.
struct Session {
    channels: ConfirmChannels,
}

struct Inner {
    config: AmqpConfig,
    topology: Topology,
    /// Requests publishing at once, each on a confirm channel of its own.
    channel_count: usize,
    session: RwLock<Option<Arc<Session>>>,
    /// Wakes the supervisor when a publish saw the connection fail.
    broken: Notify,
    /// Why RabbitMQ blocked the connection (`connection.blocked`), while it does.
    blocked: std::sync::Mutex<Option<String>>,
    /// When a message last reached the unroutable queue (or came back).
    last_unroutable: std::sync::Mutex<Option<Instant>>,
    /// Wakes the rerouter: a publish came back unroutable.
    unroutable: Notify,
    metrics: GatewayMetrics,
}

/// Publishes with confirms; cheap to clone.
#[derive(Clone)]
pub struct ConfirmedPublisher(Arc<Inner>);

impl ConfirmedPublisher {
    /// Connects once (a topology mismatch is fatal; an absent broker is not)
    /// and starts the supervisor that keeps the connection up until `shutdown`.
    pub async fn start(
        config: &AmqpConfig,
        routes: &[RouteConfig],
        channel_count: usize,
        metrics: GatewayMetrics,
        shutdown: CancellationToken,
    ) -> Result<Self, OpenError> {
        let publisher = Self::unconnected(config, routes, channel_count, metrics);
        let inner = &publisher.0;
        match open_session(inner).await {
            Ok(session) => drop(inner.install(Some(Arc::new(session)))),
            Err(OpenError::Topology(e)) => return Err(OpenError::Topology(e)),
            Err(e) => {
                tracing::warn!(error = %e, "RabbitMQ unavailable at start; retrying in the background")
            }
        }
        tokio::spawn(supervise(inner.clone(), shutdown));
        Ok(publisher)
    }

    /// A publisher with no connection and no supervisor, made without any
    /// I/O: every publish fails [`PublishError::NotConnected`] (503). What
    /// [`Self::start`] begins with; a gateway state built without RabbitMQ
    /// (the router tests) keeps it so.
    /// `routes` gives the partition queues of the ordered routes, declared
    /// with the rest of the topology.
    pub fn unconnected(
        config: &AmqpConfig,
        routes: &[RouteConfig],
        channel_count: usize,
        metrics: GatewayMetrics,
    ) -> Self {
        Self(Arc::new(Inner {
            config: config.clone(),
            topology: Topology::new(config).with_routes(routes),
            channel_count,
            session: RwLock::new(None),
            broken: Notify::new(),
            blocked: std::sync::Mutex::new(None),
            last_unroutable: std::sync::Mutex::new(None),
            unroutable: Notify::new(),
            metrics,
        }))
    }

    pub fn is_connected(&self) -> bool {
        self.0.current().is_some_and(|s| s.healthy())
    }

    /// Why RabbitMQ blocks publishing now (a memory or disk alarm), if it does.
    pub fn blocked(&self) -> Option<String> {
        let blocked = self.0.current()?.connection().status().blocked();
        blocked.then(|| self.0.blocked_reason())
    }

    pub fn topology(&self) -> &Topology {
        &self.0.topology
    }

    /// Publishes every message, all in flight at once on a channel lent to
    /// them alone, and waits for every confirm; the first failure decides.
    /// The caller bounds the wait with its deadline. While RabbitMQ blocks
    /// the connection nothing is sent: the frames would only pile up
    /// unread, in memory, for as long as the alarm lasts.
    pub async fn publish_all(&self, messages: Vec<Outgoing>) -> Result<(), PublishError> {
        let session = self.0.current().ok_or(PublishError::NotConnected)?;
        if session.connection().status().blocked() {
            return Err(PublishError::Blocked(self.0.blocked_reason()));
        }
        let started = Instant::now();
        let outcomes = session.channels.publish(messages, None).await;
        let outcome = publish::first_failure(outcomes);
        match &outcome {
            Err(e) if e.is_broken_link() => self.0.broken.notify_one(),
            Err(publish::PublishError::Unroutable { .. }) => {
                self.mark_unroutable();
                self.0.unroutable.notify_one();
            }
            _ => {}
        }
        self.0.metrics.observe_confirm(started.elapsed());
        Ok(outcome?)
    }

    /// Publishes a group as [`ConfirmChannels::publish`] does, on the
    /// current connection: one outcome per message.
    pub async fn publish_group(
        &self,
        group: Vec<Outgoing>,
        limit: Duration,
    ) -> Result<Vec<Result<(), publish::PublishError>>, PublishError> {
        let session = self.0.current().ok_or(PublishError::NotConnected)?;
        if session.connection().status().blocked() {
            return Err(PublishError::Blocked(self.0.blocked_reason()));
        }
        Ok(session.channels.publish(group, Some(limit)).await)
    }

    /// A plain channel on the current connection (for the rerouter's consumer).
    pub async fn channel(&self) -> Result<lapin::Channel, PublishError> {
        let session = self.0.current().ok_or(PublishError::NotConnected)?;
        let channel = session.connection().create_channel().await;
        channel.map_err(|e| PublishError::Publish(publish::PublishError::Channel(e)))
    }

    /// Declares the topology again on the current connection (it repairs a
    /// binding or queue deleted by hand).
    pub async fn redeclare(&self) -> Result<(), String> {
        let session = self.0.current().ok_or("not connected to RabbitMQ")?;
        let limit = self.0.config.connect_timeout;
        match tokio::time::timeout(limit, self.0.topology.declare(session.connection())).await {
            Ok(declared) => declared.map_err(|e| e.to_string()),
            Err(_) => Err(format!("RabbitMQ did not answer within {limit:?}")),
        }
    }

    /// Notes that a message was found unroutable: routing counts as broken
    /// for [`ROUTING_SETTLE`] from now.
    pub fn mark_unroutable(&self) {
        self.0.metrics.routing_broken.set(1);
        *lock(&self.0.last_unroutable) = Some(Instant::now());
    }

    /// Why routing is broken, while it is: a message reached the unroutable
    /// queue (or came back) less than [`ROUTING_SETTLE`] ago.
    pub fn routing_broken(&self) -> Option<String> {
        let since = (*lock(&self.0.last_unroutable))?.elapsed();
        if since >= ROUTING_SETTLE {
            self.0.metrics.routing_broken.set(0);
            return None;
        }
        Some(format!(
            "a message found no queue {}s ago (a binding or queue deleted?): the topology is \
             re-declared and such messages are put back from {}",
            since.as_secs(),
            self.0.topology.unroutable()
        ))
    }

    /// Resolves when a publish came back unroutable.
    pub async fn unroutable_returned(&self) {
        self.0.unroutable.notified().await;
    }

    /// Closes the connection (pending confirms fail; nothing is half-published).
    pub async fn close(&self) {
        if let Some(session) = self.0.install(None) {
            let _ = session
                .connection()
                .close(200, "gateway shutting down".into())
                .await;
        }
    }
}

impl Session {
    fn connection(&self) -> &Connection {
        self.channels.connection()
    }

    /// The connection is open (a channel the broker closed is replaced
    /// when next lent).
    fn healthy(&self) -> bool {
        self.connection().status().connected()
    }
}

impl Inner {
    fn blocked_reason(&self) -> String {
        let reason = match self.blocked.lock() {
            Ok(reason) => reason.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        reason.unwrap_or_else(|| "a resource alarm".to_owned())
    }

    /// Records `connection.blocked` (`Some(reason)`) or `connection.unblocked`.
    fn set_blocked(&self, reason: Option<String>) {
        self.metrics.broker_blocked.set(i64::from(reason.is_some()));
        match &reason {
            Some(why) => {
                tracing::warn!(reason = %why, "RabbitMQ blocked publishing: answering 503 until it lifts the alarm")
            }
            None => tracing::info!("RabbitMQ unblocked publishing"),
        }
        match self.blocked.lock() {
            Ok(mut slot) => *slot = reason,
            Err(poisoned) => *poisoned.into_inner() = reason,
        }
    }

    fn current(&self) -> Option<Arc<Session>> {
        self.session.read().ok().and_then(|s| s.clone())
    }

    fn install(&self, session: Option<Arc<Session>>) -> Option<Arc<Session>> {
        self.metrics
            .broker_connected
            .set(i64::from(session.is_some()));
        match self.session.write() {
            Ok(mut slot) => std::mem::replace(&mut *slot, session),
            Err(poisoned) => std::mem::replace(&mut *poisoned.into_inner(), session),
        }
    }
}

async fn open_session(inner: &Inner) -> Result<Session, OpenError> {
    let limit = inner.config.connect_timeout;
    let heartbeat = inner.config.heartbeat;
    let connection =
        connect_with_heartbeat(&inner.config.nodes, "sluice-gateway", limit, heartbeat).await?;
    tokio::time::timeout(limit, inner.topology.declare(&connection))
        .await
        .map_err(|_| OpenError::Connect(ConnectError::Timeout(limit)))??;
    Ok(Session {
        channels: ConfirmChannels::new(connection, inner.channel_count),
    })
}

/// Keeps a session installed: waits for it to break, then reconnects with backoff.
async fn supervise(inner: Arc<Inner>, shutdown: CancellationToken) {
    let mut backoff = Duration::from_millis(250);
    while !shutdown.is_cancelled() {
        if let Some(session) = inner.current() {
            backoff = Duration::from_millis(250);
            let mut events = session.connection().events_listener();
            let mut poll = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = inner.broken.notified() => {}
                    event = events.next() => match event {
                        Some(Event::ConnectionBlocked(reason)) => inner.set_blocked(Some(reason)),
                        Some(Event::ConnectionUnblocked) => inner.set_blocked(None),
                        Some(Event::Error(_)) | None => {
                            tracing::warn!("RabbitMQ connection lost; reconnecting");
                            break;
                        }
                        Some(_) => {}
                    },
                    _ = poll.tick() => {}
                }
                if !session.healthy() {
                    tracing::warn!("RabbitMQ connection or channel closed; reconnecting");
                    break;
                }
            }
            if let Some(old) = inner.install(None) {
                let _ = old.connection().close(200, "reconnecting".into()).await;
            }
            // A new connection starts unblocked; RabbitMQ says again if not.
            inner.metrics.broker_blocked.set(0);
            continue;
        }
        match open_session(&inner).await {
            Ok(session) => {
                tracing::info!(nodes = %inner.config.nodes.redacted(), "connected to RabbitMQ (the node taken is logged at debug)");
                inner.install(Some(Arc::new(session)));
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "cannot reach RabbitMQ");
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}
