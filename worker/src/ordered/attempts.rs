//! One ordered event, from its first attempt to its end, in place.
//!
//! The message stays unacknowledged in the worker while its attempts run:
//! a failure that the retry policy would send to a retry tier waits that
//! tier's delay here instead (a tier would put the event back at the tail
//! of the work queue, behind later events of its key). The attempts are
//! counted as for any delivery (`sluice_worker_deliveries_total`, the
//! attempt and duration histograms) and written on the dead copy
//! (`x-sluice-attempts`, first and last failure). Delivered: ack. Out of
//! attempts, or refused: a confirmed copy to the dead exchange naming the
//! route, then ack, and the key moves on. Never a requeue.
//!
//! The attempt loop is this one place ([`InPlace::deliver`]): a gate that
//! wants to hold an attempt back (a rate, a breaker) waits where it says
//! "before an attempt". A message handed back mid-retry keeps its count
//! and its next attempt time in the [`Memo`], for when it comes back.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures_util::FutureExt;
use lapin::Acker;
use lapin::message::Delivery;
use lapin::types::ShortString;
use sluice_shared::envelope::unix_millis;
use sluice_shared::id_digest;
use sluice_shared::message::{DeadReason, MessageHeaders, copy_properties};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::broker::Session;
use crate::copy_headers::{self, LastFailure};
use crate::delivery_error::DeliveryError;
use crate::dispatch::{Dispatcher, age, delivery_span};
use crate::message::{QueuedMessage, SluiceEvent};
use crate::metrics::Outcome;
use crate::retry::Decision;
use crate::routes::Route;
use crate::settle::Destination;

/// The first wait before a dead copy that was not confirmed is published again.
const DEAD_COPY_FIRST: Duration = Duration::from_secs(1);
/// The longest such wait.
const DEAD_COPY_MAX: Duration = Duration::from_secs(30);
/// Memo entries kept before old ones are dropped (messages another worker took).
const MEMO_SIZE: usize = 10_000;

/// What failed attempts a message had in this worker before it was handed
/// back, by event id and publish (`x-sluice-copy`).
#[derive(Clone, Default)]
pub struct Memo(Arc<Mutex<HashMap<String, Tried>>>);

/// A message's in-place attempts so far.
#[derive(Debug, Clone, Default)]
pub struct Tried {
    /// Attempts that failed in this worker.
    failed: u32,
    first_failure_ms: Option<i64>,
    /// No attempt before this (the wait of the last failure's tier).
    next_at: Option<Instant>,
    kept_at: Option<Instant>,
}

impl Memo {
    fn take(&self, key: &str) -> Tried {
        let mut memo = self.0.lock().unwrap_or_else(|p| p.into_inner());
        memo.remove(key).unwrap_or_default()
    }

    fn keep(&self, key: String, mut tried: Tried) {
        let mut memo = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if memo.len() >= MEMO_SIZE {
            let hour = Duration::from_secs(3600);
            memo.retain(|_, t| t.kept_at.is_some_and(|at| at.elapsed() < hour));
        }
        tried.kept_at = Some(Instant::now());
        memo.insert(key, tried);
    }
}

/// How one message ended here.
enum End {
    /// Acked (delivered, dropped as a second copy, or dead-lettered).
    Settled,
    /// Left unacked for the channel's close to return: handed back, or the
    /// ack failed.
    Left,
}

/// Delivers one message of an ordered route's partition.
pub struct InPlace {
    pub session: Arc<Session>,
    pub dispatcher: Arc<Dispatcher>,
    pub route: String,
    pub memo: Memo,
    /// Cancelled when the partition is handed back or the worker stops: no
    /// new attempt starts then.
    pub hold_end: CancellationToken,
}

impl InPlace {
    /// Delivers the message, retrying in place, until it is settled or the
    /// partition is handed back.
    pub async fn deliver(self, delivery: Delivery) {
        let (acker, message) = crate::dispatch::split(delivery);
        let Some(route) = self.dispatcher.routes().named(&self.route) else {
            return;
        };
        match SluiceEvent::read(&message) {
            Ok(event) => {
                let span = delivery_span(&event);
                span.record("route", route.name.as_str());
                let key = super::key_of(&message);
                let _ = self
                    .attempts(route, &acker, &message, &event)
                    .instrument(span)
                    .instrument(tracing::info_span!(
                        "ordered",
                        order_key_digest = %id_digest::of(key.as_str())
                    ))
                    .await;
            }
            Err(malformed) => {
                tracing::warn!(
                    event_id_digest = message
                        .properties
                        .message_id()
                        .as_ref()
                        .map(|id| tracing::field::display(id_digest::of(id.as_str()))),
                    problem = %malformed,
                    "not a Sluice message; dead-lettering it as malformed"
                );
                let last = LastFailure {
                    error: malformed.to_string(),
                    status: None,
                };
                let dead = Dead {
                    reason: DeadReason::Malformed,
                    attempts: 0,
                    last,
                    first_failure_ms: None,
                };
                let key = message.routing_key.clone();
                let _ = self.dead_letter(route, &acker, &message, key, dead).await;
            }
        }
    }

