//! The per-route series of the limits and the breaker: the breaker's state
//! and how often it opened, the events held back while it was open, and the
//! waits for a token of the route's rate. Registered in the worker's
//! registry by [`crate::metrics::WorkerMetrics`], labelled by route name only.
//! A route's backlog is `sluice_worker_queue_depth{queue="route.<name>"}`
//! ([`crate::queue_depth`]).

use std::time::Duration;

use prometheus::{CounterVec, IntCounterVec, IntGaugeVec, Opts, Registry};

use crate::breaker::BreakerState;

#[derive(Clone)]
pub struct RouteMetrics {
    breaker_state: IntGaugeVec,
    breaker_opens: IntCounterVec,
    held: IntCounterVec,
    rate_waits: IntCounterVec,
    rate_wait_seconds: CounterVec,
}

impl RouteMetrics {
    /// Registers the series, zeroed for each route.
    pub fn register<'a>(
        registry: &Registry,
        routes: impl Iterator<Item = &'a str>,
    ) -> Result<Self, prometheus::Error> {
        let by_route = |name: &str, help: &str| Opts::new(name, help);
        let breaker_state = IntGaugeVec::new(
            by_route(
                "sluice_worker_route_breaker_state",
                "The route's circuit breaker in this worker: 0 closed, 1 half-open (probing), \
                 2 open (its events wait in its queue).",
            ),
            &["route"],
        )?;
        let breaker_opens = IntCounterVec::new(
            by_route(
                "sluice_worker_route_breaker_opened_total",
                "Times the route's circuit breaker opened after unhealthy failures in a row.",
            ),
            &["route"],
        )?;
        let held = IntCounterVec::new(
            by_route(
                "sluice_worker_route_held_total",
                "Events put back in the route's queue, their attempt not counted, because the \
                 route's circuit breaker was open (or a probe failed).",
            ),
            &["route"],
        )?;
        let rate_waits = IntCounterVec::new(
            by_route(
                "sluice_worker_route_rate_limited_total",
                "Delivery attempts that waited for the route's rate limit.",
            ),
            &["route"],
        )?;
        let rate_wait_seconds = CounterVec::new(
            by_route(
                "sluice_worker_route_rate_limit_wait_seconds_total",
                "Time delivery attempts spent waiting for the route's rate limit.",
            ),
            &["route"],
        )?;
        registry.register(Box::new(breaker_state.clone()))?;
        registry.register(Box::new(breaker_opens.clone()))?;
        registry.register(Box::new(held.clone()))?;
        registry.register(Box::new(rate_waits.clone()))?;
        registry.register(Box::new(rate_wait_seconds.clone()))?;
        for route in routes {
            breaker_state.with_label_values(&[route]);
            breaker_opens.with_label_values(&[route]);
            held.with_label_values(&[route]);
            rate_waits.with_label_values(&[route]);
            rate_wait_seconds.with_label_values(&[route]);
        }
        Ok(Self {
            breaker_state,
            breaker_opens,
            held,
            rate_waits,
            rate_wait_seconds,
        })
    }

    pub fn set_breaker_state(&self, route: &str, state: BreakerState) {
        self.breaker_state
            .with_label_values(&[route])
            .set(state.gauge());
    }

    pub fn record_breaker_open(&self, route: &str) {
        self.breaker_opens.with_label_values(&[route]).inc();
    }

    pub fn record_held(&self, route: &str) {
        self.held.with_label_values(&[route]).inc();
    }

    pub fn record_rate_wait(&self, route: &str, waited: Duration) {
        self.rate_waits.with_label_values(&[route]).inc();
        self.rate_wait_seconds
            .with_label_values(&[route])
            .inc_by(waited.as_secs_f64());
    }
}
