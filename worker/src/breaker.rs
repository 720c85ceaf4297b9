//! A route's circuit breaker, as a pure state machine over Tokio's clock
//! (so its timing is unit-tested with paused time).
//!
//! Closed: every event is attempted; `failures` unhealthy failures in a row
//! open it. Open: nothing is attempted until `probe_after` has passed; then
//! half-open: one probe delivery. A healthy probe closes it; an unhealthy
//! one opens it again for twice as long, at most `probe_max`.
//!
//! Only answers that say the receiver itself is unwell count
//! ([`Health::of`]): a timeout, a connection error, 408, 425, 429, 5xx, the
//! failures the retry policy calls transient. A 4xx refusing one event is
//! an answer from a healthy receiver: it resets the count, as a success does.
//! Results of attempts that were already running when the breaker opened
//! change nothing (the probe decides).

use std::time::Duration;

use serde::Serialize;
use sluice_shared::config::BreakerConfig;
use tokio::time::Instant;

use crate::delivery_error::DeliveryError;

/// Where a breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BreakerState {
    /// Deliveries flow.
    Closed,
    /// Nothing is attempted; events wait in the route's queue.
    Open,
    /// One probe delivery decides.
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half-open",
        }
    }

    /// The value of `sluice_worker_route_breaker_state`: 0 closed,
    /// 1 half-open, 2 open (anything above 0 is not delivering freely).
    pub fn gauge(self) -> i64 {
        match self {
            Self::Closed => 0,
            Self::HalfOpen => 1,
            Self::Open => 2,
        }
    }
}

/// What an attempt's result says about the receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// It answered: 2xx, or a refusal of this one event.
    Healthy,
    /// It is down, slow or overloaded.
    Unhealthy,
}

