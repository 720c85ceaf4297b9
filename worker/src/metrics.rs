//! What the worker reports on `/metrics`, in its own registry.
//!
//! One [`Registry`] per worker, never the global one, so that several
//! workers in one test process each count their own. Labels are bounded:
//! a route name (from the config, or `none` when no route applies) and an
//! outcome; never an event id.

use std::time::Duration;

use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};

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

/// The worker's metrics.
#[derive(Clone)]
pub struct WorkerMetrics {
    registry: Registry,
    deliveries: IntCounterVec,
    duration: HistogramVec,
    in_flight: IntGauge,
    broker_connected: IntGauge,
    settle_failures: IntCounter,
}

impl WorkerMetrics {
    /// Registers every metric, with zeroed series for each route and outcome
    /// so dashboards and alerts see them before the first event.
    pub fn new<'a>(routes: impl Iterator<Item = &'a str>) -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let deliveries = IntCounterVec::new(
            Opts::new(
                "sluice_worker_deliveries_total",
                "Events that left the work queue, by route and outcome (delivered, retried, dead).",
            ),
            &["route", "outcome"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "sluice_worker_delivery_duration_seconds",
                "Time one delivery attempt took, by route.",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            &["route"],
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
        registry.register(Box::new(deliveries.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(in_flight.clone()))?;
        registry.register(Box::new(broker_connected.clone()))?;
        registry.register(Box::new(settle_failures.clone()))?;
        for route in routes.chain([NO_ROUTE]) {
            for outcome in Outcome::ALL {
                deliveries.with_label_values(&[route, outcome.as_str()]);
            }
        }
        Ok(Self {
            registry,
            deliveries,
            duration,
            in_flight,
            broker_connected,
            settle_failures,
        })
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

    pub fn observe_attempt(&self, route: &str, took: Duration) {
        self.duration
            .with_label_values(&[route])
            .observe(took.as_secs_f64());
    }

    pub fn record_settle_failure(&self) {
        self.settle_failures.inc();
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