    /// The attempt loop.
    async fn attempts(
        &self,
        route: &Route,
        acker: &Acker,
        message: &QueuedMessage,
        event: &SluiceEvent,
    ) -> End {
        let metrics = self.dispatcher.metrics();
        let policy = self.dispatcher.policy();
        let memo_key = format!(
            "{}/{}",
            event.id.as_str(),
            event.copy.as_deref().unwrap_or("")
        );
        let mut tried = self.memo.take(&memo_key);
        if tried.failed == 0 && self.dispatcher.second_copy(event).await {
            return self.ack(acker).await;
        }
        loop {
            if let Some(at) = tried.next_at {
                tokio::select! {
                    () = self.hold_end.cancelled() => {}
                    () = tokio::time::sleep_until(at) => {}
                }
            }
            if self.hold_end.is_cancelled() {
                self.memo.keep(memo_key, tried);
                return End::Left;
            }
            // Before an attempt: where a gate on the route would wait.
            let started = std::time::Instant::now();
            let result = self.attempt(route, event, &message.body).await;
            metrics.observe_attempt(&route.name, started.elapsed());
            let failed_before = event.failed_before.saturating_add(tried.failed);
            let Err(error) = result else {
                return self.delivered(route, acker, event, failed_before).await;
            };
            let last = LastFailure::from(&error);
            let now_ms = unix_millis(SystemTime::now());
            let first_failure_ms = Some(tried.first_failure_ms.unwrap_or(now_ms));
            let reason = match policy.decide(failed_before, &error) {
                Decision::Retry { tier } => match policy.tier(tier) {
                    Some(tier) => {
                        tried.failed = tried.failed.saturating_add(1);
                        tried.first_failure_ms = first_failure_ms;
                        tried.next_at = Some(Instant::now() + tier.delay);
                        metrics.record_outcome(&route.name, Outcome::Retried);
                        tracing::warn!(
                            outcome = "retried",
                            error = %last.error,
                            status = last.status,
                            retry_in = %humantime::format_duration(tier.delay),
                            "delivery failed; retrying in place, the key's later events wait"
                        );
                        continue;
                    }
                    None => DeadReason::AttemptsExhausted,
                },
                Decision::Dead { reason } => reason,
            };
            let dead = Dead {
                reason,
                attempts: failed_before.saturating_add(1),
                last,
                first_failure_ms,
            };
            let key = ShortString::try_new(event.subject())
                .unwrap_or_else(|_| message.routing_key.clone());
            let end = self.dead_letter(route, acker, message, key, dead).await;
            if let End::Left = end {
                // Handed back before the dead copy was stored: the next
                // holder makes its last attempt again.
                self.memo.keep(memo_key, tried);
            }
            return end;
        }
    }

    /// One attempt; a panic in it counts as a transient failure.
    async fn attempt(
        &self,
        route: &Route,
        event: &SluiceEvent,
        body: &[u8],
    ) -> Result<(), DeliveryError> {
        let client = self.dispatcher.client();
        let attempt = AssertUnwindSafe(route.deliver(client, event, body)).catch_unwind();
        attempt.await.unwrap_or_else(|_| {
            // The panic's message is not logged: it may quote the payload.
            self.dispatcher.metrics().record_panic();
            tracing::error!("a delivery attempt panicked; it counts as a failed attempt");
            Err(DeliveryError::Transient {
                status: None,
                retry_after: None,
                error: "the delivery attempt panicked".into(),
            })
        })
    }

    async fn delivered(
        &self,
        route: &Route,
        acker: &Acker,
        event: &SluiceEvent,
        failed_before: u32,
    ) -> End {
        let end = self.ack(acker).await;
        if let End::Settled = end {
            let metrics = self.dispatcher.metrics();
            metrics.record_outcome(&route.name, Outcome::Delivered);
            metrics.record_delivered(&route.name, failed_before.saturating_add(1), age(event));
            tracing::info!(outcome = "delivered", "event delivered");
        }
        end
    }

    async fn ack(&self, acker: &Acker) -> End {
        match self.session.settler().ack(acker).await {
            Ok(()) => End::Settled,
            Err(error) => {
                self.dispatcher.metrics().record_settle_failure();
                tracing::warn!(error = %error, "could not ack; RabbitMQ will deliver it again");
                End::Left
            }
        }
    }

    /// Publishes the dead copy until it is confirmed (or the partition is
    /// handed back), then acks: the key moves on.
    async fn dead_letter(
        &self,
        route: &Route,
        acker: &Acker,
        message: &QueuedMessage,
        key: ShortString,
        dead: Dead,
    ) -> End {
        let mut headers = MessageHeaders::of(&message.properties);
        headers.first_failure_ms = dead.first_failure_ms.or(headers.first_failure_ms);
        let original = copy_properties(&message.properties, headers);
        let named = copy_headers::for_route(&original, &route.name);
        let now_ms = unix_millis(SystemTime::now());
        let properties =
            copy_headers::for_dead(&named, dead.reason, dead.attempts, &dead.last, now_ms);
        let settler = self.session.settler();
        let mut wait = DEAD_COPY_FIRST;
        loop {
            let copy = vec![(Destination::Dead(&key), properties.clone())];
            let published = settler.publish_confirmed(&message.body, copy);
            match published.await {
                Ok(()) => break,
                Err(error) => {
                    self.dispatcher.metrics().record_settle_failure();
                    tracing::warn!(error = %error, retry_in = %humantime::format_duration(wait), "the dead copy was not stored; trying again");
                }
            }
            tokio::select! {
                () = self.hold_end.cancelled() => return End::Left,
                () = tokio::time::sleep(wait) => {}
            }
            wait = (wait * 2).min(DEAD_COPY_MAX);
        }
        let end = self.ack(acker).await;
        let metrics = self.dispatcher.metrics();
        metrics.record_outcome(&route.name, Outcome::Dead);
        metrics.record_dead(dead.reason);
        tracing::warn!(
            outcome = "dead",
            reason = dead.reason.as_str(),
            attempts = dead.attempts,
            error = %dead.last.error,
            status = dead.last.status,
            "event dead-lettered; its key's later events go on"
        );
        end
    }
}

/// A dead copy to make.
struct Dead {
    reason: DeadReason,
    attempts: u32,
    last: LastFailure,
    first_failure_ms: Option<i64>,
}
