//! The core's broker steps under its policy: claiming a request's keys in
//! Redis (or going without under `on_redis_error = "publish"`), publishing
//! within the deadline, and marking the published keys `done`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use sluice_shared::config::RedisErrorPolicy;
use sluice_shared::envelope::unix_millis;
use tokio::time::timeout_at;

use super::{IngestError, Ingestor, RequestContext, Unavailable};
use crate::dedup::{Claim, DedupError, DedupKey};
use crate::publisher::Outgoing;
use crate::unconfirmed::{self, HeldKeys, Publish, Waited};

impl Ingestor {
    /// Claims the keys, or applies `on_redis_error`. The flag says whether keys are held.
    pub(super) async fn claim_or_bypass(
        &self,
        ctx: &RequestContext<'_>,
        keys: &[DedupKey],
    ) -> Result<(Vec<Claim>, bool), IngestError> {
        let error = match timeout_at(ctx.deadline, self.dedup.claim(keys)).await {
            Ok(Ok(claims)) => return Ok((claims, true)),
            Ok(Err(e)) => e,
            Err(_) => return Err(self.out_of_budget()),
        };
        match self.policy.on_redis_error {
            RedisErrorPolicy::Reject => Err(self.unavailable(Unavailable::Redis(error))),
            RedisErrorPolicy::Publish => {
                warn_redis_bypass(&self.redis_warned_at, &error);
                let source = ctx.source.name.as_str();
                let n = u64::try_from(keys.len()).unwrap_or(u64::MAX);
                self.metrics
                    .dedup_bypass
                    .with_label_values(&[source])
                    .inc_by(n);
                Ok((vec![Claim::New; keys.len()], false))
            }
        }
    }

    /// Publishes within the deadline. A failure that says RabbitMQ did not
    /// store the events frees the keys held for them; one that leaves it
    /// unknown (the connection died after the send) leaves them to expire; a
    /// publish still unconfirmed at the deadline goes on in the background and
    /// decides their keys later ([`crate::unconfirmed`]).
    pub(super) async fn publish(
        &self,
        ctx: &RequestContext<'_>,
        messages: Vec<Outgoing>,
        held: &[DedupKey],
    ) -> Result<(), IngestError> {
        if messages.is_empty() {
            return Ok(());
        }
        let publish = Publish::start(&self.publisher, messages);
        match publish.wait_until(ctx.deadline).await {
            Waited::Confirmed => Ok(()),
            Waited::Failed(e) if e.outcome_unknown() => {
                // RabbitMQ may hold the events: their keys stay `pending` until
                // they expire, and a copy published after that is dropped by the
                // worker (`x-sluice-copy`), never delivered twice.
                tracing::warn!(error = %e, "publish outcome unknown; its keys stay pending until redis.pending_ttl");
                Err(self.unavailable(Unavailable::Publish(e)))
            }
            Waited::Failed(e) => {
                if !held.is_empty() {
                    // Off the answer's path: the keys expire anyway.
                    let dedup = self.dedup.clone();
                    let keys = held.to_vec();
                    tokio::spawn(async move { unconfirmed::release(&dedup, &keys).await });
                }
                Err(self.unavailable(Unavailable::Publish(e)))
            }
            Waited::Pending(publish) => {
                let keys = HeldKeys {
                    dedup: self.dedup.clone(),
                    keys: held.to_vec(),
                    window: ctx.source.dedup_ttl,
                };
                let metrics = self.metrics.clone();
                tokio::spawn(unconfirmed::await_late_outcome(publish, keys, metrics));
                Err(self.out_of_budget())
            }
            Waited::Lost(panicked) => {
                tracing::error!(error = %panicked, "a publish task panicked; its keys expire by themselves");
                Err(self.out_of_budget())
            }
        }
    }

    /// Turns the published events' keys `done`, within the deadline.
    pub(super) async fn mark_done(&self, ctx: &RequestContext<'_>, held: &[DedupKey]) {
        if held.is_empty() {
            return;
        }
        let window = ctx.source.dedup_ttl;
        // The events are durable either way; a key left `pending` expires and at
        // worst lets a late provider retry through as a duplicate delivery
        // (at-least-once).
        match timeout_at(ctx.deadline, self.dedup.mark_done(held, window)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "could not mark events done in Redis"),
            Err(_) => tracing::warn!("could not mark events done in Redis within the ack budget"),
        }
    }
}

/// Logs a Redis bypass at most once every ten seconds (the metric counts every one).
fn warn_redis_bypass(last_warned: &AtomicU64, error: &DedupError) {
    let now = u64::try_from(unix_millis(SystemTime::now())).unwrap_or(0);
    let last = last_warned.load(Ordering::Relaxed);
    if now.saturating_sub(last) >= 10_000
        && last_warned
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        tracing::warn!(error = %error, "Redis unavailable: accepting events without deduplication (on_redis_error = publish)");
    }
}
