//! The gateway's Prometheus metrics, on a registry of its own (one per
//! gateway, so tests can run several in one process). Labels are bounded:
//! configured source names (or `unknown`) and fixed outcome words, never an id.

use std::time::Duration;

use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry};

/// Buckets from 0.5 ms to 5 s: fine enough to see 1 ms and the 1.5 s budget.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 5.0,
];

#[derive(Clone)]
pub struct GatewayMetrics {
    pub registry: Registry,
    /// Requests by source and outcome (`accepted`, `duplicate`, `invalid_signature`...).
    pub requests: IntCounterVec,
    /// Events by source and outcome (`published`, `duplicate`, `in_flight`, `dead_lettered`).
    pub events: IntCounterVec,
    /// Request start to answer, by source.
    pub ack_seconds: HistogramVec,
    /// Publish of a request's messages to the last confirm.
    pub confirm_seconds: Histogram,
    /// Events accepted without deduplication because Redis failed.
    pub dedup_bypass: IntCounterVec,
    pub in_flight: IntGauge,
    /// 1 while the AMQP connection is up.
    pub broker_connected: IntGauge,
}

impl GatewayMetrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "sluice_gateway_requests_total",
                "Webhook requests by source and outcome.",
            ),
            &["source", "outcome"],
        )?;
        let events = IntCounterVec::new(
            Opts::new(
                "sluice_gateway_events_total",
                "Events by source and outcome.",
            ),
            &["source", "outcome"],
        )?;
        let ack_seconds = HistogramVec::new(
            HistogramOpts::new(
                "sluice_gateway_ack_duration_seconds",
                "Request start to answer.",
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
        let dedup_bypass = IntCounterVec::new(
            Opts::new(
                "sluice_gateway_dedup_bypass_total",
                "Events accepted without deduplication because Redis failed.",
            ),
            &["source"],
        )?;
        let in_flight = IntGauge::new(
            "sluice_gateway_in_flight_requests",
            "Requests being handled.",
        )?;
        let broker_connected = IntGauge::new(
            "sluice_gateway_broker_connected",
            "1 while connected to RabbitMQ.",
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(events.clone()))?;
        registry.register(Box::new(ack_seconds.clone()))?;
        registry.register(Box::new(confirm_seconds.clone()))?;
        registry.register(Box::new(dedup_bypass.clone()))?;
        registry.register(Box::new(in_flight.clone()))?;
        registry.register(Box::new(broker_connected.clone()))?;
        Ok(Self {
            registry,
            requests,
            events,
            ack_seconds,
            confirm_seconds,
            dedup_bypass,
            in_flight,
            broker_connected,
        })
    }

    pub fn observe_confirm(&self, elapsed: Duration) {
        self.confirm_seconds.observe(elapsed.as_secs_f64());
    }

    pub fn count_events(&self, source: &str, outcome: &str, n: usize) {
        if n > 0 {
            self.events
                .with_label_values(&[source, outcome])
                .inc_by(u64::try_from(n).unwrap_or(u64::MAX));
        }
    }
}
