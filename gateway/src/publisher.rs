//! Publishing with publisher confirms over one long-lived AMQP connection.
//!
//! A [`ConfirmedPublisher`] holds one connection and a small pool of confirm
//! channels shared by every request; a supervisor task re-opens the
//! connection (and re-declares the topology) when the broker goes away and
//! comes back. A request's messages are spread over the pool: the send step is
//! serialised per channel (a channel is one ordered stream of frames), the
//! confirms are awaited together, so a 1,000-event batch costs one confirm
//! round trip, not a thousand. Only `Ack` for a routed message counts: a nack,
//! a returned (unroutable) mandatory message or a lost connection is an error,
//! never a 200. While RabbitMQ blocks the connection (`connection.blocked`,
//! a memory or disk alarm) nothing is sent: publishes fail at once and
//! `/readyz` says why, so nothing piles up in memory through an alarm.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::future::join_all;
use lapin::options::BasicPublishOptions;
use lapin::{BasicProperties, Channel, Confirmation, Connection, Event};
use sluice_shared::amqp::{ConnectError, confirm_channel, connect_with_heartbeat, redact_url};
use sluice_shared::config::AmqpConfig;
use sluice_shared::topology::{Topology, TopologyError};
use tokio::sync::{Mutex, Notify};
use tokio_util::sync::CancellationToken;

use crate::metrics::GatewayMetrics;

/// One message to publish.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub exchange: String,
    pub routing_key: String,
    pub body: Vec<u8>,
    pub properties: BasicProperties,
}

/// Why a publish did not end in a confirm.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("not connected to RabbitMQ (reconnecting in the background)")]
    NotConnected,
    /// Nothing was sent: a blocked connection would hold it unconfirmed.
    #[error("RabbitMQ has blocked publishing ({0}): free its memory or disk to lift the alarm")]
    Blocked(String),
    #[error("RabbitMQ refused the message (nack)")]
    Nacked,
    #[error("RabbitMQ could not route the message to any queue (is the topology declared?)")]
    Unroutable,
    #[error("AMQP error: {0}")]
    Broker(#[from] lapin::Error),
}

/// Why the publisher could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Topology(#[from] TopologyError),
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("opening channels failed: {0}")]
    Channel(#[from] lapin::Error),
}

/// A live connection and its confirm channels.
struct Session {
    connection: Connection,
    channels: Vec<Mutex<Channel>>,
}

struct Inner {
    config: AmqpConfig,
    topology: Topology,
    channel_count: usize,
    session: RwLock<Option<Arc<Session>>>,
    /// Wakes the supervisor when a publish saw the connection fail.
    broken: Notify,
    /// Why RabbitMQ blocked the connection (`connection.blocked`), while it does.
    blocked: std::sync::Mutex<Option<String>>,
    next_channel: AtomicUsize,
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
        channel_count: usize,
        metrics: GatewayMetrics,
        shutdown: CancellationToken,
    ) -> Result<Self, StartError> {
        let inner = Arc::new(Inner {
            config: config.clone(),
            topology: Topology::new(config),
            channel_count,
            session: RwLock::new(None),
            broken: Notify::new(),
            blocked: std::sync::Mutex::new(None),
            next_channel: AtomicUsize::new(0),
            metrics,
        });
        match open_session(&inner).await {
            Ok(session) => drop(inner.install(Some(Arc::new(session)))),
            Err(StartError::Topology(e)) => return Err(StartError::Topology(e)),
            Err(e) => {
                tracing::warn!(error = %e, "RabbitMQ unavailable at start; retrying in the background")
            }
        }
        tokio::spawn(supervise(inner.clone(), shutdown));
        Ok(Self(inner))
    }

    pub fn is_connected(&self) -> bool {
        self.0.current().is_some_and(|s| s.healthy())
    }

    /// Why RabbitMQ blocks publishing now (a memory or disk alarm), if it does.
    pub fn blocked(&self) -> Option<String> {
        let blocked = self.0.current()?.connection.status().blocked();
        blocked.then(|| self.0.blocked_reason())
    }

    pub fn topology(&self) -> &Topology {
        &self.0.topology
    }

    /// Publishes every message, all in flight at once, and waits for every confirm.
    /// The caller bounds the wait with its deadline.
    /// While RabbitMQ blocks the connection nothing is sent: the frames
    /// would only pile up unread, in memory, for as long as the alarm lasts.
    pub async fn publish_all(&self, messages: Vec<Outgoing>) -> Result<(), PublishError> {
        let session = self.0.current().ok_or(PublishError::NotConnected)?;
        if session.connection.status().blocked() {
            return Err(PublishError::Blocked(self.0.blocked_reason()));
        }
        let started = Instant::now();
        let pool = session.channels.len();
        let first = self.0.next_channel.fetch_add(1, Ordering::Relaxed);
        let mut groups: Vec<Vec<Outgoing>> = (0..pool).map(|_| Vec::new()).collect();
        for (i, message) in messages.into_iter().enumerate() {
            groups[(first + i) % pool].push(message);
        }
        let sends = groups
            .into_iter()
            .enumerate()
            .filter(|(_, group)| !group.is_empty())
            .map(|(i, group)| send_group(&session.channels[i], group));
        let results = join_all(sends).await;
        let outcome = settle(results).await;
        if let Err(PublishError::Broker(_)) = &outcome {
            self.0.broken.notify_one();
        }
        self.0.metrics.observe_confirm(started.elapsed());
        outcome
    }

    /// Closes the connection (pending confirms fail; nothing is half-published).
    pub async fn close(&self) {
        if let Some(session) = self.0.install(None) {
            let _ = session
                .connection
                .close(200, "gateway shutting down".into())
                .await;
        }
    }
}