impl Health {
    pub fn of(result: &Result<(), DeliveryError>) -> Self {
        match result {
            Err(DeliveryError::Transient { .. }) => Self::Unhealthy,
            Ok(()) | Err(DeliveryError::Permanent { .. }) => Self::Healthy,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Closed,
    Open { until: Instant, wait: Duration },
    HalfOpen { wait: Duration },
}

/// One route's breaker.
#[derive(Debug)]
pub struct Breaker {
    config: BreakerConfig,
    /// Unhealthy results in a row while closed.
    failures: u32,
    phase: Phase,
}

impl Breaker {
    pub fn new(config: BreakerConfig) -> Self {
        Self {
            config,
            failures: 0,
            phase: Phase::Closed,
        }
    }

    pub fn state(&self) -> BreakerState {
        match self.phase {
            Phase::Closed => BreakerState::Closed,
            Phase::Open { .. } => BreakerState::Open,
            Phase::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Unhealthy results in a row so far (reset when it closes).
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// When the next probe is due, while open.
    pub fn probe_at(&self) -> Option<Instant> {
        match self.phase {
            Phase::Open { until, .. } => Some(until),
            _ => None,
        }
    }

    /// The result of an ordinary attempt; true if it opened the breaker.
    /// Ignored unless closed: an attempt under way when it opened says
    /// nothing the probe will not.
    pub fn record(&mut self, health: Health, now: Instant) -> bool {
        if self.phase != Phase::Closed || !self.config.enabled {
            return false;
        }
        match health {
            Health::Healthy => self.failures = 0,
            Health::Unhealthy => {
                self.failures = self.failures.saturating_add(1);
                if self.failures >= self.config.failures {
                    self.open(self.config.probe_after, now);
                    return true;
                }
            }
        }
        false
    }

    /// Open → half-open once the wait is over; false if not due (or not open).
    pub fn start_probe(&mut self, now: Instant) -> bool {
        match self.phase {
            Phase::Open { until, wait } if now >= until => {
                self.phase = Phase::HalfOpen { wait };
                true
            }
            _ => false,
        }
    }

    /// The probe's result: healthy closes, unhealthy opens again for twice
    /// the last wait (at most `probe_max`). Ignored unless half-open.
    pub fn record_probe(&mut self, health: Health, now: Instant) {
        let Phase::HalfOpen { wait } = self.phase else {
            return;
        };
        match health {
            Health::Healthy => {
                self.failures = 0;
                self.phase = Phase::Closed;
            }
            Health::Unhealthy => {
                let longer = wait.saturating_mul(2).min(self.config.probe_max);
                self.open(longer, now);
            }
        }
    }

    fn open(&mut self, wait: Duration, now: Instant) {
        self.phase = Phase::Open {
            until: now + wait,
            wait,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(failures: u32, probe_after: u64, probe_max: u64) -> Breaker {
        Breaker::new(BreakerConfig {
            enabled: true,
            failures,
            probe_after: Duration::from_secs(probe_after),
            probe_max: Duration::from_secs(probe_max),
        })
    }

    fn unhealthy() -> Result<(), DeliveryError> {
        Err(DeliveryError::Transient {
            status: Some(503),
            retry_after: None,
            error: "HTTP 503".into(),
        })
    }

    #[test]
    fn only_answers_that_say_the_receiver_is_unwell_are_unhealthy() {
        assert_eq!(Health::of(&unhealthy()), Health::Unhealthy);
        assert_eq!(Health::of(&Ok(())), Health::Healthy);
        let refused = Err(DeliveryError::Permanent {
            status: Some(400),
            error: "HTTP 400".into(),
        });
        assert_eq!(Health::of(&refused), Health::Healthy);
    }

    #[test]
    fn it_opens_after_the_configured_failures_in_a_row_and_a_healthy_answer_resets_the_count() {
        let now = Instant::now();
        let mut breaker = breaker(3, 5, 300);
        assert!(!breaker.record(Health::Unhealthy, now));
        assert!(!breaker.record(Health::Unhealthy, now));
        assert!(!breaker.record(Health::Healthy, now), "a 2xx or 4xx resets");
        assert_eq!(breaker.failures(), 0);
        assert!(!breaker.record(Health::Unhealthy, now));
        assert!(!breaker.record(Health::Unhealthy, now));
        assert_eq!(breaker.state(), BreakerState::Closed);
        assert!(breaker.record(Health::Unhealthy, now), "the third in a row");
        assert_eq!(breaker.state(), BreakerState::Open);
        assert_eq!(breaker.probe_at(), Some(now + Duration::from_secs(5)));
    }

    #[test]
    fn results_of_attempts_under_way_when_it_opened_change_nothing() {
        let now = Instant::now();
        let mut breaker = breaker(1, 5, 300);
        assert!(breaker.record(Health::Unhealthy, now));
        assert!(!breaker.record(Health::Healthy, now));
        assert!(!breaker.record(Health::Unhealthy, now));
        assert_eq!(breaker.probe_at(), Some(now + Duration::from_secs(5)));
    }

    #[test]
    fn the_probe_waits_grow_twice_over_up_to_the_maximum_and_a_good_probe_closes() {
        let start = Instant::now();
        let mut breaker = breaker(1, 5, 30);
        breaker.record(Health::Unhealthy, start);
        assert!(
            !breaker.start_probe(start + Duration::from_secs(4)),
            "not yet"
        );
        let mut now = start;
        let mut waits = Vec::new();
        for _ in 0..5 {
            let due = breaker.probe_at().expect("open");
            waits.push((due - now).as_secs());
            now = due;
            assert!(breaker.start_probe(now));
            assert_eq!(breaker.state(), BreakerState::HalfOpen);
            breaker.record_probe(Health::Unhealthy, now);
        }
        assert_eq!(waits, [5, 10, 20, 30, 30]);
        now = breaker.probe_at().expect("open");
        assert!(breaker.start_probe(now));
        breaker.record_probe(Health::Healthy, now);
        assert_eq!(breaker.state(), BreakerState::Closed);
        assert_eq!(breaker.failures(), 0);
        // Closed again, it opens with the first wait again.
        assert!(breaker.record(Health::Unhealthy, now));
        assert_eq!(breaker.probe_at(), Some(now + Duration::from_secs(5)));
    }

    #[test]
    fn a_disabled_breaker_never_opens() {
        let mut breaker = Breaker::new(BreakerConfig {
            enabled: false,
            ..BreakerConfig::default()
        });
        for _ in 0..100 {
            assert!(!breaker.record(Health::Unhealthy, Instant::now()));
        }
        assert_eq!(breaker.state(), BreakerState::Closed);
    }
}
