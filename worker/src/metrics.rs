//! What the worker reports on `/metrics`, in its own registry.
//!
//! One [`Registry`] per worker, never the global one, so that several
//! workers in one test process each count their own. Labels are bounded:
//! a route name (from the config, or `none` when no route applies), an
//! outcome, a dead-letter reason; never an event id. Queue depths are
//! reported by [`crate::queue_depth`] into the same registry.

use std::time::Duration;

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

use crate::breaker::BreakerState;
use crate::retry::DeadReason;
use crate::route_metrics::RouteMetrics;

/// The `route` label of an event that has no route (malformed or unrouted).
pub const NO_ROUTE: &str = "none";

/// How one event left the work queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Delivered downstream and acknowledged.
    Delivered,
    /// Parked in a retry tier.
    Retried,
    /// Published to the dead exchange.
    Dead,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Retried => "retried",
            Self::Dead => "dead",
        }
    }

    const ALL: [Self; 3] = [Self::Delivered, Self::Retried, Self::Dead];
}

/// One delivery attempt: 1 ms up to the longest sensible route timeout.
const ATTEMPT_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Received at the gateway to delivered: milliseconds on a good day, up to
/// the last retry tier (about 75 minutes with the default delays) on a bad one.
const END_TO_END_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
    3600.0, 7200.0,
];

/// Attempts it took to deliver an event: 1 is the healthy case.
const ATTEMPT_COUNT_BUCKETS: &[f64] = &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 10.0];

/// The worker's metrics.
#[derive(Clone)]
pub struct WorkerMetrics {
    registry: Registry,
    deliveries: IntCounterVec,
    dead: IntCounterVec,
    duration: HistogramVec,
    end_to_end: HistogramVec,
    attempts: Histogram,
    in_flight: IntGauge,
    broker_connected: IntGauge,
    settle_failures: IntCounter,
    panics: IntCounter,
    /// Second copies of an event dropped before delivery (`crate::copies`).
    duplicate_copies: IntCounter,
    /// Copy checks Redis could not answer (the message was delivered).
    copy_check_errors: IntCounter,
    /// Route copies an event several routes take became, by route.
    route_copies: IntCounterVec,
    /// Events the router attempted straight from the work queue, by route.
    direct_attempts: IntCounterVec,
    dead_lettering_verified: IntGauge,
    /// Ordered routes: messages held behind an earlier event of their key.
    ordered_waiting: IntGaugeVec,
    /// Ordered routes: partitions handed back to the queue at the hold limit.
    ordered_handbacks: IntCounterVec,
    /// Breakers, holds and rate-limit waits, by route.
    routes: RouteMetrics,
}

