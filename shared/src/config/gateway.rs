//! `[gateway]`: the HTTP receiver's addresses, budgets and limits.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;
use super::edge::{LimitsConfig, TlsConfig, TrustedProxies, validate_limits};

/// How many bytes of messages one request may fan out into, per byte of
/// `gateway.body_limit` (see [`GatewayConfig::max_fan_out_bytes`]).
pub const FAN_OUT_BYTES_PER_BODY_BYTE: usize = 4;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    /// Public address providers POST to.
    pub listen: SocketAddr,
    /// Address of `/metrics`, `/healthz`, `/readyz`; keep it off the public network.
    pub admin_listen: SocketAddr,
    /// Hard limit from request start to answer; under 2 s because providers
    /// (Meta among them) treat slower answers as failures.
    #[serde(with = "humantime_serde")]
    pub ack_budget: Duration,
    /// How long a client may take to send its body before it gets 408.
    #[serde(with = "humantime_serde")]
    pub body_read_timeout: Duration,
    /// Largest accepted body in bytes; Meta sends up to 3 MB.
    pub body_limit: usize,
    /// What to do when Redis cannot be reached for deduplication.
    pub on_redis_error: RedisErrorPolicy,
    /// Requests publishing at once, each on a confirm channel of its own
    /// (a returned message can then only be that request's).
    pub publisher_channels: usize,
    /// Threads serving requests: 1 runs everything on one thread (the fewest
    /// wake-ups between threads; see docs/benchmarks.md), 0 one per core.
    pub threads: usize,
    /// The `Retry-After` (whole seconds) sent with a 503.
    #[serde(with = "humantime_serde")]
    pub retry_after: Duration,
    /// Limits of the public listener: timeouts, caps, load shedding.
    pub limits: LimitsConfig,
    /// Serve HTTPS with these files; without it the port speaks plain HTTP
    /// (put a TLS-terminating proxy in front).
    pub tls: Option<TlsConfig>,
    /// Proxies (CIDR blocks) whose `X-Forwarded-For` names the client, for
    /// sources' `allow_ips`; empty: the peer address is the client.
    pub trusted_proxies: TrustedProxies,
    /// Most events one request may hold (a batch's messages and statuses,
    /// an `items_pointer` array's items); more is answered 413. Meta sends
    /// at most 1,000 in one request.
    pub max_events_per_request: usize,
    /// After SIGTERM, how long `/readyz` answers 503 while requests are
    /// still served, so the load balancer stops sending before the port
    /// closes; then the port closes and requests in flight get up to
    /// `ack_budget` to finish.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
}

impl GatewayConfig {
    /// Most bytes one request's messages may add up to:
    /// [`FAN_OUT_BYTES_PER_BODY_BYTE`] times `body_limit`. Each message
    /// carries its item's context, so a small body with a large context and
    /// many items could otherwise ask for gigabytes; past this it is answered
    /// 413, so what a request holds stays a multiple of the body limit.
    pub fn max_fan_out_bytes(&self) -> usize {
        self.body_limit.saturating_mul(FAN_OUT_BYTES_PER_BODY_BYTE)
    }
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            listen: ([127, 0, 0, 1], 8080).into(),
            admin_listen: ([127, 0, 0, 1], 9080).into(),
            ack_budget: Duration::from_millis(1500),
            body_read_timeout: Duration::from_secs(1),
            body_limit: 4 * 1024 * 1024,
            on_redis_error: RedisErrorPolicy::Publish,
            publisher_channels: 64,
            threads: 1,
            retry_after: Duration::from_secs(5),
            limits: LimitsConfig::default(),
            tls: None,
            trusted_proxies: TrustedProxies::default(),
            max_events_per_request: 5_000,
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// The gateway's answer to a Redis outage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RedisErrorPolicy {
    /// Accept and publish without deduplication (counted, warned): availability first.
    Publish,
    /// Answer 503 so the provider retries later: no duplicate ever slips through.
    Reject,
}

/// Checks `[gateway]` beyond its types.
pub(super) fn validate(g: &GatewayConfig) -> Result<(), ConfigError> {
    if g.ack_budget.is_zero() || g.ack_budget >= Duration::from_secs(2) {
        return Err(ConfigError::invalid(
            "gateway.ack_budget",
            "must be above 0 and under 2s: providers give up on slower answers",
        ));
    }
    if g.publisher_channels == 0 {
        return Err(ConfigError::invalid(
            "gateway.publisher_channels",
            "must be at least 1",
        ));
    }
    if g.body_limit == 0 {
        return Err(ConfigError::invalid(
            "gateway.body_limit",
            "must be at least 1 byte",
        ));
    }
    validate_limits(&g.limits)?;
    if g.max_events_per_request == 0 {
        return Err(ConfigError::invalid(
            "gateway.max_events_per_request",
            "must be at least 1 (Meta sends up to 1,000 events in one request)",
        ));
    }
    if g.shutdown_grace > Duration::from_secs(300) {
        return Err(ConfigError::invalid(
            "gateway.shutdown_grace",
            "must be at most 5m: it only has to outlast the load balancer's readiness checks \
             (period x failure threshold), and the orchestrator kills a process that is slow to stop",
        ));
    }
    Ok(())
}
