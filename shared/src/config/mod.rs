//! Configuration: one TOML file, overridden by `SLUICE_*` environment variables.
//!
//! Layers, later wins: built-in defaults, the TOML file, then the environment
//! (`SLUICE_GATEWAY__ACK_BUDGET=1s` sets `gateway.ack_budget`; `__` nests).
//! Unknown keys are errors, so a typo never silently falls back to a default.
//! Secrets are references (`env:`/`file:`) resolved by the binary that needs
//! them, see [`crate::secret`]. [`Config::load`] validates everything it can
//! before a process serves; every error names the key and what to do.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::Deserialize;

use crate::id_digest::IdDigestKey;

mod brokers;
mod cluster;
mod dlq;
mod edge;
#[cfg(test)]
mod fuzz;
mod route;
mod source;

pub use brokers::{AmqpConfig, RedisConfig};
pub use cluster::RedisMode;
pub use dlq::{DEFAULT_SCAN_BATCH, DlqConfig, DlqHttpConfig};
pub use edge::{LimitsConfig, PARSER_HEAD_LIMIT, RateLimitConfig, TlsConfig, TrustedProxies};
pub use route::{HandlerKind, RouteConfig};
pub use source::{DigestEncoding, ExtractorKind, SchemeKind, SourceConfig, TokenFormat};

/// The exit code of a process whose configuration is wrong (`EX_CONFIG`... `EX_USAGE`).
pub const EXIT_BAD_CONFIG: i32 = 64;

/// How many bytes of messages one request may fan out into, per byte of
/// `gateway.body_limit` (see [`GatewayConfig::max_fan_out_bytes`]).
pub const FAN_OUT_BYTES_PER_BODY_BYTE: usize = 4;

/// The whole configuration, shared by both binaries.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The HTTP receiver.
    #[serde(default)]
    pub gateway: GatewayConfig,
    /// The delivering consumer.
    #[serde(default)]
    pub worker: WorkerConfig,
    /// Redis, used by the gateway for deduplication.
    #[serde(default)]
    pub redis: RedisConfig,
    /// RabbitMQ and the topology both binaries declare.
    #[serde(default)]
    pub amqp: AmqpConfig,
    /// Logging.
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    /// Providers that may POST to `/webhooks/{name}`, by name.
    #[serde(default)]
    pub sources: BTreeMap<String, SourceConfig>,
    /// Where the worker delivers events; the first route that matches wins.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// The dead-letter-queue operations (`sluice-worker dlq`, `/dlq` over HTTP).
    #[serde(default)]
    pub dlq: DlqConfig,
}

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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerConfig {
    /// Address of the worker's `/metrics`, `/healthz`, `/readyz`.
    pub admin_listen: SocketAddr,
    /// Unacknowledged messages the broker may push ahead of the worker;
    /// unset: `concurrency` (see [`WorkerConfig::prefetch`]).
    pub prefetch: Option<u16>,
    /// Deliveries running at once.
    pub concurrency: usize,
    /// How long SIGTERM waits for in-flight deliveries before closing.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// How often the worker reads the work, retry and dead queue depths for
    /// `sluice_worker_queue_depth` (one passive declare per queue).
    #[serde(with = "humantime_serde")]
    pub queue_depth_interval: Duration,
    /// Threads running deliveries and `dlq` commands: 1 runs everything on
    /// one thread (the fewest wake-ups between threads), 0 one per core.
    pub threads: usize,
}

impl WorkerConfig {
    /// `prefetch`, or `concurrency` when unset: messages pushed beyond what
    /// runs at once only wait, unacked, inside one worker while others
    /// idle, and count towards RabbitMQ's `consumer_timeout` from the moment
    /// they arrive.
    pub fn prefetch(&self) -> u16 {
        self.prefetch
            .unwrap_or_else(|| u16::try_from(self.concurrency).unwrap_or(u16::MAX))
    }
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            admin_listen: ([127, 0, 0, 1], 9081).into(),
            prefetch: None,
            concurrency: 32,
            shutdown_grace: Duration::from_secs(30),
            queue_depth_interval: Duration::from_secs(5),
            threads: 1,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// `json` (one object a line, for collectors) or `pretty` (for a terminal).
    pub log_format: LogFormat,
    /// A tracing filter such as `info` or `sluice_gateway=debug`; `RUST_LOG` wins.
    pub log_level: String,
    /// The key of the digests logs carry instead of event ids
    /// ([`crate::id_digest`]), an `env:`/`file:` reference read at load;
    /// give the gateway and the worker the same one. Unset: each process
    /// draws its own, so digests cannot be matched across processes.
    pub id_digest_key: Option<IdDigestKey>,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            log_format: LogFormat::Json,
            log_level: "info".into(),
            id_digest_key: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    Json,
    Pretty,
}

/// A configuration that cannot be used, with the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Load(Box<figment::Error>),
    #[error("config key `{key}`: {problem}")]
    Invalid { key: String, problem: String },
}

