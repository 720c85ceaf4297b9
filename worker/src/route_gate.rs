//! What stands between a route's events and its receiver: the route's rate
//! limit (a token bucket, off unless `rate` is set) and its circuit breaker.
//!
//! Whoever attempts a delivery to a route asks [`RouteGate::before_attempt`]
//! (wait for a token; hold the event if the breaker is not closed) and
//! reports the result to [`RouteGate::after_attempt`], which says whether to
//! settle the event as usual or hold it: an unhealthy failure that finds the
//! breaker open (the one that opened it included) is the route's fault, not
//! the event's, so the event goes back to the route's queue with its attempt
//! count untouched. The route's consumer (`route_lane`) watches the state
//! ([`RouteGate::watch`]) to stop consuming while the breaker is open and to
//! send the probe ([`RouteGate::before_probe`], [`RouteGate::after_probe`]).
//!
//! The state is per worker process: each worker judges a route by its own
//! attempts, and while one worker's breaker is open, the others' may still
//! deliver (and theirs open too if the receiver is down for them as well).

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use sluice_shared::config::RouteConfig;
use sluice_shared::envelope::unix_millis;
use sluice_shared::rate_limit::RateLimiter;
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;

use crate::breaker::{Breaker, BreakerState, Health};
use crate::delivery_error::DeliveryError;
use crate::metrics::WorkerMetrics;

/// Whether to attempt a delivery now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Attempt,
    /// The breaker is not closed: put the event back, unattempted.
    Hold,
}

/// What to do with an event after its attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterAttempt {
    /// Delivered, retried or dead as the retry policy says.
    Settle,
    /// Put it back in the route's queue, its attempt not counted.
    Hold,
}

/// The last failure of a route, as `sluice-worker routes` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LastError {
    /// A short class: `HTTP 503`, `timed out after 10s`, `connection
    /// refused`; never a body or a payload.
    pub error: String,
    /// When it happened (ms since the Unix epoch).
    pub at_ms: i64,
}

/// A route's state, as the admin port's `/routes` answers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouteStatus {
    pub route: String,
    pub state: BreakerState,
    /// Unhealthy failures in a row (what opens the breaker).
    pub failures: u32,
    /// While open: how long until the next probe.
    pub next_probe_in_ms: Option<u64>,
    pub last_error: Option<LastError>,
}

/// One route's limiter, breaker and slots.
pub struct RouteGate {
    route: String,
    /// The route's `concurrency`: one permit per attempt in flight, shared
    /// by its queue's consumer and the router's direct attempts.
    slots: Arc<Semaphore>,
    limiter: Option<RateLimiter>,
    breaker: Mutex<Breaker>,
    state: watch::Sender<BreakerState>,
    last_error: Mutex<Option<LastError>>,
    metrics: WorkerMetrics,
}

impl RouteGate {
    pub fn new(config: &RouteConfig, metrics: WorkerMetrics) -> Self {
        metrics.set_breaker_state(&config.name, BreakerState::Closed);
        Self {
            route: config.name.clone(),
            slots: Arc::new(Semaphore::new(usize::from(config.concurrency))),
            limiter: config.rate.as_ref().map(RateLimiter::new),
            breaker: Mutex::new(Breaker::new(config.breaker)),
            state: watch::Sender::new(BreakerState::Closed),
            last_error: Mutex::new(None),
            metrics,
        }
    }

    pub fn route(&self) -> &str {
        &self.route
    }

    pub fn state(&self) -> BreakerState {
        *self.state.borrow()
    }

    /// The route's attempt slots (its `concurrency`), for its queue's consumer.
    pub fn slots(&self) -> Arc<Semaphore> {
        Arc::clone(&self.slots)
    }