/// Sends a group on one channel, holding the channel for the send step only.
async fn send_group(
    channel: &Mutex<Channel>,
    group: Vec<Outgoing>,
) -> Result<Vec<lapin::PublisherConfirm>, lapin::Error> {
    let channel = channel.lock().await;
    let mut confirms = Vec::with_capacity(group.len());
    for message in group {
        // mandatory: an unroutable message comes back instead of vanishing.
        let options = BasicPublishOptions {
            mandatory: true,
            ..Default::default()
        };
        let confirm = channel
            .basic_publish(
                message.exchange.as_str().into(),
                message.routing_key.as_str().into(),
                options,
                &message.body,
                message.properties,
            )
            .await?;
        confirms.push(confirm);
    }
    Ok(confirms)
}

/// Awaits every confirm; the first failure decides the answer.
async fn settle(
    sends: Vec<Result<Vec<lapin::PublisherConfirm>, lapin::Error>>,
) -> Result<(), PublishError> {
    let mut pending = Vec::new();
    for send in sends {
        pending.extend(send?);
    }
    for confirmation in join_all(pending).await {
        match confirmation? {
            Confirmation::Ack(None) => {}
            Confirmation::Ack(Some(_returned)) => return Err(PublishError::Unroutable),
            Confirmation::Nack(_) => return Err(PublishError::Nacked),
            Confirmation::NotRequested => return Err(PublishError::Nacked),
        }
    }
    Ok(())
}

impl Session {
    /// The connection and every channel are open (a channel the broker closed
    /// after an error would fail every publish routed to it).
    fn healthy(&self) -> bool {
        self.connection.status().connected()
            && self
                .channels
                .iter()
                .all(|c| c.try_lock().map(|c| c.status().connected()).unwrap_or(true))
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

async fn open_session(inner: &Inner) -> Result<Session, StartError> {
    let limit = inner.config.connect_timeout;
    let heartbeat = inner.config.heartbeat;
    let connection =
        connect_with_heartbeat(&inner.config.nodes, "sluice-gateway", limit, heartbeat).await?;
    let setup = async {
        let channel = connection.create_channel().await?;
        inner.topology.declare(&channel).await?;
        let _ = channel.close(200, "topology declared".into()).await;
        let mut channels = Vec::with_capacity(inner.channel_count);
        for _ in 0..inner.channel_count {
            channels.push(Mutex::new(confirm_channel(&connection).await?));
        }
        Ok::<_, StartError>(channels)
    };
    let channels = tokio::time::timeout(limit, setup)
        .await
        .map_err(|_| StartError::Connect(ConnectError::Timeout(limit)))??;
    Ok(Session {
        connection,
        channels,
    })
}

/// Keeps a session installed: waits for it to break, then reconnects with backoff.
async fn supervise(inner: Arc<Inner>, shutdown: CancellationToken) {
    let mut backoff = Duration::from_millis(250);
    while !shutdown.is_cancelled() {
        if let Some(session) = inner.current() {
            backoff = Duration::from_millis(250);
            let mut events = session.connection.events_listener();
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
                let _ = old.connection.close(200, "reconnecting".into()).await;
            }
            // A new connection starts unblocked; RabbitMQ says again if not.
            inner.metrics.broker_blocked.set(0);
            continue;
        }
        match open_session(&inner).await {
            Ok(session) => {
                tracing::info!(url = %redact_url(&inner.config.url), "connected to RabbitMQ");
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
