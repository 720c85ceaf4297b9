//! The retry policy: after a failed attempt, which retry tier, or the dead queue.
//!
//! Pure arithmetic over the topology's retry tiers, so every case is a unit
//! test. Attempt k (1-based) that fails transiently waits in tier k-1; after
//! the last tier the next transient failure is final. With the default delays
//! (1 s, 5 s, 25 s, 2 min, 10 min, 1 h) an event gets at most 7 attempts over
//! about 1 h 13 min. A receiver's `Retry-After` may push an event to a later
//! (longer) tier, never to an earlier one: it asked us to wait at least that
//! long. An empty list of delays is valid and means "no retries".

use std::time::Duration;

pub use sluice_shared::message::DeadReason;
use sluice_shared::topology::RetryTier;

use crate::delivery_error::DeliveryError;

/// What to do with an event whose attempt just failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Park it in retry tier `tier` (an index into the policy's tiers).
    Retry { tier: usize },
    /// Give up: publish it to the dead exchange.
    Dead { reason: DeadReason },
}

/// Tiered exponential backoff over the retry queues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    tiers: Vec<RetryTier>,
}

impl RetryPolicy {
    /// A policy over `tiers`, as [`sluice_shared::topology::Topology::retry_tiers`]
    /// gives them: their delays are `amqp.retry_delays`, which the config
    /// loader accepted only above zero and strictly growing
    /// ([`sluice_shared::config::RetryDelays`]).
    pub fn new(tiers: Vec<RetryTier>) -> Self {
        Self { tiers }
    }

    /// The tier a [`Decision::Retry`] names.
    pub fn tier(&self, index: usize) -> Option<&RetryTier> {
        self.tiers.get(index)
    }

    /// The most attempts an event can get: one, plus one per tier.
    pub fn max_attempts(&self) -> usize {
        self.tiers.len() + 1
    }

    /// The decision after attempt `failed_before + 1` failed with `error`.
    pub fn decide(&self, failed_before: u32, error: &DeliveryError) -> Decision {
        let retry_after = match error {
            DeliveryError::Permanent { .. } => {
                return Decision::Dead {
                    reason: DeadReason::Rejected,
                };
            }
            DeliveryError::Transient { retry_after, .. } => *retry_after,
        };
        let backoff_tier = usize::try_from(failed_before).unwrap_or(usize::MAX);
        if backoff_tier >= self.tiers.len() {
            return Decision::Dead {
                reason: DeadReason::AttemptsExhausted,
            };
        }
        let tier = match retry_after {
            Some(wait) => backoff_tier.max(self.tier_at_least(wait)),
            None => backoff_tier,
        };
        Decision::Retry { tier }
    }