    /// Whether the router may attempt this route's events itself
    /// ([`crate::dispatch`]'s router): the route has no `rate` and its
    /// breaker is closed. A rate-limited route's events always go through
    /// its queue: its tokens would go to whoever asked first, and new
    /// events could overtake a backlog for good.
    pub fn takes_direct_attempts(&self) -> bool {
        self.limiter.is_none() && self.state() == BreakerState::Closed
    }

    /// Follows the breaker's state changes.
    pub fn watch(&self) -> watch::Receiver<BreakerState> {
        self.state.subscribe()
    }

    /// Before an ordinary attempt: hold if the breaker is not closed, else
    /// wait for a token, and hold if the breaker opened meanwhile.
    pub async fn before_attempt(&self) -> Admission {
        if self.state() != BreakerState::Closed {
            return Admission::Hold;
        }
        self.take_token().await;
        if self.state() != BreakerState::Closed {
            return Admission::Hold;
        }
        Admission::Attempt
    }

    /// The result of an ordinary attempt.
    pub fn after_attempt(&self, result: &Result<(), DeliveryError>) -> AfterAttempt {
        let health = self.note(result);
        let opened = self.breaker().record(health, Instant::now());
        if opened {
            tracing::warn!(
                route = %self.route,
                "the route's circuit breaker opened: its events wait in its queue"
            );
            self.metrics.record_breaker_open(&self.route);
            self.publish_state();
        }
        match health {
            Health::Unhealthy if self.state() != BreakerState::Closed => AfterAttempt::Hold,
            _ => AfterAttempt::Settle,
        }
    }

    /// When the next probe is due (the breaker is open), else `None`.
    pub fn probe_at(&self) -> Option<Instant> {
        self.breaker().probe_at()
    }

    /// Open → half-open, if the probe is due; true if it is.
    pub fn start_probe(&self) -> bool {
        let started = self.breaker().start_probe(Instant::now());
        if started {
            self.publish_state();
        }
        started
    }

    /// Before the probe: only the rate limit applies.
    pub async fn before_probe(&self) {
        self.take_token().await;
    }

    /// The probe's result: healthy closes the breaker, unhealthy opens it
    /// for longer and holds the probed event.
    pub fn after_probe(&self, result: &Result<(), DeliveryError>) -> AfterAttempt {
        let health = self.note(result);
        self.breaker().record_probe(health, Instant::now());
        self.publish_state();
        match health {
            Health::Healthy => {
                tracing::info!(route = %self.route, "the probe succeeded: the route's circuit breaker closed");
                AfterAttempt::Settle
            }
            Health::Unhealthy => {
                let wait = self.probe_at().map(|at| at - Instant::now());
                tracing::warn!(
                    route = %self.route,
                    next_probe_in = wait.map(|w| tracing::field::display(humantime::format_duration(round(w)))),
                    "the probe failed: the route's circuit breaker stays open"
                );
                AfterAttempt::Hold
            }
        }
    }

