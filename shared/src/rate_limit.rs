//! A token bucket, the one rate limit both binaries use: the gateway's per
//! source `rate_limit` (events accepted) and the worker's per route `rate`
//! (delivery attempts).
//!
//! It runs on Tokio's clock, so tests can pause and advance time.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::RateLimitConfig;

/// A token bucket: `per_second` on average, `burst` at once.
pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    bucket: Mutex<Bucket>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimiter {
    pub fn new(config: &RateLimitConfig) -> Self {
        let burst = f64::from(config.burst);
        Self {
            per_second: config.per_second,
            burst,
            bucket: Mutex::new(Bucket {
                tokens: burst,
                at: Instant::now(),
            }),
        }
    }

    /// Before the body: refuses at once, with how long to wait, when not
    /// even one event could pass now.
    pub fn check(&self) -> Result<(), Duration> {
        self.with_bucket(|bucket| self.shortfall(bucket.tokens, 1.0).map_or(Ok(()), Err))
    }

    /// After extraction: takes `events` tokens, or says how long to wait. A
    /// request larger than the burst passes when the bucket is full and
    /// leaves it in debt, so a big batch is slowed, never refused forever.
    pub fn take(&self, events: usize) -> Result<(), Duration> {
        let wanted = events as f64;
        self.with_bucket(|bucket| {
            if let Some(wait) = self.shortfall(bucket.tokens, wanted.min(self.burst)) {
                return Err(wait);
            }
            bucket.tokens -= wanted;
            Ok(())
        })
    }

    /// The wait until `tokens` reaches `wanted`, if it is short.
    fn shortfall(&self, tokens: f64, wanted: f64) -> Option<Duration> {
        (tokens < wanted).then(|| Duration::from_secs_f64((wanted - tokens) / self.per_second))
    }

    fn with_bucket<T>(&self, f: impl FnOnce(&mut Bucket) -> T) -> T {
        let mut bucket = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let refill = now.duration_since(bucket.at).as_secs_f64() * self.per_second;
        bucket.tokens = (bucket.tokens + refill).min(self.burst);
        bucket.at = now;
        f(&mut bucket)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_bucket_allows_its_burst_then_refills_at_its_rate() {
        let limiter = RateLimiter::new(&RateLimitConfig {
            per_second: 10.0,
            burst: 5,
        });
        assert!(limiter.take(5).is_ok());
        let wait = limiter.take(1).unwrap_err();
        assert!(
            wait > Duration::from_millis(90) && wait <= Duration::from_millis(100),
            "{wait:?}"
        );
        assert!(limiter.check().is_err());
        tokio::time::advance(Duration::from_millis(200)).await;
        assert!(limiter.check().is_ok());
        assert!(limiter.take(2).is_ok());
        assert!(limiter.take(1).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_larger_than_the_burst_passes_on_a_full_bucket_and_leaves_debt() {
        let limiter = RateLimiter::new(&RateLimitConfig {
            per_second: 100.0,
            burst: 10,
        });
        assert!(limiter.take(1000).is_ok());
        let wait = limiter.check().unwrap_err();
        assert!(wait > Duration::from_secs(9), "{wait:?}");
    }
}
