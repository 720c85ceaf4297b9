//! [`RetryDelays`]: the retry tiers' delays, read as text (`["1s", "5s", "2m"]`)
//! and checked once, as they are read, so no consumer checks them again.

use std::ops::Deref;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// `amqp.retry_delays`: above zero and strictly growing (each names its own
/// retry queue, so two equal delays would be one queue declared twice). An
/// empty list is valid: no retries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryDelays(Vec<Duration>);

/// Retry delays that make no sense.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RetryDelaysError {
    #[error("retry delay {index} is 0, which would retry at once in a loop")]
    ZeroDelay { index: usize },
    #[error(
        "retry delays must grow: delay {index} ({delay:?}) is not longer than the one before it \
         ({previous:?}); list them shortest first, each once, e.g. [\"1s\", \"5s\", \"25s\"]"
    )]
    NotIncreasing {
        index: usize,
        delay: Duration,
        previous: Duration,
    },
}

impl RetryDelays {
    /// Accepts delays above zero, each longer than the one before.
    pub fn new(delays: Vec<Duration>) -> Result<Self, RetryDelaysError> {
        for (index, &delay) in delays.iter().enumerate() {
            if delay.is_zero() {
                return Err(RetryDelaysError::ZeroDelay { index });
            }
            if let Some(&previous) = index.checked_sub(1).and_then(|i| delays.get(i))
                && previous >= delay
            {
                return Err(RetryDelaysError::NotIncreasing {
                    index,
                    delay,
                    previous,
                });
            }
        }
        Ok(Self(delays))
    }
}

impl Default for RetryDelays {
    /// 1 s, 5 s, 25 s, 2 min, 10 min, 1 h: seven attempts over about 1 h 13 min.
    fn default() -> Self {
        Self(
            [1, 5, 25, 120, 600, 3600]
                .into_iter()
                .map(Duration::from_secs)
                .collect(),
        )
    }
}

impl Deref for RetryDelays {
    type Target = [Duration];

    fn deref(&self) -> &[Duration] {
        &self.0
    }
}

impl<'de> Deserialize<'de> for RetryDelays {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let list = Vec::<humantime_serde::Serde<Duration>>::deserialize(deserializer)?;
        Self::new(list.into_iter().map(|d| d.into_inner()).collect())
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn secs(list: &[u64]) -> Vec<Duration> {
        list.iter().copied().map(Duration::from_secs).collect()
    }

    #[test]
    fn delays_that_do_not_grow_are_refused() {
        assert_eq!(
            RetryDelays::new(secs(&[5, 1])),
            Err(RetryDelaysError::NotIncreasing {
                index: 1,
                delay: Duration::from_secs(1),
                previous: Duration::from_secs(5)
            })
        );
        assert!(RetryDelays::new(secs(&[5, 5])).is_err());
    }

    #[test]
    fn a_zero_delay_is_refused() {
        assert_eq!(
            RetryDelays::new(secs(&[0, 5])),
            Err(RetryDelaysError::ZeroDelay { index: 0 })
        );
    }

    #[test]
    fn no_delays_and_growing_delays_are_accepted() {
        assert!(RetryDelays::new(Vec::new()).is_ok_and(|d| d.is_empty()));
        let delays = RetryDelays::new(secs(&[1, 2, 300])).expect("growing");
        assert_eq!(delays[2], Duration::from_secs(300));
    }

    #[test]
    fn the_file_is_refused_naming_the_key_and_the_delay() {
        for (toml, says) in [
            ("[amqp]\nretry_delays = [\"5s\", \"1s\"]", "delay 1 (1s)"),
            ("[amqp]\nretry_delays = [\"0s\"]", "delay 0 is 0"),
        ] {
            let error = Config::from_toml(toml).expect_err(toml).to_string();
            assert!(error.contains("amqp.retry_delays"), "{error}");
            assert!(error.contains(says), "{error}");
        }
    }
}