    /// The route's state for `/routes`.
    pub fn status(&self) -> RouteStatus {
        let (state, failures, probe_at) = {
            let breaker = self.breaker();
            (breaker.state(), breaker.failures(), breaker.probe_at())
        };
        let next_probe_in_ms = probe_at.map(|at| {
            let left = at.saturating_duration_since(Instant::now());
            u64::try_from(left.as_millis()).unwrap_or(u64::MAX)
        });
        RouteStatus {
            route: self.route.clone(),
            state,
            failures,
            next_probe_in_ms,
            last_error: self
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }

    /// Waits for a token of the route's rate, counting the waits.
    async fn take_token(&self) {
        let Some(limiter) = &self.limiter else {
            return;
        };
        let started = Instant::now();
        while let Err(wait) = limiter.take(1) {
            tokio::time::sleep(wait).await;
        }
        let waited = started.elapsed();
        if !waited.is_zero() {
            self.metrics.record_rate_wait(&self.route, waited);
        }
    }

    /// Keeps the last failure's class; returns what the result says.
    fn note(&self, result: &Result<(), DeliveryError>) -> Health {
        if let Err(error) = result {
            let last = LastError {
                error: error.description().to_owned(),
                at_ms: unix_millis(SystemTime::now()),
            };
            *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(last);
        }
        Health::of(result)
    }

    fn publish_state(&self) {
        let state = self.breaker().state();
        self.metrics.set_breaker_state(&self.route, state);
        self.state.send_if_modified(|current| {
            let changed = *current != state;
            *current = state;
            changed
        });
    }

    fn breaker(&self) -> MutexGuard<'_, Breaker> {
        self.breaker.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Whole milliseconds, for logs.
fn round(wait: Duration) -> Duration {
    Duration::from_millis(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_shared::config::Config;

    fn gate(extra: &str) -> RouteGate {
        let toml =
            format!("[[routes]]\nname = \"crm\"\nmatch = [\"*\"]\nhandler = \"log\"\n{extra}");
        let config = Config::from_toml(&toml).expect("a valid route");
        let metrics = WorkerMetrics::new(["crm"].into_iter()).expect("metrics");
        RouteGate::new(&config.routes[0], metrics)
    }

    fn timeout() -> Result<(), DeliveryError> {
        Err(DeliveryError::Transient {
            status: None,
            retry_after: None,
            error: "timed out after 2s".into(),
        })
    }

    #[tokio::test(start_paused = true)]
    async fn the_failure_that_opens_the_breaker_and_those_after_are_held_and_the_route_stops() {
        let gate = gate("[routes.breaker]\nfailures = 2\nprobe_after = \"1s\"");
        let mut state = gate.watch();
        assert_eq!(gate.before_attempt().await, Admission::Attempt);
        assert_eq!(gate.after_attempt(&timeout()), AfterAttempt::Settle);
        assert_eq!(gate.after_attempt(&timeout()), AfterAttempt::Hold);
        assert!(state.has_changed().expect("open"));
        assert_eq!(*state.borrow_and_update(), BreakerState::Open);
        assert_eq!(gate.after_attempt(&timeout()), AfterAttempt::Hold);
        assert_eq!(gate.before_attempt().await, Admission::Hold);
        let status = gate.status();
        assert_eq!(status.state, BreakerState::Open);
        assert_eq!(status.next_probe_in_ms, Some(1000));
        let last = status.last_error.expect("a last error");
        assert_eq!(last.error, "timed out after 2s");

        assert!(!gate.start_probe(), "not due yet");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(gate.start_probe());
        assert_eq!(gate.state(), BreakerState::HalfOpen);
        assert_eq!(gate.after_probe(&timeout()), AfterAttempt::Hold);
        assert_eq!(gate.status().next_probe_in_ms, Some(2000), "twice as long");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(gate.start_probe());
        assert_eq!(gate.after_probe(&Ok(())), AfterAttempt::Settle);
        assert_eq!(gate.state(), BreakerState::Closed);
        assert_eq!(gate.before_attempt().await, Admission::Attempt);
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_event_is_settled_and_never_opens_the_breaker() {
        let gate = gate("[routes.breaker]\nfailures = 1");
        let refused = Err(DeliveryError::Permanent {
            status: Some(422),
            error: "HTTP 422".into(),
        });
        for _ in 0..10 {
            assert_eq!(gate.after_attempt(&refused), AfterAttempt::Settle);
        }
        assert_eq!(gate.state(), BreakerState::Closed);
        assert_eq!(
            gate.status().last_error.map(|l| l.error).as_deref(),
            Some("HTTP 422")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn attempts_wait_for_the_route_s_rate() {
        let gate = gate("rate = { per_second = 10, burst = 2 }");
        let start = Instant::now();
        for _ in 0..12 {
            assert_eq!(gate.before_attempt().await, Admission::Attempt);
        }
        // Two at once, then ten more at ten a second.
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(990) && took <= Duration::from_millis(1100),
            "{took:?}"
        );
    }
}
