//! The durable part of a request: deduplicate, publish with confirms, settle
//! the dedup keys. No HTTP here; [`crate::webhook`] calls it.
//!
//! Each event gets one log line once its fate is known (`published`,
//! `duplicate`, `in_flight`) with its id's digest and its type; the
//! request's span adds the source, request id and trace id. Never its id
//! (a `wamid` holds a phone number) and never its data.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use tokio::time::Instant;

use sluice_shared::config::RedisErrorPolicy;
use sluice_shared::envelope::{Envelope, unix_millis};
use sluice_shared::message::{DeadReason, MessageHeaders, SourceName, event_properties};
use tokio::time::timeout_at;

use crate::app::AppState;
use crate::correlation::Correlation;
use crate::dedup::{Claim, DedupError, DedupKey};
use crate::error::{Counts, GatewayError, Unavailable};
use crate::extract::{Event, EventId, EventType};
use crate::publisher::Outgoing;
use crate::signature::VerifiedBody;
use crate::source::Source;
use crate::unconfirmed::{self, HeldKeys, Publish, Waited};

/// What every event of one request shares.
pub struct RequestContext<'a> {
    pub source: &'a Source,
    /// The request id and trace context every message carries.
    pub correlation: &'a Correlation,
    pub received: SystemTime,
    /// Request start plus the ack budget.
    pub deadline: Instant,
}

/// Deduplicates and publishes a request's events; `Ok` only when every new one is confirmed.
pub async fn ingest_events(
    state: &AppState,
    ctx: &RequestContext<'_>,
    events: Vec<Event>,
) -> Result<Counts, GatewayError> {
    let (events, repeated) = first_of_each_id(events);
    let keys: Vec<DedupKey> = events
        .iter()
        .map(|e| state.dedup.key(&ctx.source.name, &e.id))
        .collect();
    let (claims, keys_held) = claim_or_bypass(state, ctx, &keys).await?;
    let mut plan = Plan::sort(state, ctx, events, keys, claims, keys_held);
    plan.counts.duplicates += repeated;
    publish(state, ctx, plan.messages, &plan.held).await?;
    for (id, event_type) in &plan.published {
        tracing::info!(
            event_id_digest = %id.log_digest(),
            "type" = %event_type.as_str(),
            outcome = "published",
            "event published"
        );
        let source = ctx.source.name.as_str();
        state
            .metrics
            .count_published_type(source, event_type.as_str());
    }
    mark_done(state, ctx, &plan.held).await;
    count_outcomes(state, ctx, &plan.counts);
    if plan.counts.in_flight > 0 {
        return Err(GatewayError::InFlight(plan.counts));
    }
    Ok(plan.counts)
}

/// What a request's claims decided: the messages to publish, the keys this
/// request holds for them, and the counts of its answer.
struct Plan {
    messages: Vec<Outgoing>,
    /// Id and type of each message, for the lines and metrics after the confirm.
    published: Vec<(EventId, EventType)>,
    held: Vec<DedupKey>,
    counts: Counts,
}

