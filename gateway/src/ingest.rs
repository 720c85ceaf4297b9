//! The ingest core: an [`Ingestor`] deduplicates a request's events in
//! Redis, publishes them with confirms and marks their dedup keys done (or frees them), and
//! answers with counts or an [`IngestError`]. No HTTP here: [`crate::webhook`]
//! calls it and [`crate::error`] turns its errors into answers; the load
//! generator's floor calls it too.
//!
//! Each event gets one log line once its fate is known (`published`,
//! `duplicate`, `in_flight`) with its id's digest and its type; the
//! request's span adds the source, request id and trace id. Never its id
//! (a `wamid` holds a phone number) and never its data.

mod brokers;
mod message;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use sluice_shared::config::{GatewayConfig, RedisErrorPolicy};
use sluice_shared::topology::Topology;
use tokio::time::Instant;

use crate::correlation::Correlation;
use crate::dedup::{Claim, DedupError, DedupKey, DedupStore};
use crate::extract::{Event, EventData, EventId, EventType};
use crate::metrics::GatewayMetrics;
use crate::ordered::{OrderedCopy, OrderedRoutes};
use crate::publisher::{ConfirmedPublisher, Outgoing, PublishError};
use crate::signature::VerifiedBody;
use crate::source::Source;

pub use message::event_message;

/// What the gateway's config decides for the core.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// `gateway.on_redis_error`: publish without dedup, or refuse.
    pub on_redis_error: RedisErrorPolicy,
    /// `gateway.ack_budget`, named when a request runs out of it.
    pub ack_budget: Duration,
    /// `gateway.retry_after`: when to try again after events could not be
    /// made durable.
    pub retry_after: Duration,
}

impl Policy {
    pub fn from_config(gateway: &GatewayConfig) -> Self {
        Self {
            on_redis_error: gateway.on_redis_error,
            ack_budget: gateway.ack_budget,
            retry_after: gateway.retry_after,
        }
    }
}

/// Deduplicates and publishes; cheap to clone.
#[derive(Clone)]
pub struct Ingestor {
    dedup: DedupStore,
    publisher: ConfirmedPublisher,
    metrics: GatewayMetrics,
    policy: Policy,
    /// The ordered routes, whose partition copies the gateway publishes.
    ordered: Arc<OrderedRoutes>,
    /// When the last "Redis down, dedup bypassed" warning was logged (ms).
    redis_warned_at: Arc<AtomicU64>,
}

/// What every event of one request shares.
pub struct RequestContext<'a> {
    pub source: &'a Source,
    /// The request id and trace context every message carries.
    pub correlation: &'a Correlation,
    pub received: SystemTime,
    /// Request start plus the ack budget.
    pub deadline: Instant,
}

/// Why a request's events were not all made durable.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// Another request is publishing some of these events right now; the
    /// others were published. Retry in a second: the retry finds it decided.
    #[error("{} event(s) are being published by another request", .0.in_flight)]
    InFlight(Counts),
    /// Not durable within the budget; retry after `retry_after`.
    #[error("not accepted: {cause}")]
    Unavailable {
        cause: Unavailable,
        retry_after: Duration,
    },
}