impl ConfigError {
    pub fn invalid(key: impl Into<String>, problem: impl Into<String>) -> Self {
        Self::Invalid {
            key: key.into(),
            problem: problem.into(),
        }
    }
}

impl Config {
    /// Loads defaults, then `path` (if given), then `SLUICE_*` variables, and validates.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::new();
        if let Some(path) = path {
            if !path.exists() {
                return Err(ConfigError::invalid(
                    "--config",
                    format!("file {} does not exist", path.display()),
                ));
            }
            figment = figment.merge(Toml::file(path));
        }
        // Only nested names are config keys (`SLUICE_GATEWAY__LISTEN`): every
        // top-level key is a table, so `SLUICE_CONFIG` or a secret such as
        // `SLUICE_DEMO_WHATZME_SECRET` is left alone.
        let env = Env::prefixed("SLUICE_")
            .filter(|key| key.as_str().contains("__"))
            .split("__");
        let figment = figment.merge(env);
        cluster::refuse_both_urls(&figment)?;
        let config: Config = figment
            .extract()
            .map_err(|e| ConfigError::Load(Box::new(e)))?;
        let config = config.resolve_urls()?;
        config.validate()?;
        Ok(config)
    }

    /// Parses a TOML document without the environment layer (for tests and tools).
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let figment = Figment::from(Toml::string(text));
        cluster::refuse_both_urls(&figment)?;
        let config: Config = figment
            .extract()
            .map_err(|e| ConfigError::Load(Box::new(e)))?;
        let config = config.resolve_urls()?;
        config.validate()?;
        Ok(config)
    }

    /// Reads the broker URLs written as secret references.
    fn resolve_urls(mut self) -> Result<Self, ConfigError> {
        brokers::resolve_url("redis.url", &mut self.redis.url)?;
        brokers::resolve_url("amqp.url", &mut self.amqp.url)?;
        cluster::resolve_amqp_nodes(&mut self.amqp)?;
        cluster::resolve_redis_lists(&mut self.redis)?;
        Ok(self)
    }

    /// Checks what the types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let g = &self.gateway;
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
        edge::validate_limits(&g.limits)?;
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
        if self.worker.queue_depth_interval < Duration::from_millis(100) {
            return Err(ConfigError::invalid(
                "worker.queue_depth_interval",
                "must be at least 100ms: each poll asks RabbitMQ about every queue",
            ));
        }
        if self.worker.concurrency == 0 || self.worker.prefetch == Some(0) {
            return Err(ConfigError::invalid(
                "worker.concurrency / worker.prefetch",
                "must be at least 1",
            ));
        }
        if self.amqp.retry_delays.iter().any(Duration::is_zero) {
            return Err(ConfigError::invalid(
                "amqp.retry_delays",
                "a delay of 0 would loop at once",
            ));
        }
        if self.amqp.retry_delays.windows(2).any(|w| w[0] >= w[1]) {
            return Err(ConfigError::invalid(
                "amqp.retry_delays",
                "delays must grow strictly, e.g. [\"1s\", \"5s\", \"25s\"]: each names its own queue",
            ));
        }
        if self.amqp.delivery_limit == 0 {
            return Err(ConfigError::invalid(
                "amqp.delivery_limit",
                "must be at least 1",
            ));
        }
        brokers::validate_redis(&self.redis)?;
        cluster::validate_redis_mode(&self.redis)?;
        brokers::validate_amqp(&self.amqp)?;
        if !is_name(&self.amqp.prefix, ".") {
            return Err(ConfigError::invalid(
                "amqp.prefix",
                "use letters, digits, '-', '_' and '.' only",
            ));
        }
        for (name, source) in &self.sources {
            source::validate(name, source)?;
        }
        for (index, route) in self.routes.iter().enumerate() {
            route::validate(index, route)?;
        }
        dlq::validate(&self.dlq)?;
        Ok(())
    }
}

