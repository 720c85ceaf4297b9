//! A replay's pace, `--rate` on the command line and `rate` over HTTP,
//! checked in one place for both.
//!
//! A rate is a finite number of events per second from [`MIN_RATE`] to
//! [`MAX_RATE`]. The floor keeps the pause between two publishes (1 / rate)
//! a duration a person would choose: 0.1 a second is one event every 10 s,
//! and RabbitMQ's `consumer_timeout` (30 min by default) ends any pass that
//! holds the dead queue longer anyway; a rate like 1e-300 asks for a pause
//! longer than a `Duration` can hold. Above the ceiling pacing means nothing
//! (an unpaced replay moves about 1,200 events a second): leave the rate out.

use std::time::Duration;

use super::error::DlqError;

/// The slowest pace accepted: one event every 10 seconds.
pub const MIN_RATE: f64 = 0.1;
/// The fastest pace accepted; for anything faster, leave the rate out.
pub const MAX_RATE: f64 = 100_000.0;

/// Events per second, within [`MIN_RATE`]..=[`MAX_RATE`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate(f64);

impl Rate {
    /// The rate, or a usage error (exit 64, HTTP 400) that says what is accepted.
    pub fn new(per_second: f64) -> Result<Self, DlqError> {
        if per_second.is_finite() && (MIN_RATE..=MAX_RATE).contains(&per_second) {
            return Ok(Self(per_second));
        }
        Err(DlqError::Usage(format!(
            "rate {per_second}: events per second, from {MIN_RATE} to {MAX_RATE}; \
             leave it out to replay as fast as RabbitMQ confirms"
        )))
    }

    /// Events per second.
    pub fn per_second(self) -> f64 {
        self.0
    }

    /// The pause between two publishes: from 10 µs to 10 s.
    pub fn interval(self) -> Duration {
        Duration::from_secs_f64(1.0 / self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_outside_the_floor_and_ceiling_is_a_usage_error() {
        for bad in [
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            -1.0,
            0.0,
            -0.0,
            1e-300,
            f64::MIN_POSITIVE,
            0.099,
            100_000.5,
            1e9,
        ] {
            let err = Rate::new(bad).unwrap_err();
            assert_eq!(err.exit_code(), 64, "{bad}: {err}");
            assert!(err.to_string().contains("from 0.1 to 100000"), "{err}");
        }
    }

    #[test]
    fn the_floor_and_the_ceiling_themselves_are_accepted() {
        assert_eq!(
            Rate::new(MIN_RATE).unwrap().interval(),
            Duration::from_secs(10)
        );
        assert_eq!(
            Rate::new(MAX_RATE).unwrap().interval(),
            Duration::from_micros(10)
        );
        assert_eq!(Rate::new(2.0).unwrap().per_second(), 2.0);
        assert_eq!(
            Rate::new(2.0).unwrap().interval(),
            Duration::from_millis(500)
        );
    }
}