impl WorkerMetrics {
    /// Registers every metric, with zeroed series for each route and outcome
    /// so dashboards and alerts see them before the first event.
    pub fn new<'a>(
        routes: impl Iterator<Item = &'a str> + Clone,
    ) -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let deliveries = IntCounterVec::new(
            Opts::new(
                "sluice_worker_deliveries_total",
                "Events that left the work queue, by route and outcome (delivered, retried, dead).",
            ),
            &["route", "outcome"],
        )?;
        let dead = IntCounterVec::new(
            Opts::new(
                "sluice_worker_dead_lettered_total",
                "Events the worker published to the dead queue, by reason.",
            ),
            &["reason"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "sluice_worker_delivery_duration_seconds",
                "Time one delivery attempt took, by route.",
            )
            .buckets(ATTEMPT_BUCKETS.to_vec()),
            &["route"],
        )?;
        let end_to_end = HistogramVec::new(
            HistogramOpts::new(
                "sluice_worker_end_to_end_duration_seconds",
                "Received by the gateway to delivered downstream, retries included, by route.",
            )
            .buckets(END_TO_END_BUCKETS.to_vec()),
            &["route"],
        )?;
        let attempts = Histogram::with_opts(
            HistogramOpts::new(
                "sluice_worker_delivery_attempts",
                "Attempts each delivered event took (1 = first try).",
            )
            .buckets(ATTEMPT_COUNT_BUCKETS.to_vec()),
        )?;
        let in_flight = IntGauge::new("sluice_worker_in_flight", "Deliveries being handled now.")?;
        let broker_connected = IntGauge::new(
            "sluice_worker_broker_connected",
            "1 while the worker is connected to RabbitMQ and consuming, else 0.",
        )?;
        let settle_failures = IntCounter::new(
            "sluice_worker_settle_failures_total",
            "Events whose ack, retry or dead-letter publish failed; the broker redelivers them.",
        )?;
        let panics = IntCounter::new(
            "sluice_worker_delivery_panics_total",
            "Delivery tasks that panicked; their messages are requeued after a pause.",
        )?;
        registry.register(Box::new(panics.clone()))?;
        let duplicate_copies = IntCounter::new(
            "sluice_worker_duplicate_copies_total",
            "Messages dropped before delivery because another copy of the same event (published \
             again after its first publish's outcome was lost with a connection) is delivered.",
        )?;
        registry.register(Box::new(duplicate_copies.clone()))?;
        let copy_check_errors = IntCounter::new(
            "sluice_worker_copy_check_errors_total",
            "Copy-of-record checks Redis could not answer; the message was delivered anyway.",
        )?;
        registry.register(Box::new(copy_check_errors.clone()))?;
        let route_copies = IntCounterVec::new(
            Opts::new(
                "sluice_worker_route_copies_total",
                "Copies of events the router put in a route's queue, one per matching route; \
                 each is then counted in deliveries_total. A retry or replay that comes back \
                 naming its route is not counted again.",
            ),
            &["route"],
        )?;
        registry.register(Box::new(route_copies.clone()))?;
        let direct_attempts = IntCounterVec::new(
            Opts::new(
                "sluice_worker_direct_attempts_total",
                "Events only one route takes that the router took on itself, in one of the \
                 route's slots, instead of putting them in the route's queue (no rate, the \
                 breaker closed, a direct share free); each is then counted in \
                 deliveries_total, or held if the breaker opened while it waited for a slot.",
            ),
            &["route"],
        )?;
        registry.register(Box::new(direct_attempts.clone()))?;
        let dead_lettering_verified = IntGauge::new(
            "sluice_worker_dead_lettering_verified",
            "1 when the management API confirmed at start that RabbitMQ dead-letters \
             at-least-once (feature flag stream_queue), 0 when it was not checked.",
        )?;
        registry.register(Box::new(dead_lettering_verified.clone()))?;
        let ordered_waiting = IntGaugeVec::new(
            Opts::new(
                "sluice_worker_ordered_waiting",
                "Messages of an ordered route this worker holds behind an earlier event of \
                 their key (still failing, or being delivered), by route.",
            ),
            &["route"],
        )?;
        registry.register(Box::new(ordered_waiting.clone()))?;
        let ordered_handbacks = IntCounterVec::new(
            Opts::new(
                "sluice_worker_ordered_handbacks_total",
                "Partitions of an ordered route handed back to their queue and taken again \
                 because a message was held for worker.ordered_hold_limit (a stuck key), by route.",
            ),
            &["route"],
        )?;
        registry.register(Box::new(ordered_handbacks.clone()))?;
        registry.register(Box::new(deliveries.clone()))?;
        registry.register(Box::new(dead.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(end_to_end.clone()))?;
        registry.register(Box::new(attempts.clone()))?;
        registry.register(Box::new(in_flight.clone()))?;
        registry.register(Box::new(broker_connected.clone()))?;
        registry.register(Box::new(settle_failures.clone()))?;
        sluice_shared::admin::register_build_info(&registry, "worker")?;
        let route_series = RouteMetrics::register(&registry, routes.clone())?;
        for route in routes.chain([NO_ROUTE]) {
            for outcome in Outcome::ALL {
                deliveries.with_label_values(&[route, outcome.as_str()]);
            }
            if route != NO_ROUTE {
                route_copies.with_label_values(&[route]);
                direct_attempts.with_label_values(&[route]);
                duration.with_label_values(&[route]);
                end_to_end.with_label_values(&[route]);
            }
        }
        for reason in DeadReason::BY_WORKER {
            dead.with_label_values(&[reason.as_str()]);
        }
        Ok(Self {
            registry,
            deliveries,
            dead,
            duration,
            end_to_end,
            attempts,
            in_flight,
            broker_connected,
            settle_failures,
            panics,
            duplicate_copies,
            copy_check_errors,
            route_copies,
            direct_attempts,
            dead_lettering_verified,
            ordered_waiting,
            ordered_handbacks,
            routes: route_series,
        })
    }

    /// Makes an ordered route's own series exist at zero.
    pub fn register_ordered_route(&self, route: &str) {
        self.ordered_waiting.with_label_values(&[route]);
        self.ordered_handbacks.with_label_values(&[route]);
    }

    /// `n` more (or, negative, fewer) messages of `route` wait behind their key.
    pub fn add_ordered_waiting(&self, route: &str, n: i64) {
        self.ordered_waiting.with_label_values(&[route]).add(n);
    }

    pub fn record_ordered_handback(&self, route: &str) {
        self.ordered_handbacks.with_label_values(&[route]).inc();
    }

    /// The registry `/metrics` serves.
    pub fn registry(&self) -> Registry {
        self.registry.clone()
    }

    pub fn record_outcome(&self, route: &str, outcome: Outcome) {
        self.deliveries
            .with_label_values(&[route, outcome.as_str()])
            .inc();
    }

    /// An event delivered after `attempts` attempts, `end_to_end` after the
    /// gateway received it (unknown for a message without the header).
    pub fn record_delivered(&self, route: &str, attempts: u32, end_to_end: Option<Duration>) {
        self.attempts.observe(f64::from(attempts));
        if let Some(took) = end_to_end {
            self.end_to_end
                .with_label_values(&[route])
                .observe(took.as_secs_f64());
        }
    }

    pub fn record_dead(&self, reason: DeadReason) {
        self.dead.with_label_values(&[reason.as_str()]).inc();
    }

    pub fn observe_attempt(&self, route: &str, took: Duration) {
        self.duration
            .with_label_values(&[route])
            .observe(took.as_secs_f64());
    }

    pub fn record_settle_failure(&self) {
        self.settle_failures.inc();
    }

    pub fn record_panic(&self) {
        self.panics.inc();
    }

    pub fn record_duplicate_copy(&self) {
        self.duplicate_copies.inc();
    }

    pub fn record_route_copy(&self, route: &str) {
        self.route_copies.with_label_values(&[route]).inc();
    }

    pub fn record_direct_attempt(&self, route: &str) {
        self.direct_attempts.with_label_values(&[route]).inc();
    }

    pub fn record_copy_check_error(&self) {
        self.copy_check_errors.inc();
    }

    pub fn set_breaker_state(&self, route: &str, state: BreakerState) {
        self.routes.set_breaker_state(route, state);
    }

    pub fn record_breaker_open(&self, route: &str) {
        self.routes.record_breaker_open(route);
    }

    /// An event put back in its route's queue unattempted (breaker open).
    pub fn record_held(&self, route: &str) {
        self.routes.record_held(route);
    }

    pub fn record_rate_wait(&self, route: &str, waited: Duration) {
        self.routes.record_rate_wait(route, waited);
    }

    pub fn set_dead_lettering_verified(&self, verified: bool) {
        self.dead_lettering_verified.set(i64::from(verified));
    }

    pub fn set_broker_connected(&self, connected: bool) {
        self.broker_connected.set(i64::from(connected));
    }

    /// Counts a delivery in flight until the returned guard is dropped
    /// (also when its task is aborted at the end of the shutdown grace).
    pub fn in_flight(&self) -> InFlight {
        self.in_flight.inc();
        InFlight(self.in_flight.clone())
    }
}

