//! One message, from the work queue to its outcome.
//!
//! read the event → find its routes → one delivery attempt → decide (done,
//! retry tier, dead) → settle. An event that several routes take is not
//! attempted: one copy per route, each naming its route
//! (`x-sluice-route`), goes back to the work queue, and the original is
//! acked once all are confirmed; a message naming a route is delivered to
//! that route only. Every step that can go wrong ends in a
//! decision about the message, never in a panic: a message that is not a
//! Sluice message is dead-lettered as `malformed`, one without a route as
//! `no_route`. Each event is handled in a span carrying its id's digest
//! (never the id: a `wamid` holds a phone number), source, type, route,
//! attempt, request id and trace id, so every log line about it can be found
//! by `sluice-worker id-digest <id>` and tied to the gateway's lines for the
//! same request.

use std::time::{Duration, Instant, SystemTime};

use lapin::Acker;
use lapin::message::Delivery;
use lapin::types::ShortString;
use reqwest::Client;
use sluice_shared::envelope::unix_millis;
use sluice_shared::id_digest;
use sluice_shared::message::headers;
use sluice_shared::topology::RetryTier;
use tracing::{Instrument, Span};

use crate::copies::{CopyCheck, Verdict as Copy};
use crate::copy_headers::{self, LastFailure};
use crate::delivery_error::DeliveryError;
use crate::message::{Malformed, QueuedMessage, SluiceEvent};
use crate::metrics::{NO_ROUTE, Outcome, WorkerMetrics};
use crate::retry::{DeadReason, Decision, RetryPolicy};
use crate::routes::{Route, RouteTable};
use crate::settle::{Destination, SettleError, Settler, requeue_delay};

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
}

