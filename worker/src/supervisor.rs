//! Keeps the worker consuming: connect, consume, and after a lost
//! connection wait (250 ms doubling to 5 s), reconnect, re-declare, resume.
//!
//! A session runs every [`Lane`] at once (the router and one per route);
//! when one lane loses the session, the others stop and all reconnect
//! together. The lanes own what outlives a session: the delivery tasks (a
//! message's task may still be running when its connection drops) and the
//! concurrency permits. At shutdown [`Supervisor::drain`] gives those tasks
//! the grace period, then abandons the rest; the broker redelivers their
//! unacked messages.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use tokio_util::sync::CancellationToken;

use crate::backoff::ReconnectBackoff;
use crate::broker::{BrokerSettings, Session, SessionError};
use crate::consumer::{Lane, SessionContext, SessionEnd};
use crate::dispatch::Dispatcher;
use crate::ordered::{OrderedConsumers, OrderedSettings};
use crate::readiness::BrokerStatus;

/// The reconnecting consumer.
pub struct Supervisor {
    pub settings: BrokerSettings,
    pub dispatcher: Arc<Dispatcher>,
    pub status: BrokerStatus,
    /// The router first, then one lane per route.
    pub lanes: Vec<Lane>,
    pub backoff: ReconnectBackoff,
    /// The ordered routes' partition consumers' settings.
    pub ordered: Arc<OrderedSettings>,
    /// How long stopping waits for the partition consumers.
    pub grace: Duration,
}

impl Supervisor {
    /// Consumes until `shutdown`, reconnecting as needed. Returns the live
    /// session (its consumer cancelled) so the caller can drain then close
    /// it, or an error a reconnect cannot fix (a topology mismatch).
    pub async fn run(
        &mut self,
        mut session: Option<Session>,
        shutdown: &CancellationToken,
    ) -> Result<Option<Arc<Session>>, SessionError> {
        loop {
            let current = match session.take() {
                Some(session) => Arc::new(session),
                None => match self.connect(shutdown).await? {
                    Some(session) => Arc::new(session),
                    None => return Ok(None),
                },
            };
            // Each session runs every partition consumer on its connection;
            // a lost session takes them down with it.
            let ordered = OrderedConsumers::start(
                &current,
                &self.dispatcher,
                &self.ordered,
                shutdown.child_token(),
            );
            let end = self.run_lanes(&current, shutdown).await;
            ordered.stop(self.grace).await;
            match end {
                SessionEnd::Stopped => return Ok(Some(current)),
                SessionEnd::Lost(reason) => {
                    tracing::warn!(
                        url = %self.settings.redacted_url(),
                        reason = %reason,
                        "lost the RabbitMQ session; reconnecting"
                    );
                    self.status.set_down(format!("connection lost: {reason}"));
                }
            }
            if !self.pause(shutdown).await {
                return Ok(None);
            }
        }
    }

    /// Runs every lane on `session` until shutdown (`Stopped`) or until one
    /// of them loses it, which stops the others (`Lost`, with its reason).
    async fn run_lanes(
        &mut self,
        session: &Arc<Session>,
        shutdown: &CancellationToken,
    ) -> SessionEnd {
        let stop = shutdown.child_token();
        let ctx = SessionContext {
            session,
            dispatcher: &self.dispatcher,
            status: &self.status,
            stop: &stop,
        };
        let ends = join_all(self.lanes.iter_mut().map(|lane| {
            let ctx = &ctx;
            async move {
                let end = lane.run(ctx).await;
                if let SessionEnd::Lost(reason) = &end {
                    tracing::debug!(queue = %lane.queue, reason = %reason, "a consumer lost the session");
                    ctx.stop.cancel();
                }
                end
            }
        }))
        .await;
        if shutdown.is_cancelled() {
            return SessionEnd::Stopped;
        }
        ends.into_iter()
            .find(|end| matches!(end, SessionEnd::Lost(_)))
            .unwrap_or_else(|| SessionEnd::Lost("the consumers stopped".into()))
    }

    /// Tries to open a session until one opens (`Some`) or `shutdown` (`None`).
    async fn connect(
        &mut self,
        shutdown: &CancellationToken,
    ) -> Result<Option<Session>, SessionError> {
        loop {
            let opened = tokio::select! {
                biased;
                () = shutdown.cancelled() => return Ok(None),
                opened = self.settings.open() => opened,
            };
            match opened {
                Ok(session) => {
                    self.backoff.reset();
                    tracing::info!(url = %self.settings.redacted_url(), "connected to RabbitMQ");
                    return Ok(Some(session));
                }
                Err(e) if e.is_mismatch() => return Err(e),
                Err(e) => {
                    tracing::warn!(
                        url = %self.settings.redacted_url(),
                        error = %e,
                        "cannot reach RabbitMQ; retrying"
                    );
                    self.status.set_down(e.to_string());
                }
            }
            if !self.pause(shutdown).await {
                return Ok(None);
            }
        }
    }

    /// Waits the next backoff delay; false if `shutdown` came first.
    async fn pause(&mut self, shutdown: &CancellationToken) -> bool {
        let delay = self.backoff.next_delay();
        tokio::select! {
            biased;
            () = shutdown.cancelled() => false,
            () = tokio::time::sleep(delay) => true,
        }
    }

    /// Waits up to `grace` for every lane's tasks, then aborts what is left.
    pub async fn drain(&mut self, grace: Duration) {
        let in_flight: usize = self.lanes.iter().map(|lane| lane.tasks.len()).sum();
        if in_flight > 0 {
            tracing::info!(in_flight, grace = %humantime::format_duration(grace), "waiting for in-flight deliveries");
        }
        let deadline = tokio::time::Instant::now() + grace;
        let mut abandoned = 0;
        for lane in &mut self.lanes {
            if !lane.drain_until(deadline).await {
                abandoned += lane.tasks.len();
                lane.tasks.shutdown().await;
            }
        }
        if abandoned > 0 {
            tracing::warn!(
                abandoned,
                "shutdown grace is over; abandoning in-flight deliveries (RabbitMQ redelivers them)"
            );
        }
    }
}