/// Decrements `sluice_worker_in_flight` when dropped.
pub struct InFlight(IntGauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::{Encoder, TextEncoder};

    fn render(metrics: &WorkerMetrics) -> String {
        let mut buffer = Vec::new();
        TextEncoder::new()
            .encode(&metrics.registry().gather(), &mut buffer)
            .unwrap();
        String::from_utf8(buffer).unwrap()
    }

    #[test]
    fn every_route_and_outcome_is_reported_from_the_start() {
        let text = render(&WorkerMetrics::new(["crm"].into_iter()).unwrap());
        assert!(text.contains(r#"sluice_worker_deliveries_total{outcome="dead",route="crm"} 0"#));
        assert!(
            text.contains(r#"sluice_worker_deliveries_total{outcome="delivered",route="none"} 0"#)
        );
        assert!(text.contains("sluice_worker_broker_connected 0"));
        assert!(text.contains(r#"sluice_worker_route_copies_total{route="crm"} 0"#));
        assert!(
            !text.contains(r#"sluice_worker_route_copies_total{route="none"}"#),
            "no route makes no route copy"
        );
        assert!(text.contains(r#"sluice_worker_route_breaker_state{route="crm"} 0"#));
        assert!(text.contains(r#"sluice_worker_route_held_total{route="crm"} 0"#));
        assert!(text.contains(r#"sluice_worker_route_rate_limited_total{route="crm"} 0"#));
    }

    #[test]
    fn breaker_states_holds_and_rate_waits_count_per_route() {
        let metrics = WorkerMetrics::new(["crm", "audit"].into_iter()).unwrap();
        metrics.set_breaker_state("crm", BreakerState::Open);
        metrics.set_breaker_state("audit", BreakerState::HalfOpen);
        metrics.record_breaker_open("crm");
        metrics.record_held("crm");
        metrics.record_held("crm");
        metrics.record_rate_wait("audit", Duration::from_millis(250));
        let text = render(&metrics);
        assert!(text.contains(r#"sluice_worker_route_breaker_state{route="crm"} 2"#));
        assert!(text.contains(r#"sluice_worker_route_breaker_state{route="audit"} 1"#));
        assert!(text.contains(r#"sluice_worker_route_breaker_opened_total{route="crm"} 1"#));
        assert!(text.contains(r#"sluice_worker_route_held_total{route="crm"} 2"#));
        assert!(text.contains(r#"sluice_worker_route_rate_limited_total{route="audit"} 1"#));
        assert!(
            text.contains(
                r#"sluice_worker_route_rate_limit_wait_seconds_total{route="audit"} 0.25"#
            )
        );
    }

    #[test]
    fn route_copies_count_per_route() {
        let metrics = WorkerMetrics::new(["crm", "audit"].into_iter()).unwrap();
        metrics.record_route_copy("crm");
        metrics.record_route_copy("crm");
        metrics.record_route_copy("audit");
        let text = render(&metrics);
        assert!(text.contains(r#"sluice_worker_route_copies_total{route="crm"} 2"#));
        assert!(text.contains(r#"sluice_worker_route_copies_total{route="audit"} 1"#));
    }

    #[test]
    fn two_workers_count_apart() {
        let first = WorkerMetrics::new(["crm"].into_iter()).unwrap();
        let second = WorkerMetrics::new(["crm"].into_iter()).unwrap();
        first.record_outcome("crm", Outcome::Delivered);
        assert!(render(&first).contains(r#"outcome="delivered",route="crm"} 1"#));
        assert!(render(&second).contains(r#"outcome="delivered",route="crm"} 0"#));
    }

    #[test]
    fn the_in_flight_guard_gives_its_count_back() {
        let metrics = WorkerMetrics::new(std::iter::empty()).unwrap();
        let guard = metrics.in_flight();
        assert!(render(&metrics).contains("sluice_worker_in_flight 1"));
        drop(guard);
        assert!(render(&metrics).contains("sluice_worker_in_flight 0"));
    }

    #[test]
    fn a_delivered_event_counts_its_attempts_and_its_age() {
        let metrics = WorkerMetrics::new(["crm"].into_iter()).unwrap();
        metrics.record_delivered("crm", 3, Some(Duration::from_millis(1200)));
        metrics.record_dead(DeadReason::Rejected);
        let text = render(&metrics);
        assert!(text.contains(r#"sluice_worker_delivery_attempts_bucket{le="2"} 0"#));
        assert!(text.contains(r#"sluice_worker_delivery_attempts_bucket{le="3"} 1"#));
        assert!(text.contains(
            r#"sluice_worker_end_to_end_duration_seconds_bucket{route="crm",le="2.5"} 1"#
        ));
        assert!(text.contains(r#"sluice_worker_dead_lettered_total{reason="rejected"} 1"#));
        assert!(text.contains(r#"sluice_worker_dead_lettered_total{reason="no_route"} 0"#));
        assert!(text.contains("sluice_worker_build_info{"));
    }

    #[test]
    fn attempt_durations_land_in_millisecond_buckets() {
        let metrics = WorkerMetrics::new(["crm"].into_iter()).unwrap();
        metrics.observe_attempt("crm", Duration::from_millis(3));
        let text = render(&metrics);
        assert!(text.contains(
            r#"sluice_worker_delivery_duration_seconds_bucket{route="crm",le="0.005"} 1"#
        ));
        assert!(text.contains(
            r#"sluice_worker_delivery_duration_seconds_bucket{route="crm",le="0.0025"} 0"#
        ));
    }
}