impl Dispatcher {
    pub fn new(
        routes: RouteTable,
        client: Client,
        policy: RetryPolicy,
        metrics: WorkerMetrics,
        copies: Option<CopyCheck>,
    ) -> Self {
        Self {
            routes,
            client,
            policy,
            metrics,
            copies,
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

    /// Handles one delivery to the end; errors are logged and counted here.
    pub async fn handle(&self, settler: &Settler, delivery: Delivery) {
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
        match SluiceEvent::read(&message) {
            Ok(event) => {
                let span = delivery_span(&event);
                self.handle_event(settler, &acker, &message, &event)
                    .instrument(span)
                    .await;
            }
            Err(malformed) => {
                self.dead_letter_malformed(settler, &acker, &message, &malformed)
                    .await;
            }
        }
    }

    async fn handle_event(
        &self,
        settler: &Settler,
        acker: &Acker,
        message: &QueuedMessage,
        event: &SluiceEvent,
    ) {
        // A route's copy was made after its original passed the check.
        if event.route.is_none() && self.second_copy(event).await {
            if let Err(e) = settler.ack(acker).await {
                tracing::warn!(error = %e, "could not drop a second copy; RabbitMQ redelivers it");
            }
            return;
        }
        let subject = event.subject();
        let route = match &event.route {
            Some(name) => match self.routes.named(name) {
                Some(route) if route.ordered.is_some() => {
                    return self.to_partition(settler, acker, message, route).await;
                }
                Some(route) => route,
                None => {
                    let error = format!(
                        "the message is for route `{name}` (its {} header), which the config \
                         does not have; restore the route, then replay it",
                        headers::ROUTE
                    );
                    return self.no_route(settler, acker, message, event, error).await;
                }
            },
            None => {
                let matching = self.routes.matching(&subject);
                let fed_by_gateway = matching.iter().filter(|r| r.ordered.is_some()).count();
                let unordered: Vec<&Route> = matching
                    .into_iter()
                    .filter(|route| route.ordered.is_none())
                    .collect();
                match unordered.as_slice() {
                    // The gateway published the event to its ordered routes' partitions.
                    [] if fed_by_gateway > 0 => return self.ack_fed(settler, acker).await,
                    [] => {
                        let error = format!("no route matches {subject}");
                        return self.no_route(settler, acker, message, event, error).await;
                    }
                    [route] => *route,
                    several => {
                        return self.fan_out(settler, acker, message, several).await;
                    }
                }
            }
        };
        Span::current().record("route", route.name.as_str());
        let started = Instant::now();
        let result = route.deliver(&self.client, event, &message.body).await;
        self.metrics.observe_attempt(&route.name, started.elapsed());
        let verdict = self.verdict(event, result);
        self.settle(settler, acker, message, Some(event), &route.name, verdict)
            .await;
    }

    /// Acks an event only ordered routes take: the gateway published it to
    /// their partition queues too, and their consumers deliver it.
    async fn ack_fed(&self, settler: &Settler, acker: &Acker) {
        match settler.ack(acker).await {
            Ok(()) => tracing::debug!(
                outcome = "ordered_only",
                "event left to its ordered routes' partitions"
            ),
            Err(e) => tracing::warn!(error = %e, "could not ack; RabbitMQ redelivers it"),
        }
    }

    /// Moves a message naming an ordered route (a replayed dead event) to
    /// the route's partition its key digest picks, behind the events
    /// queued there already; acks it once that copy is confirmed.
    async fn to_partition(
        &self,
        settler: &Settler,
        acker: &Acker,
        message: &QueuedMessage,
        route: &Route,
    ) {
        let queue = crate::ordered::partition_of(settler.topology(), route, message);
        let wait = requeue_delay(&message.properties);
        let properties = copy_headers::for_route(&message.properties, &route.name);
        let destination = Destination::Partition(&queue);
        let moved = settler.move_to(acker, destination, &message.body, properties, wait);
        match moved.await {
            Ok(()) => tracing::info!(
                outcome = "to_partition",
                route = %route.name,
                "event for an ordered route put back in its partition"
            ),
            Err(error) => {
                self.metrics.record_settle_failure();
                tracing::warn!(error = %error, "could not move the event to its partition; RabbitMQ will deliver it again");
            }
        }
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

    /// Puts one copy per route back on the work queue, each naming its
    /// route, and acks the original once every copy is confirmed: from then
    /// on each route's copy has its own attempts, retry tiers and dead record.
    async fn fan_out(
        &self,
        settler: &Settler,
        acker: &Acker,
        message: &QueuedMessage,
        routes: &[&Route],
    ) {
        let copies = routes
            .iter()
            .map(|route| copy_headers::for_route(&message.properties, &route.name))
            .collect();
        let wait = requeue_delay(&message.properties);
        let moved = settler
            .move_all(acker, Destination::WorkQueue, &message.body, copies, wait)
            .await;
        match moved {
            Ok(()) => {
                for route in routes {
                    self.metrics.record_route_copy(&route.name);
                }
                tracing::info!(
                    outcome = "fanned_out",
                    routes = routes.len(),
                    "event copied to each matching route"
                );
            }
            Err(error) => {
                self.metrics.record_settle_failure();
                tracing::warn!(
                    error = %error,
                    outcome = "fanned_out",
                    "could not copy the event to its routes; RabbitMQ will deliver it again"
                );
            }
        }
    }

    /// Whether the message is a second copy of an event another copy of
    /// which is delivered (asked before the first attempt only).
    pub(crate) async fn second_copy(&self, event: &SluiceEvent) -> bool {
        let Some(copy) = event.copy.as_deref().filter(|_| event.failed_before == 0) else {
            return false;
        };
        let Some(copies) = &self.copies else {
            return false;
        };
        match copies.check(event, copy).await {
            Ok(Copy::Deliver) => false,
            Ok(Copy::Duplicate) => {
                self.metrics.record_duplicate_copy();
                tracing::info!(
                    outcome = "duplicate_copy",
                    "a second copy of the event is dropped: another copy is delivered"
                );
                true
            }
            Err(e) => {
                self.metrics.record_copy_check_error();
                tracing::warn!(error = %e, "cannot check the event's copy of record; delivering it");
                false
            }
        }
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
            let destination = Destination::RetryQueue(&tier.queue);
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
