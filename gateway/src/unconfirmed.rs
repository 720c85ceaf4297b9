//! A publish that outlives its request.
//!
//! Once a request's frames are queued on the AMQP connection, RabbitMQ may
//! store its messages whether or not anyone still waits for the confirms.
//! So the publish runs in a task of its own ([`Publish::start`]): the
//! request waits for it until the ack budget runs out and then answers 503,
//! but the task goes on. Its outcome is unknown until the confirm (or a
//! failure) arrives, and so it stays: the request's dedup keys are kept
//! `pending` meanwhile (renewed every third of `redis.pending_ttl`), so the
//! provider's retry is answered 503 `in_flight` with `Retry-After: 1` and
//! publishes nothing. Once confirmed the keys turn `done` (the next retry
//! is a duplicate); once refused (a nack, a return) they are released (the
//! next retry publishes). A publish whose connection died first stays
//! unknown for good: its keys are left to expire after `redis.pending_ttl`,
//! and if the provider's later retry publishes a second copy, the worker
//! drops whichever copy comes second (`x-sluice-copy`, the worker's
//! `copies` module). `sluice_gateway_unconfirmed_publishes` counts the
//! publishes waiting so, `sluice_gateway_late_confirms_total` how they ended.
//!
//! A publish still waiting when the gateway stops ends with its connection:
//! unknown, so its keys expire, as after a crash.

use std::time::Duration;

use tokio::task::{JoinError, JoinHandle};
use tokio::time::{Instant, MissedTickBehavior, interval_at, timeout_at};

use crate::dedup::{DedupKey, DedupStore};
use crate::metrics::GatewayMetrics;
use crate::publisher::{ConfirmedPublisher, Outgoing, PublishError};

/// One request's publish, running on its own.
pub struct Publish(JoinHandle<Result<(), PublishError>>);

/// How waiting for a publish ended.
pub enum Waited {
    /// Every message confirmed.
    Confirmed,
    /// The publish failed: nothing more will come of it.
    Failed(PublishError),
    /// The deadline came first; the publish goes on.
    Pending(Publish),
    /// The publish task panicked: its outcome cannot be known.
    Lost(JoinError),
}

impl Publish {
    /// Starts publishing `messages` with confirms.
    pub fn start(publisher: &ConfirmedPublisher, messages: Vec<Outgoing>) -> Self {
        let publisher = publisher.clone();
        Self(tokio::spawn(async move {
            publisher.publish_all(messages).await
        }))
    }

    /// Waits for the outcome until `deadline`.
    pub async fn wait_until(mut self, deadline: Instant) -> Waited {
        match timeout_at(deadline, &mut self.0).await {
            Ok(Ok(Ok(()))) => Waited::Confirmed,
            Ok(Ok(Err(e))) => Waited::Failed(e),
            Ok(Err(panicked)) => Waited::Lost(panicked),
            Err(_) => Waited::Pending(self),
        }
    }
}

/// Where a late outcome is written: the keys the request holds and the
/// window a `done` key lives for.
pub struct HeldKeys {
    pub dedup: DedupStore,
    pub keys: Vec<DedupKey>,
    /// The source's `dedup_ttl`.
    pub window: Duration,
}

/// Awaits `publish` to its end, keeping `held` pending meanwhile, then marks
/// them `done` or releases them. Run it in a task of its own.
pub async fn await_late_outcome(publish: Publish, held: HeldKeys, metrics: GatewayMetrics) {
    metrics.unconfirmed.inc();
    let outcome = await_keeping_pending(publish, &held).await;
    metrics.unconfirmed.dec();
    let events = held.keys.len();
    let label = match outcome {
        Ok(Ok(())) => {
            tracing::info!(
                events,
                "publish confirmed after its request was answered 503; retries are duplicates"
            );
            if let Err(e) = held.dedup.mark_done(&held.keys, held.window).await {
                tracing::warn!(error = %e, "could not mark late-confirmed events done in Redis; their keys expire and a later retry may publish again");
            }
            "confirmed"
        }
        Ok(Err(e)) if e.outcome_unknown() => {
            tracing::warn!(error = %e, events, "publish outcome unknown after its request was answered 503; its keys stay pending until redis.pending_ttl");
            "unknown"
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, events, "publish failed after its request was answered 503; releasing its keys");
            release(&held.dedup, &held.keys).await;
            "failed"
        }
        Err(panicked) => {
            tracing::error!(error = %panicked, "a publish task panicked; its keys expire by themselves");
            "failed"
        }
    };
    metrics.late_confirms.with_label_values(&[label]).inc();
}

/// The publish's outcome, renewing the held keys every third of their life
/// until it comes.
async fn await_keeping_pending(
    publish: Publish,
    held: &HeldKeys,
) -> Result<Result<(), PublishError>, JoinError> {
    let Publish(mut task) = publish;
    let period = (held.dedup.pending_ttl() / 3).max(Duration::from_millis(10));
    let mut renew = interval_at(Instant::now() + period, period);
    renew.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            joined = &mut task => return joined,
            _ = renew.tick() => {
                if let Err(e) = held.dedup.keep_pending(&held.keys).await {
                    tracing::warn!(error = %e, "could not renew pending dedup keys of an unconfirmed publish");
                }
            }
        }
    }
}

/// Frees keys whose publish failed, so the provider's retry is accepted.
pub async fn release(dedup: &DedupStore, keys: &[DedupKey]) {
    if let Err(e) = dedup.release(keys).await {
        tracing::warn!(error = %e, "could not release dedup keys; they expire by themselves");
    }
}
