//! Per-source protection, decided before the body is read: which client
//! addresses may post (`allow_ips`, with `gateway.trusted_proxies` naming
//! the proxies whose `X-Forwarded-For` is believed), and how many events per
//! second a source may send (`rate_limit`, a token bucket).

use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use axum::http::HeaderMap;
use ipnet::IpNet;
use sluice_shared::config::RateLimitConfig;
use tokio::time::Instant;

/// The client's address: the peer, or, when the peer is a trusted proxy, the
/// first address from the right of `X-Forwarded-For` that is not one.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    let mut client = peer.to_canonical();
    if !is_trusted(&client) {
        return client;
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect();
    for hop in hops.iter().rev() {
        match hop.trim().parse::<IpAddr>() {
            Ok(ip) => client = ip.to_canonical(),
            // A garbled hop: the last address we could trust is all we know.
            Err(_) => break,
        }
        if !is_trusted(&client) {
            break;
        }
    }
    client
}

/// Whether `ip` may post to a source with this allow list (empty: anyone).
pub fn allowed(ip: IpAddr, allow: &[IpNet]) -> bool {
    allow.is_empty() || allow.iter().any(|net| net.contains(&ip))
}

/// A source's token bucket: `per_second` events on average, `burst` at once.
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
    use axum::http::HeaderValue;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    fn forwarded(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn forwarded_for_is_believed_only_from_a_trusted_proxy() {
        let trusted = nets(&["10.0.0.0/8"]);
        let peer: IpAddr = "10.1.2.3".parse().unwrap();
        let headers = forwarded("203.0.113.9, 10.9.9.9");
        assert_eq!(
            client_ip(peer, &headers, &trusted),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        let stranger: IpAddr = "198.51.100.1".parse().unwrap();
        assert_eq!(client_ip(stranger, &headers, &trusted), stranger);
        assert_eq!(client_ip(peer, &headers, &[]), peer);
        // A client cannot hide behind a forged hop to the left of the real one.
        let forged = forwarded("1.1.1.1, 203.0.113.9");
        assert_eq!(
            client_ip(peer, &forged, &trusted),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        assert_eq!(client_ip(peer, &forwarded("garbage"), &trusted), peer);
    }

    #[test]
    fn an_allow_list_admits_its_blocks_and_an_empty_one_admits_all() {
        let allow = nets(&["192.0.2.0/24", "2001:db8::/32"]);
        assert!(allowed("192.0.2.77".parse().unwrap(), &allow));
        assert!(allowed("2001:db8::1".parse().unwrap(), &allow));
        assert!(!allowed("192.0.3.1".parse().unwrap(), &allow));
        assert!(allowed("192.0.3.1".parse().unwrap(), &[]));
    }

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
