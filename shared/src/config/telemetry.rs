//! `[telemetry]`: log format and level, and the key of the id digests logs carry.

use serde::Deserialize;

use crate::id_digest::IdDigestKey;

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
