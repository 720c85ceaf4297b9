//! Configuration: one TOML file, overridden by `SLUICE_*` environment variables.
//!
//! Layers, later wins: built-in defaults, the TOML file, then the environment
//! (`SLUICE_GATEWAY__ACK_BUDGET=1s` sets `gateway.ack_budget`; `__` nests).
//! Unknown keys are errors, so a typo never silently falls back to a default;
//! so is a key of a source whose scheme does not read it.
//!
//! [`Config::load`] reads and checks everything once, before a process
//! serves, and hands over parsed values: durations, [`RetryDelays`], header
//! names, URLs, one [`SourceScheme`] variant per scheme, a route's handler
//! with its URL and secret. Consumers use them as they are and never parse
//! or check a config string again. Secrets stay references
//! ([`ConfigSecret`], see [`crate::secret`]) until the binary that uses them
//! resolves them at start-up, naming the key if it cannot; the broker URLs
//! and the id digest key are read at load. Every error names the key and
//! what to do.

use std::collections::BTreeMap;

mod brokers;
mod cluster;
mod dlq;
mod durations;
mod edge;
mod error;
#[cfg(test)]
mod fuzz;
mod gateway;
mod load;
mod route;
mod secrets;
mod source;
mod source_file;
mod telemetry;
mod worker;

pub use brokers::{AmqpConfig, RedisConfig};
pub use cluster::RedisMode;
pub use dlq::{DEFAULT_SCAN_BATCH, DlqConfig, DlqHttpConfig};
pub use durations::{RetryDelays, RetryDelaysError};
pub use edge::{LimitsConfig, PARSER_HEAD_LIMIT, RateLimitConfig, TlsConfig, TrustedProxies};
pub use error::ConfigError;
pub use gateway::{FAN_OUT_BYTES_PER_BODY_BYTE, GatewayConfig, RedisErrorPolicy};
pub use route::{BreakerConfig, HandlerKind, HttpRoute, RouteConfig, RouteHandler};
pub use secrets::ConfigSecret;
pub use source::{
    ChallengeConfig, DigestEncoding, ExtractorKind, HmacScheme, SchemeKind, SourceConfig,
    SourceScheme, StandardWebhooksScheme, TokenConfig, TokenFormat, WhatsappCloudScheme,
};
pub use source_file::SCHEME_KEYS;
pub use telemetry::{LogFormat, TelemetryConfig};
pub use worker::WorkerConfig;

/// The exit code of a process whose configuration is wrong (`EX_CONFIG`... `EX_USAGE`).
pub const EXIT_BAD_CONFIG: i32 = 64;

/// The whole configuration, shared by both binaries, as [`Config::load`]
/// checked it.
#[derive(Debug, Clone)]
pub struct Config {
    /// The HTTP receiver.
    pub gateway: GatewayConfig,
    /// The delivering consumer.
    pub worker: WorkerConfig,
    /// Redis, used by the gateway for deduplication.
    pub redis: RedisConfig,
    /// RabbitMQ and the topology both binaries declare.
    pub amqp: AmqpConfig,
    /// Logging.
    pub telemetry: TelemetryConfig,
    /// Providers that may POST to `/webhooks/{name}`, by name.
    pub sources: BTreeMap<String, SourceConfig>,
    /// Where the worker delivers events: every route that matches gets its
    /// own copy, unless an `exclusive` route that matches ends the search.
    pub routes: Vec<RouteConfig>,
    /// The dead-letter-queue operations (`sluice-worker dlq`, `/dlq` over HTTP).
    pub dlq: DlqConfig,
}

/// Names that become parts of routing keys, Redis keys and metric labels.
pub(crate) fn is_name(text: &str, extra: &str) -> bool {
    !text.is_empty()
        && text.len() <= 64
        && text.chars().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || "-_".contains(c) || extra.contains(c)
        })
}
