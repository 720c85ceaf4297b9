//! One message, from a queue to its outcome.
//!
//! The work queue's messages are routed ([`router`]): each goes, one copy
//! per matching route, into the routes' own queues, and is never attempted
//! there. A route queue's message is delivered ([`Dispatcher::deliver`]):
//! ask the route's gate (rate limit, breaker) → one attempt → the gate's
//! word (settle, or hold the event back in its queue while the breaker is
//! open) → decide (done, retry tier, dead) → settle. Every step that can go
//! wrong ends in a decision about the message, never in a panic: a message
//! that is not a Sluice message is dead-lettered as `malformed`, one without
//! a route as `no_route`. Each event is handled in a span carrying its id's
//! digest (never the id: a `wamid` holds a phone number), source, type,
//! route, attempt, request id and trace id, so every log line about it can be
//! found by `sluice-worker id-digest <id>` and tied to the gateway's lines
//! for the same request.

mod router;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use lapin::Acker;
use lapin::message::Delivery;
use lapin::types::ShortString;
use reqwest::Client;
use sluice_shared::envelope::unix_millis;
use sluice_shared::id_digest;
use sluice_shared::topology::{RetryTier, Topology};
use tokio::sync::Semaphore;
use tracing::{Instrument, Span};

use crate::copies::CopyCheck;
use crate::copy_headers::{self, LastFailure};
use crate::delivery_error::DeliveryError;
use crate::message::{Malformed, QueuedMessage, SluiceEvent};
use crate::metrics::{NO_ROUTE, Outcome, WorkerMetrics};
use crate::retry::{DeadReason, Decision, RetryPolicy};
use crate::route_gate::{Admission, AfterAttempt, RouteGate};
use crate::routes::RouteTable;
use crate::settle::{Destination, SettleError, Settler, requeue_delay};

/// Which kind of attempt a route's consumer asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptKind {
    /// A delivery while the route's breaker is closed.
    Ordinary,
    /// The one delivery that tests a route whose breaker is half-open.
    Probe,
}

/// What happens to a message once its attempt (if any) is over.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    Delivered,
    Retry {
        tier: RetryTier,
        attempts: u32,
        last: LastFailure,
    },
    Dead {
        reason: DeadReason,
        attempts: u32,
        last: LastFailure,
    },
}

/// Everything a delivery task needs, shared by all of them.
pub struct Dispatcher {
    routes: RouteTable,
    client: Client,
    policy: RetryPolicy,
    metrics: WorkerMetrics,
    copies: Option<CopyCheck>,
    /// Names the route queues.
    topology: Topology,
    /// The gates of the routes with a queue, for the router's direct attempts.
    gates: Vec<Arc<RouteGate>>,
    /// Bounds the router's tasks busy with a direct attempt, so that slow
    /// routes can take at most half of them and the rest keep routing.
    direct: Arc<Semaphore>,
}

impl Dispatcher {
    pub fn new(
        routes: RouteTable,
        client: Client,
        policy: RetryPolicy,
        metrics: WorkerMetrics,
        copies: Option<CopyCheck>,
        topology: Topology,
    ) -> Self {
        Self {
            routes,
            client,
            policy,
            metrics,
            copies,
            topology,
            gates: Vec::new(),
            direct: Arc::new(Semaphore::new(0)),
        }
    }

    /// Lets the router attempt an event only one route takes straight from
    /// the work queue, through that route's gate and in one of its slots,
    /// when the gate takes direct attempts ([`RouteGate::takes_direct_attempts`]);
    /// at most `limit` at a time, counting those waiting for a slot (the
    /// router runs twice as many tasks, so as many are left to routing).
    /// Without this, every event goes through its routes' queues.
    pub fn with_direct_attempts(self, gates: &[Arc<RouteGate>], limit: usize) -> Self {
        Self {
            gates: gates.to_vec(),
            direct: Arc::new(Semaphore::new(limit)),
            ..self
        }
    }

    pub fn metrics(&self) -> &WorkerMetrics {
        &self.metrics
    }

