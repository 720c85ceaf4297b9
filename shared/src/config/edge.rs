//! `[gateway.limits]`, `[gateway.tls]` and `gateway.trusted_proxies`: what
//! keeps the public port standing against slow, broken and hostile clients.
//! Each limit, when it acts, answers fast (503 with `Retry-After`, 431, or a
//! closed connection) and counts in `sluice_gateway_shed_total` or
//! `sluice_gateway_connections_closed_total`; docs/security.md has the
//! reasons behind each default.

use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

use super::ConfigError;

/// Limits of the public listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// How long a client may take to send a request's head (request line and
    /// headers), from connecting or from its first byte after an idle pause.
    /// Past it the connection is closed: a half-sent request holds nothing.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// How long a kept-alive connection may sit idle between requests.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Largest request head in bytes (names, values and their separators);
    /// past it 431. Heads over 256 KiB are refused by the HTTP parser itself.
    pub max_header_bytes: usize,
    /// Most header fields in one request; past it 431.
    pub max_headers: usize,
    /// Most connections open at once; past it a new connection is answered
    /// 503 with `Retry-After` and closed.
    pub max_connections: usize,
    /// Most webhook requests being handled at once; past it 503 at once.
    pub max_requests_in_flight: usize,
    /// Most request-body bytes held in memory across all requests; a request
    /// whose body would go past it is answered 503 with `Retry-After`.
    pub max_body_memory: usize,
    /// Bodies at least this large are verified and parsed on a blocking
    /// thread, so they never stall the serving thread.
    pub offload_body_bytes: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(60),
            max_header_bytes: 32 * 1024,
            max_headers: 64,
            max_connections: 4096,
            max_requests_in_flight: 1024,
            max_body_memory: 64 * 1024 * 1024,
            offload_body_bytes: 64 * 1024,
        }
    }
}

/// The HTTP parser's own ceiling on a request head; `max_header_bytes` may not pass it.
pub const PARSER_HEAD_LIMIT: usize = 256 * 1024;

/// `[gateway.tls]`: serve HTTPS on `gateway.listen` with these PEM files.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The certificate chain, leaf first (PEM).
    pub cert: PathBuf,
    /// The private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// How often the files are checked for a change (a SIGHUP reloads at once).
    #[serde(default = "default_reload_interval", with = "humantime_serde")]
    pub reload_interval: Duration,
}

fn default_reload_interval() -> Duration {
    Duration::from_secs(10)
}

/// Proxies whose `X-Forwarded-For` is believed, as CIDR blocks.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct TrustedProxies(pub Vec<IpNet>);

/// `rate_limit = { per_second = 100, burst = 200 }` on a source, `rate =
/// { per_second = 50, burst = 10 }` on a route.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Events accepted (a source) or delivery attempts (a route) per
    /// second, on average.
    pub per_second: f64,
    /// How many may come at once above the average (one Meta batch holds
    /// up to 1,000 events).
    pub burst: u32,
}

pub(super) fn validate_limits(limits: &LimitsConfig) -> Result<(), ConfigError> {
    let key = |field: &str| format!("gateway.limits.{field}");
    let at_least_one = [
        ("max_headers", limits.max_headers),
        ("max_connections", limits.max_connections),
        ("max_requests_in_flight", limits.max_requests_in_flight),
        ("max_body_memory", limits.max_body_memory),
    ];
    for (field, value) in at_least_one {
        if value == 0 {
            return Err(ConfigError::invalid(key(field), "must be at least 1"));
        }
    }
    if limits.max_header_bytes < 1024 || limits.max_header_bytes > PARSER_HEAD_LIMIT {
        return Err(ConfigError::invalid(
            key("max_header_bytes"),
            format!("must be between 1024 and {PARSER_HEAD_LIMIT} bytes"),
        ));
    }
    for (field, value) in [
        ("header_read_timeout", limits.header_read_timeout),
        ("idle_timeout", limits.idle_timeout),
    ] {
        if value < Duration::from_millis(100) {
            return Err(ConfigError::invalid(key(field), "must be at least 100ms"));
        }
    }
    Ok(())
}

/// Checks a rate limit written at `key` (`sources.<name>.rate_limit`,
/// `routes[0] (crm).rate`).
pub(super) fn validate_rate_limit(key: &str, limit: &RateLimitConfig) -> Result<(), ConfigError> {
    if !(limit.per_second.is_finite() && limit.per_second >= 0.001) {
        return Err(ConfigError::invalid(
            format!("{key}.per_second"),
            "must be a number per second, at least 0.001",
        ));
    }
    if limit.burst == 0 {
        return Err(ConfigError::invalid(
            format!("{key}.burst"),
            "must be at least 1",
        ));
    }
    Ok(())
}