/// Names that become parts of routing keys, Redis keys and metric labels.
pub(crate) fn is_name(text: &str, extra: &str) -> bool {
    !text.is_empty()
        && text.len() <= 64
        && text.chars().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || "-_".contains(c) || extra.contains(c)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOURCE: &str = r#"
        [sources.whatzme]
        scheme = "hmac-sha256"
        secrets = ["env:WHATZME_SECRET"]
        prefix = "sha256="
        id_pointer = "/messages/0/key/id"
        type_pointer = "/event"
    "#;

    #[test]
    #[allow(
        clippy::result_large_err,
        reason = "figment's Jail fixes the closure's error type"
    )]
    fn environment_variables_override_the_file_and_plain_ones_are_ignored() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("s.toml", "[gateway]\nack_budget = \"1s\"\nbody_limit = 10")?;
            jail.set_env("SLUICE_GATEWAY__ACK_BUDGET", "700ms");
            jail.set_env("SLUICE_DEMO_SECRET", "not a key");
            let config = Config::load(Some(Path::new("s.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(config.gateway.ack_budget, Duration::from_millis(700));
            assert_eq!(config.gateway.body_limit, 10);
            Ok(())
        });
    }

    #[test]
    fn an_empty_file_gives_the_documented_defaults() {
        let config = Config::from_toml("").unwrap();
        assert_eq!(config.gateway.ack_budget, Duration::from_millis(1500));
        assert_eq!(config.gateway.body_limit, 4 * 1024 * 1024);
        assert_eq!(config.gateway.max_events_per_request, 5_000);
        assert_eq!(config.gateway.shutdown_grace, Duration::from_secs(5));
        assert!(
            config.redis.read_old_form_keys,
            "old-form keys count after an upgrade"
        );
        assert!(config.telemetry.id_digest_key.is_none());
        assert_eq!(config.gateway.max_fan_out_bytes(), 16 * 1024 * 1024);
        assert_eq!(config.amqp.retry_delays.len(), 6);
        assert_eq!(config.amqp.retry_delays[5], Duration::from_secs(3600));
    }

    #[test]
    fn prefetch_defaults_to_concurrency() {
        let config = Config::from_toml("[worker]\nconcurrency = 12").unwrap();
        assert_eq!(config.worker.prefetch(), 12);
        assert_eq!(Config::from_toml("").unwrap().worker.prefetch(), 32);
        let config = Config::from_toml("[worker]\nconcurrency = 12\nprefetch = 40").unwrap();
        assert_eq!(config.worker.prefetch(), 40, "a prefetch set is kept");
        let config = Config::from_toml("[worker]\nconcurrency = 100000").unwrap();
        assert_eq!(config.worker.prefetch(), u16::MAX);
    }

    #[test]
    fn a_source_reads_with_its_defaults() {
        let config = Config::from_toml(SOURCE).unwrap();
        let source = &config.sources["whatzme"];
        assert_eq!(source.header, "X-Signature");
        assert_eq!(source.dedup_ttl, Duration::from_secs(604_800));
        assert_eq!(source.encoding, DigestEncoding::Hex);
    }

    #[test]
    fn an_unknown_scheme_names_its_key() {
        let err = Config::from_toml(&SOURCE.replace("hmac-sha256", "md5")).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("md5") && text.contains("scheme"), "{text}");
    }

    #[test]
    fn an_unknown_key_is_an_error_not_a_default() {
        let err = Config::from_toml("[gateway]\nack_budgett = \"1s\"").unwrap_err();
        assert!(err.to_string().contains("ack_budgett"), "{err}");
    }

    #[test]
    fn a_budget_of_two_seconds_or_more_is_refused() {
        let err = Config::from_toml("[gateway]\nack_budget = \"2s\"").unwrap_err();
        assert!(err.to_string().contains("gateway.ack_budget"), "{err}");
    }

    #[test]
    fn an_id_digest_key_that_cannot_be_read_names_the_key_and_the_variable() {
        let toml = "[telemetry]\nid_digest_key = \"env:SLUICE_TEST_SURELY_UNSET_DIGEST_KEY\"";
        let err = Config::from_toml(toml).unwrap_err().to_string();
        assert!(err.contains("telemetry.id_digest_key"), "{err}");
        assert!(err.contains("SLUICE_TEST_SURELY_UNSET_DIGEST_KEY"), "{err}");
        let err = Config::from_toml("[telemetry]\nid_digest_key = \"hunter2\"").unwrap_err();
        assert!(!err.to_string().contains("hunter2 "), "{err}");
    }

    #[test]
    fn no_events_per_request_is_refused_naming_the_key() {
        let err = Config::from_toml("[gateway]\nmax_events_per_request = 0").unwrap_err();
        assert!(
            err.to_string().contains("gateway.max_events_per_request"),
            "{err}"
        );
    }

    #[test]
    fn retry_delays_that_do_not_grow_are_refused() {
        let err = Config::from_toml("[amqp]\nretry_delays = [\"5s\", \"1s\"]").unwrap_err();
        assert!(err.to_string().contains("amqp.retry_delays"), "{err}");
    }

    #[test]
    fn an_http_route_without_a_secret_is_refused() {
        let text = "[[routes]]\nname = \"crm\"\nmatch = [\"*\"]\nhandler = \"http\"\nurl = \"http://127.0.0.1:1/\"";
        let err = Config::from_toml(text).unwrap_err();
        assert!(err.to_string().contains("routes[0] (crm).secret"), "{err}");
    }

    #[test]
    fn a_source_name_with_a_dot_is_refused() {
        let err =
            Config::from_toml(&SOURCE.replace("sources.whatzme", "sources.\"a.b\"")).unwrap_err();
        assert!(err.to_string().contains("sources.a.b"), "{err}");
    }
}