    /// The first tier holding an event for `wait` or longer, else the last.
    /// Only called with at least one tier.
    fn tier_at_least(&self, wait: Duration) -> usize {
        self.tiers
            .iter()
            .position(|tier| tier.delay >= wait)
            .unwrap_or(self.tiers.len().saturating_sub(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiers(seconds: &[u64]) -> Vec<RetryTier> {
        seconds
            .iter()
            .map(|&s| RetryTier {
                delay: Duration::from_secs(s),
                queue: format!("t.retry.{s}s"),
            })
            .collect()
    }

    fn default_policy() -> RetryPolicy {
        RetryPolicy::new(tiers(&[1, 5, 25, 120, 600, 3600]))
    }

    fn transient(retry_after: Option<u64>) -> DeliveryError {
        DeliveryError::Transient {
            status: Some(503),
            retry_after: retry_after.map(Duration::from_secs),
            error: "HTTP 503".into(),
        }
    }

    fn permanent() -> DeliveryError {
        DeliveryError::Permanent {
            status: Some(404),
            error: "HTTP 404".into(),
        }
    }

    const EXHAUSTED: Decision = Decision::Dead {
        reason: DeadReason::AttemptsExhausted,
    };

    #[test]
    fn a_503_on_the_first_attempt_waits_in_the_first_tier() {
        assert_eq!(
            default_policy().decide(0, &transient(None)),
            Decision::Retry { tier: 0 }
        );
    }

    #[test]
    fn each_transient_failure_moves_to_the_next_tier() {
        let policy = default_policy();
        for failed_before in 0..6u32 {
            assert_eq!(
                policy.decide(failed_before, &transient(None)),
                Decision::Retry {
                    tier: failed_before as usize
                }
            );
        }
    }

    #[test]
    fn with_default_delays_an_event_gets_at_most_seven_attempts() {
        let policy = default_policy();
        assert_eq!(policy.max_attempts(), 7);
        let mut failed_before = 0;
        while let Decision::Retry { .. } = policy.decide(failed_before, &transient(None)) {
            failed_before += 1;
        }
        assert_eq!(failed_before + 1, 7, "attempts made before giving up");
        assert_eq!(policy.decide(6, &transient(None)), EXHAUSTED);
        assert_eq!(policy.decide(u32::MAX, &transient(None)), EXHAUSTED);
    }

    #[test]
    fn the_default_tiers_add_up_to_about_an_hour_and_a_quarter() {
        let total: Duration = (0..6)
            .filter_map(|i| default_policy().tier(i).map(|t| t.delay))
            .sum();
        assert_eq!(total, Duration::from_secs(4351));
    }

    #[test]
    fn a_permanent_error_is_rejected_at_once_whatever_the_attempt() {
        let policy = default_policy();
        let rejected = Decision::Dead {
            reason: DeadReason::Rejected,
        };
        assert_eq!(policy.decide(0, &permanent()), rejected);
        assert_eq!(policy.decide(3, &permanent()), rejected);
        assert_eq!(policy.decide(99, &permanent()), rejected);
    }

    #[test]
    fn a_retry_after_picks_the_first_tier_at_or_above_it() {
        let policy = default_policy();
        assert_eq!(
            policy.decide(0, &transient(Some(5))),
            Decision::Retry { tier: 1 }
        );
        assert_eq!(
            policy.decide(0, &transient(Some(6))),
            Decision::Retry { tier: 2 }
        );
        assert_eq!(
            policy.decide(0, &transient(Some(120))),
            Decision::Retry { tier: 3 }
        );
    }

    #[test]
    fn a_retry_after_shorter_than_the_backoff_keeps_the_backoff_tier() {
        assert_eq!(
            default_policy().decide(3, &transient(Some(1))),
            Decision::Retry { tier: 3 }
        );
        assert_eq!(
            default_policy().decide(2, &transient(Some(0))),
            Decision::Retry { tier: 2 }
        );
    }

    #[test]
    fn a_retry_after_longer_than_every_tier_uses_the_last_tier() {
        assert_eq!(
            default_policy().decide(0, &transient(Some(86_400))),
            Decision::Retry { tier: 5 }
        );
    }

    #[test]
    fn a_retry_after_does_not_extend_the_attempt_budget() {
        assert_eq!(default_policy().decide(6, &transient(Some(10))), EXHAUSTED);
    }

    #[test]
    fn no_delays_means_dead_at_the_first_transient_failure() {
        let policy = RetryPolicy::new(Vec::new());
        assert_eq!(policy.max_attempts(), 1);
        assert_eq!(policy.decide(0, &transient(None)), EXHAUSTED);
        assert_eq!(policy.decide(0, &transient(Some(3))), EXHAUSTED);
        assert_eq!(
            policy.decide(0, &permanent()),
            Decision::Dead {
                reason: DeadReason::Rejected
            }
        );
    }

    #[test]
    fn a_single_tier_allows_two_attempts() {
        let policy = RetryPolicy::new(tiers(&[30]));
        assert_eq!(
            policy.decide(0, &transient(Some(90))),
            Decision::Retry { tier: 0 }
        );
        assert_eq!(policy.decide(1, &transient(None)), EXHAUSTED);
    }

    #[test]
    fn reasons_read_as_their_header_values() {
        assert_eq!(DeadReason::Rejected.to_string(), "rejected");
        assert_eq!(DeadReason::AttemptsExhausted.as_str(), "attempts_exhausted");
        assert_eq!(DeadReason::NoRoute.as_str(), "no_route");
        assert_eq!(DeadReason::Malformed.as_str(), "malformed");
    }
}
