//! The gateway's Prometheus metrics, on a registry of its own (one per
//! gateway, so tests can run several in one process).
//!
//! Labels are bounded: `source` is a configured source name (or `unknown`),
//! `outcome` and `operation` are fixed words listed here, and `type` is an
//! event type capped per source (see [`type_label`]). Never an id.
//! Every series of a configured source is created at zero on start, so
//! `rate()` and alerts see it before the first request.

mod type_label;

use std::time::Duration;

use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry};
use sluice_shared::ordering::KeySource;

pub use type_label::{MAX_TYPES_PER_SOURCE, OTHER, TypeLabels};

/// Buckets from 0.5 ms to 5 s: fine enough to see 1 ms and the 1.5 s budget.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 5.0,
];

/// Buckets for Redis calls: 0.1 ms up to the default 250 ms timeout and past it.
const REDIS_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

/// Every `outcome` of `sluice_gateway_requests_total` for a configured source.
pub const REQUEST_OUTCOMES: &[&str] = &[
    "accepted",
    "duplicate",
    "dead_lettered",
    "challenge",
    "handshake",
    "invalid_signature",
    "forbidden",
    "method_not_allowed",
    "bad_request",
    "too_large",
    "too_many_events",
    "fan_out_too_large",
    "timeout",
    "in_flight",
    "unavailable",
    "overloaded",
    "headers_too_large",
    "rate_limited",
];

/// Every `outcome` of `sluice_gateway_events_total`.
pub const EVENT_OUTCOMES: &[&str] = &["published", "duplicate", "in_flight", "dead_lettered"];

/// Every `reason` of `sluice_gateway_connections_closed_total`.
pub const CLOSE_REASONS: &[&str] = &["header_timeout", "idle_timeout", "tls_handshake"];

/// Every `reason` of `sluice_gateway_shed_total`.
pub const SHED_REASONS: &[&str] = &["connections", "requests", "body_memory"];

/// Every `operation` of `sluice_gateway_redis_duration_seconds`.
pub const REDIS_OPERATIONS: &[&str] = &["claim", "mark_done", "release", "keep_pending", "ping"];

/// Every `outcome` of `sluice_gateway_late_confirms_total`.
pub const LATE_OUTCOMES: &[&str] = &["confirmed", "failed", "unknown"];

/// The `source` label of a request to a source that is not configured.
pub const UNKNOWN_SOURCE: &str = "unknown";

#[derive(Clone)]
pub struct GatewayMetrics {
    pub registry: Registry,
    /// Requests by source and outcome ([`REQUEST_OUTCOMES`], `unknown_source`).
    pub requests: IntCounterVec,
    /// Events by source and outcome ([`EVENT_OUTCOMES`]).
    pub events: IntCounterVec,
    /// Events published, by source and (capped) type.
    events_published: IntCounterVec,
    types: std::sync::Arc<TypeLabels>,
    /// Request start to answer, by source.
    pub ack_seconds: HistogramVec,
    /// Publish of a request's messages to the last confirm.
    pub confirm_seconds: Histogram,
    /// Events found already published (Redis says `done`, or repeated in one request).
    pub dedup_hits: IntCounterVec,
    /// Events accepted without deduplication because Redis failed.
    pub dedup_bypass: IntCounterVec,
    /// One Redis round trip, by operation.
    pub redis_seconds: HistogramVec,
    /// 1 while the last Redis call (or the periodic ping) succeeded.
    pub redis_up: IntGauge,
    pub in_flight: IntGauge,
    /// 1 while the AMQP connection is up.
    pub broker_connected: IntGauge,
    /// 1 while RabbitMQ blocks the connection's publishes (a resource alarm).
    pub broker_blocked: IntGauge,
    /// Connections open on the public port.
    pub connections_open: IntGauge,
    /// Connections the gateway closed, by reason ([`CLOSE_REASONS`]).
    connections_closed: IntCounterVec,
    /// Connections or requests refused by a cap, by reason ([`SHED_REASONS`]).
    pub shed: IntCounterVec,
    /// Failed accepts (out of file descriptors, mostly).
    pub accept_errors: prometheus::IntCounter,
    /// TLS certificate reloads by outcome (`ok`, `error`).
    pub tls_reloads: IntCounterVec,
    /// Publishes whose request was answered 503 before RabbitMQ confirmed
    /// them, still awaiting the confirm in the background.
    pub unconfirmed: IntGauge,
    /// How those publishes ended ([`LATE_OUTCOMES`]).
    pub late_confirms: IntCounterVec,
    /// Redis connections replaced, by reason (`timeouts`, `read_only`).
    redis_reconnects: IntCounterVec,
    /// 1 while messages find no queue (see `publisher::ROUTING_SETTLE`).
    pub routing_broken: IntGauge,
    /// Messages taken from the unroutable queue, by outcome ([`REROUTE_OUTCOMES`]).
    pub rerouted: IntCounterVec,
    /// Partition copies published for ordered routes, by route and key source.
    ordered_copies: IntCounterVec,
}