/// Why events could not be made durable.
#[derive(Debug, thiserror::Error)]
pub enum Unavailable {
    #[error("publish failed: {0}")]
    Publish(#[from] PublishError),
    #[error("the ack budget of {0:?} ran out")]
    Budget(Duration),
    #[error("deduplication unavailable and on_redis_error = reject: {0}")]
    Redis(#[from] DedupError),
}

/// What happened to a request's events.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub accepted: usize,
    pub duplicates: usize,
    #[serde(skip_serializing_if = "is_zero")]
    pub in_flight: usize,
    #[serde(skip_serializing_if = "is_zero")]
    pub dead_lettered: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl Counts {
    /// The metric outcome of a request whose events are all accounted for.
    pub fn outcome(&self) -> &'static str {
        if self.dead_lettered > 0 {
            "dead_lettered"
        } else if self.accepted == 0 && self.duplicates > 0 {
            "duplicate"
        } else {
            "accepted"
        }
    }
}

impl Ingestor {
    pub fn new(
        dedup: DedupStore,
        publisher: ConfirmedPublisher,
        metrics: GatewayMetrics,
        policy: Policy,
    ) -> Self {
        Self {
            dedup,
            publisher,
            metrics,
            policy,
            ordered: Arc::default(),
            redis_warned_at: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The ingestor publishing a partition copy of each event an ordered
    /// route among `ordered` takes ([`crate::ordered`]).
    pub fn with_ordered_routes(mut self, ordered: OrderedRoutes) -> Self {
        for route in ordered.names() {
            self.metrics.register_ordered_route(route);
        }
        self.ordered = Arc::new(ordered);
        self
    }

    /// The dedup store (for the readiness check and the Redis probe).
    pub fn dedup(&self) -> &DedupStore {
        &self.dedup
    }

    /// The publisher (for the readiness check, the rerouter and the stop).
    pub fn publisher(&self) -> &ConfirmedPublisher {
        &self.publisher
    }

    /// Deduplicates and publishes a request's events; `Ok` only when every new one is confirmed.
    pub async fn ingest(
        &self,
        ctx: &RequestContext<'_>,
        events: Vec<Event>,
    ) -> Result<Counts, IngestError> {
        let (events, repeated) = first_of_each_id(events);
        let keys: Vec<DedupKey> = events
            .iter()
            .map(|e| self.dedup.key(&ctx.source.name, &e.id))
            .collect();
        let (claims, keys_held) = self.claim_or_bypass(ctx, &keys).await?;
        let topology = self.publisher.topology();
        let exchange = topology.events_exchange();
        let keep_data = self.ordered.is_active();
        let mut plan = Plan::sort(exchange, ctx, events, keys, claims, keys_held, keep_data);
        plan.counts.duplicates += repeated;
        let ordered = plan.order(&self.ordered, topology);
        let mut messages = std::mem::take(&mut plan.messages);
        let mut copied = Vec::with_capacity(ordered.len());
        for OrderedCopy {
            message,
            route,
            key,
        } in ordered
        {
            messages.push(message);
            copied.push((route, key));
        }
        self.publish(ctx, messages, &plan.held).await?;
        for (route, key) in &copied {
            self.metrics.count_ordered_copy(route, key);
        }
        for (id, event_type) in &plan.published {
            tracing::info!(
                event_id_digest = %id.log_digest(),
                "type" = %event_type.as_str(),
                outcome = "published",
                "event published"
            );
            let source = ctx.source.name.as_str();
            self.metrics
                .count_published_type(source, event_type.as_str());
        }
        self.mark_done(ctx, &plan.held).await;
        self.count_outcomes(ctx, &plan.counts);
        if plan.counts.in_flight > 0 {
            return Err(IngestError::InFlight(plan.counts));
        }
        Ok(plan.counts)
    }

    /// Keeps an authenticated body that cannot be parsed: published, confirmed, to the dead queue.
    pub async fn dead_letter_unparseable(
        &self,
        ctx: &RequestContext<'_>,
        id: EventId,
        body: &VerifiedBody,
    ) -> Result<Counts, IngestError> {
        let source = ctx.source.name.as_str();
        let exchange = self.publisher.topology().dead_exchange();
        let message = message::unparseable_message(
            exchange,
            &ctx.source.name,
            ctx.correlation,
            ctx.received,
            &id,
            body,
        );
        self.publish(ctx, vec![message], &[]).await?;
        tracing::warn!(
            event_id_digest = %id.log_digest(),
            "type" = "unparseable",
            outcome = "dead_lettered",
            "unparseable body kept in the dead queue"
        );
        self.metrics.count_events(source, "dead_lettered", 1);
        Ok(Counts {
            dead_lettered: 1,
            ..Counts::default()
        })
    }

    fn count_outcomes(&self, ctx: &RequestContext<'_>, counts: &Counts) {
        let name = ctx.source.name.as_str();
        let metrics = &self.metrics;
        metrics.count_events(name, "published", counts.accepted);
        metrics.count_events(name, "duplicate", counts.duplicates);
        metrics.count_events(name, "in_flight", counts.in_flight);
        metrics.count_dedup_hits(name, counts.duplicates);
    }

    fn unavailable(&self, cause: Unavailable) -> IngestError {
        IngestError::Unavailable {
            cause,
            retry_after: self.policy.retry_after,
        }
    }

    fn out_of_budget(&self) -> IngestError {
        self.unavailable(Unavailable::Budget(self.policy.ack_budget))
    }
}

/// What a request's claims decided: the messages to publish, the keys this
/// request holds for them, and the counts of its answer.
struct Plan {
    messages: Vec<Outgoing>,
    /// Id and type of each message, for the lines and metrics after the confirm.
    published: Vec<(EventId, EventType)>,
    /// Each message's event id and data, kept for its partition copies when
    /// an ordered route may take it.
    data: Vec<Option<EventData>>,
    held: Vec<DedupKey>,
    counts: Counts,
}

impl Plan {
    fn sort(
        exchange: String,
        ctx: &RequestContext<'_>,
        events: Vec<Event>,
        keys: Vec<DedupKey>,
        claims: Vec<Claim>,
        keys_held: bool,
        keep_data: bool,
    ) -> Self {
        let mut plan = Self {
            messages: Vec::new(),
            published: Vec::new(),
            data: Vec::new(),
            held: Vec::new(),
            counts: Counts::default(),
        };
        for ((event, key), claim) in events.into_iter().zip(keys).zip(claims) {
            match claim {
                Claim::New => {
                    plan.published
                        .push((event.id.clone(), event.event_type.clone()));
                    plan.data.push(keep_data.then(|| event.data.clone()));
                    plan.messages.push(event_message(
                        exchange.clone(),
                        &ctx.source.name,
                        ctx.correlation,
                        ctx.received,
                        event,
                    ));
                    if keys_held {
                        plan.held.push(key);
                    }
                }
                Claim::Duplicate => {
                    log_unpublished(&event, "duplicate");
                    plan.counts.duplicates += 1;
                }
                Claim::InFlight => {
                    log_unpublished(&event, "in_flight");
                    plan.counts.in_flight += 1;
                }
            }
        }
        plan.counts.accepted = plan.messages.len();
        plan
    }

    /// The partition copies of the plan's messages, in the plan's order
    /// (the order of the request), for the ordered routes that take them.
    fn order(&mut self, ordered: &OrderedRoutes, topology: &Topology) -> Vec<OrderedCopy> {
        let data = std::mem::take(&mut self.data);
        let events = self.published.iter().zip(&self.messages).zip(data);
        let mut copies = Vec::new();
        for (((id, _), message), data) in events {
            if let Some(data) = data {
                copies.extend(ordered.copies(topology, id, &data, message));
            }
        }
        copies
    }
}

/// The one line about an event that is not published; its data never appears.
fn log_unpublished(event: &Event, outcome: &str) {
    tracing::info!(
        event_id_digest = %event.id.log_digest(),
        "type" = %event.event_type.as_str(),
        outcome,
        "event not published"
    );
}

/// Keeps the first event of each id; returns how many repeats were dropped.
fn first_of_each_id(events: Vec<Event>) -> (Vec<Event>, usize) {
    let total = events.len();
    let mut seen = HashSet::with_capacity(total);
    let unique: Vec<Event> = events
        .into_iter()
        .filter(|e| seen.insert(e.id.clone()))
        .collect();
    let repeated = total - unique.len();
    (unique, repeated)
}

#[cfg(test)]
mod tests;
