//! `[dlq]`: the dead-letter-queue operator commands' settings.
//!
//! The `sluice-worker dlq ...` commands need nothing beyond `[amqp]`; this
//! table only switches on the same operations over HTTP on the worker's admin
//! port, which is off by default because replay and purge change the queue.

use serde::Deserialize;

use super::ConfigError;
use super::secrets::ConfigSecret;
use crate::secret::SecretRef;

/// Settings of the dead-letter-queue operations.
#[derive(Debug, Clone)]
pub struct DlqConfig {
    /// The HTTP API (`/dlq/...`) on `worker.admin_listen`: present only when
    /// `dlq.http.enabled`, and then always with its token.
    pub http: Option<DlqHttpConfig>,
    /// Messages one consumer of a `dlq` pass holds (its prefetch), from 1 to
    /// 65,535: a pass over more uses one channel per batch. Larger batches
    /// mean fewer channels, smaller ones less memory read ahead.
    pub scan_batch: u16,
}

/// The default `dlq.scan_batch`.
pub const DEFAULT_SCAN_BATCH: u16 = 20_000;

impl Default for DlqConfig {
    fn default() -> Self {
        Self {
            http: None,
            scan_batch: DEFAULT_SCAN_BATCH,
        }
    }
}

/// `[dlq.http]` with `enabled = true`: the HTTP API beside `/metrics` on the
/// worker's admin port, serving `/dlq/stats`, `/dlq/peek`, `/dlq/export`,
/// `/dlq/replay` and `/dlq/purge`.
#[derive(Debug, Clone)]
pub struct DlqHttpConfig {
    /// The bearer token every `/dlq` request must present
    /// (`Authorization: Bearer ...`), `dlq.http.token`.
    pub token: ConfigSecret,
}

/// `[dlq]` as the file writes it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct DlqFile {
    http: DlqHttpFile,
    scan_batch: u16,
}

impl Default for DlqFile {
    fn default() -> Self {
        Self {
            http: DlqHttpFile::default(),
            scan_batch: DEFAULT_SCAN_BATCH,
        }
    }
}

/// `[dlq.http]` as the file writes it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct DlqHttpFile {
    /// Off by default.
    enabled: bool,
    /// `env:NAME` or `file:/path`; required when `enabled`.
    token: Option<SecretRef>,
}

impl DlqFile {
    pub(super) fn into_config(self) -> Result<DlqConfig, ConfigError> {
        if self.scan_batch == 0 {
            return Err(ConfigError::invalid(
                "dlq.scan_batch",
                "a batch holds at least 1 message: give 1 to 65535 (default 20000)",
            ));
        }
        let http = match (self.http.enabled, self.http.token) {
            (false, _) => None,
            (true, Some(token)) => Some(DlqHttpConfig {
                token: ConfigSecret::new("dlq.http.token", token),
            }),
            (true, None) => {
                return Err(ConfigError::invalid(
                    "dlq.http.token",
                    "the /dlq API replays and purges events: set token = \"env:NAME\" (or \"file:/path\") \
                     when dlq.http.enabled is true",
                ));
            }
        };
        Ok(DlqConfig {
            http,
            scan_batch: self.scan_batch,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use crate::secret::SecretRef;

    #[test]
    fn the_http_api_is_off_by_default() {
        let config = Config::from_toml("").unwrap();
        assert!(config.dlq.http.is_none());
        let off = Config::from_toml("[dlq.http]\ntoken = \"env:DLQ_TOKEN\"").unwrap();
        assert!(
            off.dlq.http.is_none(),
            "a token alone does not switch it on"
        );
    }

    #[test]
    fn an_enabled_api_without_a_token_names_the_key() {
        let err = Config::from_toml("[dlq.http]\nenabled = true").unwrap_err();
        assert!(err.to_string().contains("dlq.http.token"), "{err}");
    }

    #[test]
    fn an_enabled_api_reads_its_token_reference() {
        let config =
            Config::from_toml("[dlq.http]\nenabled = true\ntoken = \"env:DLQ_TOKEN\"").unwrap();
        let http = config.dlq.http.expect("enabled");
        assert_eq!(http.token.reference(), &SecretRef::Env("DLQ_TOKEN".into()));
        assert_eq!(http.token.key(), "dlq.http.token");
    }

    #[test]
    fn the_scan_batch_defaults_and_refuses_zero() {
        let config = Config::from_toml("").unwrap();
        assert_eq!(config.dlq.scan_batch, super::DEFAULT_SCAN_BATCH);
        let err = Config::from_toml("[dlq]\nscan_batch = 0").unwrap_err();
        assert!(err.to_string().contains("dlq.scan_batch"), "{err}");
        assert!(Config::from_toml("[dlq]\nscan_batch = 70000").is_err());
    }

    #[test]
    fn an_unknown_dlq_key_is_an_error() {
        let err = Config::from_toml("[dlq.http]\nenable = true").unwrap_err();
        assert!(err.to_string().contains("enable"), "{err}");
    }
}