/// How a message taken from the unroutable queue ended: put back where it
/// belongs, or left there for another try.
pub const REROUTE_OUTCOMES: [&str; 2] = ["put_back", "left"];

/// Where an ordered route's key came from (`key` of `sluice_gateway_ordered_copies_total`).
pub const KEY_SOURCES: [&str; 2] = ["data", "event_id"];

impl GatewayMetrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let vec = IntCounterVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(vec.clone()))?;
            Ok::<_, prometheus::Error>(vec)
        };
        let gauge = |name: &str, help: &str| {
            let gauge = IntGauge::new(name, help)?;
            registry.register(Box::new(gauge.clone()))?;
            Ok::<_, prometheus::Error>(gauge)
        };
        let requests = counter(
            "sluice_gateway_requests_total",
            "Webhook requests by source and outcome.",
            &["source", "outcome"],
        )?;
        let events = counter(
            "sluice_gateway_events_total",
            "Events by source and outcome.",
            &["source", "outcome"],
        )?;
        let events_published = counter(
            "sluice_gateway_events_published_total",
            &format!(
                "Events published (confirmed by RabbitMQ), by source and event type; \
                 at most {MAX_TYPES_PER_SOURCE} types per source, then `{OTHER}`."
            ),
            &["source", "type"],
        )?;
        let dedup_hits = counter(
            "sluice_gateway_dedup_hits_total",
            "Events suppressed as duplicates, by source.",
            &["source"],
        )?;
        let dedup_bypass = counter(
            "sluice_gateway_dedup_bypass_total",
            "Events accepted without deduplication because Redis failed.",
            &["source"],
        )?;
        let ack_seconds = HistogramVec::new(
            HistogramOpts::new(
                "sluice_gateway_ack_duration_seconds",
                "Request start to answer, by source.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["source"],
        )?;
        let confirm_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "sluice_gateway_publish_confirm_duration_seconds",
                "First publish to last confirm of a request.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )?;
        let redis_seconds = HistogramVec::new(
            HistogramOpts::new(
                "sluice_gateway_redis_duration_seconds",
                "One Redis round trip (a pipeline), by operation.",
            )
            .buckets(REDIS_BUCKETS.to_vec()),
            &["operation"],
        )?;
        registry.register(Box::new(ack_seconds.clone()))?;
        registry.register(Box::new(confirm_seconds.clone()))?;
        registry.register(Box::new(redis_seconds.clone()))?;
        let redis_up = gauge(
            "sluice_gateway_redis_up",
            "1 while Redis answers the gateway's calls, else 0.",
        )?;
        let in_flight = gauge(
            "sluice_gateway_in_flight_requests",
            "Requests being handled.",
        )?;
        let broker_connected = gauge(
            "sluice_gateway_broker_connected",
            "1 while connected to RabbitMQ (topology declared), else 0.",
        )?;
        let broker_blocked = gauge(
            "sluice_gateway_broker_blocked",
            "1 while RabbitMQ blocks publishing on the gateway's connection (a memory or disk \
             alarm): webhooks are answered 503 at once, else 0.",
        )?;
        let connections_open = gauge(
            "sluice_gateway_open_connections",
            "Connections open on the public port.",
        )?;
        let connections_closed = counter(
            "sluice_gateway_connections_closed_total",
            "Connections the gateway closed: a request head not sent within \
             header_read_timeout, an idle connection past idle_timeout, a failed TLS handshake.",
            &["reason"],
        )?;
        let shed = counter(
            "sluice_gateway_shed_total",
            "Connections and requests answered 503 at once because a cap was reached \
             (max_connections, max_requests_in_flight, max_body_memory).",
            &["reason"],
        )?;
        let accept_errors = prometheus::IntCounter::new(
            "sluice_gateway_accept_errors_total",
            "Failed accepts on the public port (out of file descriptors, mostly).",
        )?;
        registry.register(Box::new(accept_errors.clone()))?;
        let tls_reloads = counter(
            "sluice_gateway_tls_reloads_total",
            "TLS certificate reloads by outcome (ok, error: the old certificate stays).",
            &["outcome"],
        )?;
        let routing_broken = gauge(
            "sluice_gateway_routing_broken",
            "1 while messages find no queue (they reach the unroutable queue or come back): \
             a binding or queue was deleted; the gateway re-declares the topology.",
        )?;
        let rerouted = counter(
            "sluice_gateway_rerouted_total",
            "Messages taken from the unroutable queue, by outcome (put_back: published where \
             they belong and confirmed; left: requeued for another try).",
            &["outcome"],
        )?;
        for outcome in REROUTE_OUTCOMES {
            rerouted.with_label_values(&[outcome]);
        }
        let ordered_copies = counter(
            "sluice_gateway_ordered_copies_total",
            "Events published to an ordered route's partition queue, by route and by where \
             their key came from (data: the route's ordered_by; event_id: the data had none, \
             so the event is ordered against nothing).",
            &["route", "key"],
        )?;
        let unconfirmed = gauge(
            "sluice_gateway_unconfirmed_publishes",
            "Publishes answered 503 at the ack budget whose confirm is still awaited \
             (their dedup keys stay pending meanwhile).",
        )?;
        let late_confirms = counter(
            "sluice_gateway_late_confirms_total",
            "Publishes answered 503 at the ack budget, by how they ended later: confirmed \
             (keys marked done: the retry is a duplicate) or failed (keys released).",
            &["outcome"],
        )?;
        let redis_reconnects = counter(
            "sluice_gateway_redis_reconnects_total",
            "Redis connections replaced by a new one: after redis.reconnect_after_timeouts \
             calls in a row timed out (timeouts), or on a READONLY answer (read_only).",
            &["reason"],
        )?;
        for reason in crate::redis_link::Replaced::LABELS {
            redis_reconnects.with_label_values(&[reason]);
        }
        for outcome in LATE_OUTCOMES {
            late_confirms.with_label_values(&[outcome]);
        }
        for reason in CLOSE_REASONS {
            connections_closed.with_label_values(&[reason]);
        }
        for reason in SHED_REASONS {
            shed.with_label_values(&[reason]);
        }
        for outcome in ["ok", "error"] {
            tls_reloads.with_label_values(&[outcome]);
        }
        sluice_shared::admin::register_build_info(&registry, "gateway")?;
        for operation in REDIS_OPERATIONS {
            redis_seconds.with_label_values(&[operation]);
        }
        requests.with_label_values(&[UNKNOWN_SOURCE, "unknown_source"]);
        Ok(Self {
            registry,
            requests,
            events,
            events_published,
            types: Default::default(),
            ack_seconds,
            confirm_seconds,
            dedup_hits,
            dedup_bypass,
            redis_seconds,
            redis_up,
            in_flight,
            broker_connected,
            broker_blocked,
            connections_open,
            connections_closed,
            shed,
            accept_errors,
            tls_reloads,
            unconfirmed,
            late_confirms,
            redis_reconnects,
            routing_broken,
            rerouted,
            ordered_copies,
        })
    }

    /// Creates every series of these sources at zero.
    pub fn register_sources<'a>(&self, sources: impl IntoIterator<Item = &'a str>) {
        for source in sources {
            for outcome in REQUEST_OUTCOMES {
                self.requests.with_label_values(&[source, outcome]);
            }
            for outcome in EVENT_OUTCOMES {
                self.events.with_label_values(&[source, outcome]);
            }
            self.ack_seconds.with_label_values(&[source]);
            self.dedup_hits.with_label_values(&[source]);
            self.dedup_bypass.with_label_values(&[source]);
        }
    }

    /// One connection closed by the gateway, for `reason` ([`CLOSE_REASONS`]).
    pub fn closed(&self, reason: &str) {
        self.connections_closed.with_label_values(&[reason]).inc();
    }

    pub fn observe_confirm(&self, elapsed: Duration) {
        self.confirm_seconds.observe(elapsed.as_secs_f64());
    }

    pub fn count_events(&self, source: &str, outcome: &str, n: usize) {
        if n > 0 {
            self.events
                .with_label_values(&[source, outcome])
                .inc_by(count(n));
        }
    }

    /// One published event of `source` and `event_type` (capped per source).
    pub fn count_published_type(&self, source: &str, event_type: &str) {
        let label = self.types.label(source, event_type);
        self.events_published
            .with_label_values(&[source, label])
            .inc();
    }

    /// Makes an ordered route's series exist at zero.
    pub fn register_ordered_route(&self, route: &str) {
        for key in KEY_SOURCES {
            self.ordered_copies.with_label_values(&[route, key]);
        }
    }

    /// One partition copy of `route`, confirmed.
    pub fn count_ordered_copy(&self, route: &str, key: &KeySource) {
        let key = match key {
            KeySource::Data => KEY_SOURCES[0],
            KeySource::EventId => KEY_SOURCES[1],
        };
        self.ordered_copies.with_label_values(&[route, key]).inc();
    }

    pub fn count_dedup_hits(&self, source: &str, n: usize) {
        if n > 0 {
            self.dedup_hits
                .with_label_values(&[source])
                .inc_by(count(n));
        }
    }

    /// One Redis connection replaced, for `reason`.
    pub fn count_redis_reconnect(&self, reason: &str) {
        self.redis_reconnects.with_label_values(&[reason]).inc();
    }

    /// One Redis call: its time, and whether Redis is up.
    pub fn observe_redis(&self, operation: &str, elapsed: Duration, ok: bool) {
        self.redis_seconds
            .with_label_values(&[operation])
            .observe(elapsed.as_secs_f64());
        self.redis_up.set(i64::from(ok));
    }
}

fn count(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests;