    pub fn routes(&self) -> &RouteTable {
        &self.routes
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    /// Delivers one message of `gate`'s route queue to the end: gate,
    /// attempt, settle (or hold); errors are logged and counted here.
    pub async fn deliver(
        &self,
        settler: &Settler,
        gate: &RouteGate,
        delivery: Delivery,
        kind: AttemptKind,
    ) {
        let (acker, message) = split(delivery);
        match SluiceEvent::read(&message) {
            Ok(event) => {
                let span = delivery_span(&event);
                span.record("route", gate.route());
                self.attempt(settler, &acker, &message, &event, gate, kind)
                    .instrument(span)
                    .await;
            }
            Err(malformed) => {
                self.dead_letter_malformed(settler, &acker, &message, &malformed)
                    .await;
            }
        }
    }

    async fn attempt(
        &self,
        settler: &Settler,
        acker: &Acker,
        message: &QueuedMessage,
        event: &SluiceEvent,
        gate: &RouteGate,
        kind: AttemptKind,
    ) {
        let name = gate.route();
        let Some(route) = self.routes.named(name) else {
            // The lanes are built from this table: cannot happen.
            let error = format!("route `{name}` has a queue but no config");
            return self.no_route(settler, acker, message, event, error).await;
        };
        let admission = match kind {
            AttemptKind::Ordinary => gate.before_attempt().await,
            AttemptKind::Probe => {
                gate.before_probe().await;
                Admission::Attempt
            }
        };
        if admission == Admission::Hold {
            return self.hold(settler, acker, message, name).await;
        }
        let started = Instant::now();
        let result = route.deliver(&self.client, event, &message.body).await;
        self.metrics.observe_attempt(name, started.elapsed());
        let after = match kind {
            AttemptKind::Ordinary => gate.after_attempt(&result),
            AttemptKind::Probe => gate.after_probe(&result),
        };
        if after == AfterAttempt::Hold {
            return self.hold(settler, acker, message, name).await;
        }
        let verdict = self.verdict(event, result);
        self.settle(settler, acker, message, Some(event), name, verdict)
            .await;
    }

    /// Puts a route queue's message back at the tail of its queue, as it
    /// was: no attempt counted, and RabbitMQ's delivery count starts again
    /// (a nack would raise it, and enough opens of the breaker would then
    /// dead-letter an event that was never attempted).
    pub async fn hold(
        &self,
        settler: &Settler,
        acker: &Acker,
        message: &QueuedMessage,
        route: &str,
    ) {
        let properties = copy_headers::for_route(&message.properties, route);
        let queue = self.topology.route_queue(route);
        let wait = requeue_delay(&message.properties);
        let destination = Destination::Queue(&queue);
        match settler
            .move_to(acker, destination, &message.body, properties, wait)
            .await
        {
            Ok(()) => {
                self.metrics.record_held(route);
                tracing::debug!(
                    outcome = "held",
                    "the route's circuit breaker is open: the event waits in its queue"
                );
            }
            Err(error) => {
                self.metrics.record_settle_failure();
                tracing::warn!(
                    error = %error,
                    outcome = "held",
                    "could not put the event back in its route's queue; RabbitMQ will deliver it again"
                );
            }
        }
    }

    /// [`Dispatcher::hold`] for a delivery taken but not handed to a task
    /// (the consumer was cancelled when the breaker opened).
    pub async fn hold_delivery(&self, settler: &Settler, route: &str, delivery: Delivery) {
        let (acker, message) = split(delivery);
        self.hold(settler, &acker, &message, route).await;
    }

    /// Dead-letters an event no configured route takes, as `no_route`.
    async fn no_route(
        &self,
        settler: &Settler,
        acker: &Acker,
        message: &QueuedMessage,
        event: &SluiceEvent,
        error: String,
    ) {
        let verdict = Verdict::Dead {
            reason: DeadReason::NoRoute,
            attempts: event.failed_before,
            last: LastFailure {
                error,
                status: None,
            },
        };
        self.settle(settler, acker, message, Some(event), NO_ROUTE, verdict)
            .await;
    }

    async fn dead_letter_malformed(
        &self,
        settler: &Settler,
        acker: &Acker,
        message: &QueuedMessage,
        malformed: &Malformed,
    ) {
        let message_id = message
            .properties
            .message_id()
            .as_ref()
            .map(ShortString::as_str);
        tracing::warn!(
            event_id_digest = message_id.map(|id| tracing::field::display(id_digest::of(id))),
            routing_key = %message.routing_key,
            problem = %malformed,
            "not a Sluice message; dead-lettering it as malformed"
        );
        let verdict = Verdict::Dead {
            reason: DeadReason::Malformed,
            attempts: 0,
            last: LastFailure {
                error: malformed.to_string(),
                status: None,
            },
        };
        self.settle(settler, acker, message, None, NO_ROUTE, verdict)
            .await;
    }

    /// Turns an attempt's result into a verdict through the retry policy.
    fn verdict(&self, event: &SluiceEvent, result: Result<(), DeliveryError>) -> Verdict {
        let Err(error) = result else {
            return Verdict::Delivered;
        };
        let attempts = event.failed_before.saturating_add(1);
        let last = LastFailure::from(&error);
        let reason = match self.policy.decide(event.failed_before, &error) {
            Decision::Retry { tier } => match self.policy.tier(tier) {
                Some(tier) => {
                    return Verdict::Retry {
                        tier: tier.clone(),
                        attempts,
                        last,
                    };
                }
                None => DeadReason::AttemptsExhausted,
            },
            Decision::Dead { reason } => reason,
        };
        Verdict::Dead {
            reason,
            attempts,
            last,
        }
    }

    /// Carries out a verdict, then counts and logs what happened.
    async fn settle(
        &self,
        settler: &Settler,
        acker: &Acker,
        message: &QueuedMessage,
        event: Option<&SluiceEvent>,
        route: &str,
        verdict: Verdict,
    ) {
        // A route's retry and dead copies name it, so they come back to it
        // alone and `dlq --route` finds them; `none` is no route.
        let route_name = (route != NO_ROUTE).then_some(route);
        let (outcome, settled) =
            carry_out(settler, acker, message, event, route_name, &verdict).await;
        match settled {
            Ok(()) => {
                self.metrics.record_outcome(route, outcome);
                match (&verdict, event) {
                    (Verdict::Delivered, Some(event)) => self.metrics.record_delivered(
                        route,
                        event.failed_before.saturating_add(1),
                        age(event),
                    ),
                    (Verdict::Dead { reason, .. }, _) => self.metrics.record_dead(*reason),
                    _ => {}
                }
                log_outcome(&verdict);
            }
            Err(error) => {
                self.metrics.record_settle_failure();
                tracing::warn!(
                    error = %error,
                    outcome = outcome.as_str(),
                    "could not settle the message; RabbitMQ will deliver it again"
                );
            }
        }
    }
}

/// Acks, or moves a copy to a retry tier or the dead exchange then acks.
async fn carry_out(
    settler: &Settler,
    acker: &Acker,
    message: &QueuedMessage,
    event: Option<&SluiceEvent>,
    route: Option<&str>,
    verdict: &Verdict,
) -> (Outcome, Result<(), SettleError>) {
    let now_ms = unix_millis(SystemTime::now());
    let named = route
        .filter(|_| !matches!(verdict, Verdict::Delivered))
        .map(|route| copy_headers::for_route(&message.properties, route));
    let original = named.as_ref().unwrap_or(&message.properties);
    match verdict {
        Verdict::Delivered => (Outcome::Delivered, settler.ack(acker).await),
        Verdict::Retry {
            tier,
            attempts,
            last,
        } => {
            let properties = copy_headers::for_retry(original, *attempts, last, now_ms);
            let destination = Destination::Queue(&tier.queue);
            let wait = requeue_delay(&message.properties);
            let moved = settler.move_to(acker, destination, &message.body, properties, wait);
            (Outcome::Retried, moved.await)
        }
        Verdict::Dead {
            reason,
            attempts,
            last,
        } => {
            let properties = copy_headers::for_dead(original, *reason, *attempts, last, now_ms);
            let key = dead_routing_key(message, event);
            let wait = requeue_delay(&message.properties);
            let destination = Destination::Dead(&key);
            let moved = settler.move_to(acker, destination, &message.body, properties, wait);
            (Outcome::Dead, moved.await)
        }
    }
}

/// The acknowledgement handle and the message of a delivery.
pub(crate) fn split(delivery: Delivery) -> (Acker, QueuedMessage) {
    let Delivery {
        acker,
        routing_key,
        properties,
        data,
        ..
    } = delivery;
    let message = QueuedMessage {
        routing_key,
        properties,
        body: data,
    };
    (acker, message)
}

/// `<source>.<type>` (the original routing key of a message that came back
/// from a retry tier is the work queue's name), else the original key.
fn dead_routing_key(message: &QueuedMessage, event: Option<&SluiceEvent>) -> ShortString {
    event
        .and_then(|event| ShortString::try_new(event.subject()).ok())
        .unwrap_or_else(|| message.routing_key.clone())
}

/// Time since the gateway received the event, when the message says.
pub(crate) fn age(event: &SluiceEvent) -> Option<Duration> {
    let received = event.received_at_ms?;
    let now = unix_millis(SystemTime::now());
    u64::try_from(now.checked_sub(received)?)
        .ok()
        .map(Duration::from_millis)
}

pub(crate) fn delivery_span(event: &SluiceEvent) -> Span {
    tracing::info_span!(
        "delivery",
        event_id_digest = %event.id.log_digest(),
        source = %event.source,
        "type" = %event.event_type,
        route = tracing::field::Empty,
        attempt = event.failed_before.saturating_add(1),
        request_id = event.request_id.as_deref(),
        trace_id = %event.trace_context().trace_id(),
    )
}

fn log_outcome(verdict: &Verdict) {
    match verdict {
        Verdict::Delivered => tracing::info!(outcome = "delivered", "event delivered"),
        Verdict::Retry { tier, last, .. } => tracing::warn!(
            outcome = "retried",
            error = %last.error,
            status = last.status,
            retry_in = %humantime::format_duration(tier.delay),
            "delivery failed; the event will be retried"
        ),
        Verdict::Dead {
            reason,
            attempts,
            last,
        } => tracing::warn!(
            outcome = "dead",
            reason = reason.as_str(),
            attempts,
            error = %last.error,
            status = last.status,
            "event dead-lettered"
        ),
    }
}

#[cfg(test)]
mod tests;
