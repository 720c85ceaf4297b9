//! The wait between attempts to reach RabbitMQ again: 250 ms, doubling, at
//! most 5 s, back to 250 ms once a connection is up.
//!
//! Short at first because most drops are a broker restart or a failover that
//! is over in seconds; capped so that a long outage is noticed within 5 s of
//! its end, without a flood of connection attempts in the broker's log.

use std::time::Duration;

/// Exponential reconnect delays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReconnectBackoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Default for ReconnectBackoff {
    fn default() -> Self {
        let first = Duration::from_millis(250);
        Self {
            first,
            max: Duration::from_secs(5),
            next: first,
        }
    }
}

impl ReconnectBackoff {
    /// The wait before the next attempt; each call doubles the one after.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }

    /// Called once connected: the next outage starts short again.
    pub fn reset(&mut self) {
        self.next = self.first;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_from_a_quarter_second_up_to_five_seconds() {
        let mut backoff = ReconnectBackoff::default();
        let delays: Vec<u128> = (0..8).map(|_| backoff.next_delay().as_millis()).collect();
        assert_eq!(delays, [250, 500, 1000, 2000, 4000, 5000, 5000, 5000]);
    }

    #[test]
    fn a_connection_resets_the_delay() {
        let mut backoff = ReconnectBackoff::default();
        backoff.next_delay();
        backoff.next_delay();
        backoff.reset();
        assert_eq!(backoff.next_delay(), Duration::from_millis(250));
    }
}
