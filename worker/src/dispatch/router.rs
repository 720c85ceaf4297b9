//! The router: the work queue's consumer. It puts each event in the queue
//! of every route that takes it, so that a slow or failing route's backlog
//! waits in RabbitMQ, in its own queue, while the other routes' events
//! flow. One exception saves that move (a confirmed publish, a consume and
//! an ack) for most events: an event only one route takes is attempted
//! right here, from the work queue, in one of the route's slots (its
//! `concurrency`, shared with the route queue's consumer, first come first
//! served), when the route has no `rate`, its breaker is closed
//! ([`RouteGate::takes_direct_attempts`]) and a share of the router's
//! direct attempts is free. It is then settled like a route queue's
//! message: acked once delivered, its retry and dead copies naming the
//! route, and put in the route's queue if the breaker is open by the time
//! it has a slot, or opens on it. The router runs a task per message it
//! holds (`worker.prefetch`), and direct attempts (waiting for a slot
//! included) hold at most half of them: once those are taken, by a slow
//! route say, events go through their routes' queues and the other routes'
//! events keep flowing.
//!
//! A message without `x-sluice-route` (a new event from the gateway, or one
//! queued before route queues existed) is checked for a second copy
//! ([`crate::copies`]) and matched against the routes
//! ([`RouteTable::matching`]); one naming a route (a retry back from its
//! tier, a replay) goes to that route alone. One copy per route, naming it,
//! goes to `{prefix}.route.<name>` in one confirmed group
//! ([`Settler::move_all`]); the original is acked once every copy is
//! confirmed, and requeued (after [`requeue_delay`]) if any is not. No
//! match, or a route the config no longer has: dead as `no_route`.
//!
//! Ordered routes are left out: the gateway feeds their partition queues
//! itself ([`crate::ordered`]), so an event only ordered routes take is
//! acked here, and a message naming an ordered route (a replay) is moved to
//! its key's partition.

use std::sync::Arc;

use lapin::Acker;
use lapin::message::Delivery;
use sluice_shared::message::headers;
use tokio::sync::OwnedSemaphorePermit;
use tracing::Instrument;

use super::{AttemptKind, Dispatcher, split};
use crate::copies::Verdict as Copy;
use crate::copy_headers;
use crate::message::{QueuedMessage, SluiceEvent};
use crate::route_gate::RouteGate;
use crate::routes::Route;
use crate::settle::{Destination, Settler, requeue_delay};

/// Held through a direct attempt: one of the router's direct share, one of the route's slots.
type DirectPermits = (OwnedSemaphorePermit, OwnedSemaphorePermit);

impl Dispatcher {
    /// Routes one work-queue message to the end; errors are logged and counted here.
    pub async fn route(&self, settler: &Settler, delivery: Delivery) {
        let (acker, message) = split(delivery);
        match SluiceEvent::read(&message) {
            Ok(event) => {
                let span = super::delivery_span(&event);
                self.route_event(settler, &acker, &message, &event)
                    .instrument(span)
                    .await;
            }
            Err(malformed) => {
                self.dead_letter_malformed(settler, &acker, &message, &malformed)
                    .await;
            }
        }
    }

    async fn route_event(
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
        let routes = match &event.route {
            Some(name) => match self.routes.named(name) {
                Some(route) if route.ordered.is_some() => {
                    return self.to_partition(settler, acker, message, route).await;
                }
                Some(route) => vec![route],
                None => {
                    let error = format!(
                        "the message is for route `{name}` (its {} header), which the config \
                         does not have; restore the route, then replay it",
                        headers::ROUTE
                    );
                    return self.no_route(settler, acker, message, event, error).await;
                }
            },
            None => self.routes.matching(&event.subject()),
        };
        // The gateway published the event to its ordered routes' partitions.
        let (ordered, routes): (Vec<&Route>, Vec<&Route>) = routes
            .into_iter()
            .partition(|route| route.ordered.is_some());
        if routes.is_empty() && !ordered.is_empty() {
            return self.ack_fed(settler, acker).await;
        }
        if routes.is_empty() {
            let error = format!("no route matches {}", event.subject());
            return self.no_route(settler, acker, message, event, error).await;
        }
        if let [route] = routes.as_slice()
            && let Some((gate, permits)) = self.admit_direct(route).await
        {
            tracing::Span::current().record("route", route.name.as_str());
            self.metrics.record_direct_attempt(&route.name);
            let _permits = permits;
            // The gate is asked again: the breaker may have opened while
            // this waited for a slot (the event then goes to the route's queue).
            let kind = AttemptKind::Ordinary;
            return self
                .attempt(settler, acker, message, event, &gate, kind)
                .await;
        }
        let new_event = event.route.is_none();
        self.to_route_queues(settler, acker, message, &routes, new_event)
            .await;
    }

    /// The gate of `route` and the permits of a direct attempt: one of the
    /// router's direct share, if one is free now, then one of the route's
    /// slots, waited for in turn with the route's consumer.
    async fn admit_direct(&self, route: &Route) -> Option<(Arc<RouteGate>, DirectPermits)> {
        let gate = self.gates.iter().find(|gate| gate.route() == route.name)?;
        if !gate.takes_direct_attempts() {
            return None;
        }
        let share = Arc::clone(&self.direct).try_acquire_owned().ok()?;
        let slot = gate.slots().acquire_owned().await.ok()?;
        Some((Arc::clone(gate), (share, slot)))
    }

    /// Puts one copy per route, each naming its route, in the routes'
    /// queues, and acks the original once every copy is confirmed: from then
    /// on each route's copy has its own attempts, retry tiers and dead
    /// record. `new_event`: the copies count in `route_copies_total` (a
    /// retry or replay coming back to its route is not counted again).
    async fn to_route_queues(
        &self,
        settler: &Settler,
        acker: &Acker,
        message: &QueuedMessage,
        routes: &[&Route],
        new_event: bool,
    ) {
        let queues: Vec<String> = routes
            .iter()
            .map(|route| self.topology.route_queue(&route.name))
            .collect();
        let copies = routes
            .iter()
            .zip(&queues)
            .map(|(route, queue)| {
                let properties = copy_headers::for_route(&message.properties, &route.name);
                (Destination::Queue(queue), properties)
            })
            .collect();
        let wait = requeue_delay(&message.properties);
        match settler.move_all(acker, &message.body, copies, wait).await {
            Ok(()) => {
                if new_event {
                    for route in routes {
                        self.metrics.record_route_copy(&route.name);
                    }
                }
                tracing::debug!(
                    outcome = "routed",
                    routes = routes.len(),
                    "event put in each matching route's queue"
                );
            }
            Err(error) => {
                self.metrics.record_settle_failure();
                tracing::warn!(
                    error = %error,
                    outcome = "routed",
                    "could not put the event in its routes' queues; RabbitMQ will deliver it again"
                );
            }
        }
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
        let destination = Destination::Queue(&queue);
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
}