impl Plan {
    fn sort(
        state: &AppState,
        ctx: &RequestContext<'_>,
        events: Vec<Event>,
        keys: Vec<DedupKey>,
        claims: Vec<Claim>,
        keys_held: bool,
    ) -> Self {
        let mut plan = Self {
            messages: Vec::new(),
            published: Vec::new(),
            held: Vec::new(),
            counts: Counts::default(),
        };
        let exchange = state.publisher.topology().events_exchange();
        let source = ctx.source.name.as_str();
        for ((event, key), claim) in events.into_iter().zip(keys).zip(claims) {
            match claim {
                Claim::New => {
                    plan.published
                        .push((event.id.clone(), event.event_type.clone()));
                    plan.messages.push(event_message(
                        exchange.clone(),
                        source,
                        ctx.correlation.clone(),
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
}

/// Turns the published events' keys `done`, within the deadline.
async fn mark_done(state: &AppState, ctx: &RequestContext<'_>, held: &[DedupKey]) {
    if held.is_empty() {
        return;
    }
    let window = ctx.source.dedup_ttl;
    // The events are durable either way; a key left `pending` expires and at
    // worst lets a late provider retry through as a duplicate delivery
    // (at-least-once).
    match timeout_at(ctx.deadline, state.dedup.mark_done(held, window)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "could not mark events done in Redis"),
        Err(_) => tracing::warn!("could not mark events done in Redis within the ack budget"),
    }
}

fn count_outcomes(state: &AppState, ctx: &RequestContext<'_>, counts: &Counts) {
    let name = ctx.source.name.as_str();
    let metrics = &state.metrics;
    metrics.count_events(name, "published", counts.accepted);
    metrics.count_events(name, "duplicate", counts.duplicates);
    metrics.count_events(name, "in_flight", counts.in_flight);
    metrics.count_dedup_hits(name, counts.duplicates);
}

/// Keeps an authenticated body that cannot be parsed: published, confirmed, to the dead queue.
pub async fn dead_letter_unparseable(
    state: &AppState,
    ctx: &RequestContext<'_>,
    id: EventId,
    body: &VerifiedBody,
) -> Result<Counts, GatewayError> {
    let source = ctx.source.name.as_str();
    let event_type = EventType::unparseable();
    let envelope = Envelope::raw(
        source,
        id.as_str(),
        event_type.as_str(),
        ctx.received,
        body.bytes(),
    );
    let routing_key = format!("{source}.{event_type}");
    let now = unix_millis(SystemTime::now());
    let headers = MessageHeaders {
        reason: Some(DeadReason::Unparseable),
        attempts: Some(0),
        first_failure_ms: Some(now),
        last_failure_ms: Some(now),
        ..event_headers(&ctx.source.name, ctx.correlation, ctx.received, event_type)
    };
    let message = Outgoing {
        exchange: state.publisher.topology().dead_exchange().into(),
        routing_key: routing_key.into(),
        body: envelope.to_bytes(),
        properties: event_properties(&id, ctx.received, headers),
    };
    publish(state, ctx, vec![message], &[]).await?;
    tracing::warn!(
        event_id_digest = %id.log_digest(),
        "type" = "unparseable",
        outcome = "dead_lettered",
        "unparseable body kept in the dead queue"
    );
    state.metrics.count_events(source, "dead_lettered", 1);
    Ok(Counts {
        dead_lettered: 1,
        ..Counts::default()
    })
}

/// Publishes within the deadline. A failure that says RabbitMQ did not
/// store the events frees the keys held for them; one that leaves it
/// unknown (the connection died after the send) leaves them to expire; a
/// publish still unconfirmed at the deadline goes on in the background and
/// settles them later ([`crate::unconfirmed`]).
async fn publish(
    state: &AppState,
    ctx: &RequestContext<'_>,
    messages: Vec<Outgoing>,
    held: &[DedupKey],
) -> Result<(), GatewayError> {
    if messages.is_empty() {
        return Ok(());
    }
    let publish = Publish::start(&state.publisher, messages);
    match publish.wait_until(ctx.deadline).await {
        Waited::Confirmed => Ok(()),
        Waited::Failed(e) if e.outcome_unknown() => {
            // RabbitMQ may hold the events: their keys stay `pending` until
            // they expire, and a copy published after that is dropped by the
            // worker (`x-sluice-copy`), never delivered twice.
            tracing::warn!(error = %e, "publish outcome unknown; its keys stay pending until redis.pending_ttl");
            Err(Unavailable::Publish(e).into())
        }
        Waited::Failed(e) => {
            if !held.is_empty() {
                // Off the answer's path: the keys expire anyway.
                let dedup = state.dedup.clone();
                let keys = held.to_vec();
                tokio::spawn(async move { unconfirmed::release(&dedup, &keys).await });
            }
            Err(Unavailable::Publish(e).into())
        }
        Waited::Pending(publish) => {
            let keys = HeldKeys {
                dedup: state.dedup.clone(),
                keys: held.to_vec(),
                window: ctx.source.dedup_ttl,
            };
            let metrics = state.metrics.clone();
            tokio::spawn(unconfirmed::await_late_outcome(publish, keys, metrics));
            Err(Unavailable::Budget(state.config.ack_budget).into())
        }
        Waited::Lost(panicked) => {
            tracing::error!(error = %panicked, "a publish task panicked; its keys expire by themselves");
            Err(Unavailable::Budget(state.config.ack_budget).into())
        }
    }
}

/// Claims the keys, or applies `on_redis_error`. The flag says whether keys are held.
async fn claim_or_bypass(
    state: &AppState,
    ctx: &RequestContext<'_>,
    keys: &[DedupKey],
) -> Result<(Vec<Claim>, bool), GatewayError> {
    let error = match timeout_at(ctx.deadline, state.dedup.claim(keys)).await {
        Ok(Ok(claims)) => return Ok((claims, true)),
        Ok(Err(e)) => e,
        Err(_) => return Err(Unavailable::Budget(state.config.ack_budget).into()),
    };
    match state.config.on_redis_error {
        RedisErrorPolicy::Reject => Err(Unavailable::Redis(error).into()),
        RedisErrorPolicy::Publish => {
            warn_redis_bypass(&state.redis_warned_at, &error);
            let source = ctx.source.name.as_str();
            let n = u64::try_from(keys.len()).unwrap_or(u64::MAX);
            state
                .metrics
                .dedup_bypass
                .with_label_values(&[source])
                .inc_by(n);
            Ok((vec![Claim::New; keys.len()], false))
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

/// The message the gateway publishes for one event: the CloudEvents envelope,
/// routing key `<source>.<type>`, persistent, headers for the worker. Public
/// so the load generator's floor mode publishes exactly what the gateway does
/// (it may pass a bare request id: its trace is then derived from it).
pub fn event_message(
    exchange: String,
    source: &str,
    correlation: impl Into<Correlation>,
    received: SystemTime,
    event: Event,
) -> Outgoing {
    let id = event.id.as_str();
    // The data's pieces are spliced in: a context shared by the request's
    // events was serialised once, and is only copied into each body here.
    let body = Envelope::json_bytes(
        source,
        id,
        event.event_type.as_str(),
        received,
        event.data.pieces(),
    );
    let routing_key = format!("{source}.{}", event.event_type);
    let headers = MessageHeaders {
        attempt: Some(0),
        ..event_headers(
            &SourceName::as_published(source),
            &correlation.into(),
            received,
            event.event_type,
        )
    };
    Outgoing {
        exchange: exchange.into(),
        routing_key: routing_key.into(),
        body,
        properties: event_properties(&event.id, received, headers),
    }
}

/// The headers every message of a request's events carries.
fn event_headers(
    source: &SourceName,
    correlation: &Correlation,
    received: SystemTime,
    event_type: EventType,
) -> MessageHeaders {
    MessageHeaders {
        source: Some(source.clone()),
        event_type: Some(event_type),
        request_id: Some(correlation.request_id.clone()),
        copy: Some(correlation.copy.clone()),
        trace: Some(correlation.trace),
        received_at_ms: Some(unix_millis(received)),
        ..MessageHeaders::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str) -> Event {
        Event {
            id: EventId::from_provider(id),
            event_type: EventType::unknown(),
            data: crate::extract::EventData::from_value(&serde_json::Value::Null),
        }
    }

    #[test]
    fn repeats_inside_one_request_count_as_duplicates() {
        let (unique, repeated) = first_of_each_id(vec![event("a"), event("b"), event("a")]);
        assert_eq!(repeated, 1);
        let ids: Vec<_> = unique.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
    }
}
