//! `[redis]` and `[amqp]`: where the brokers are and how they are used.
//! Either URL may be a secret reference, `env:NAME` or `file:/path` (as
//! Docker and Kubernetes mount secrets), so its password need not sit in the
//! config file; any other value is the URL itself.

use std::time::Duration;

use serde::{Deserialize, Deserializer};
use url::Url;

use super::cluster::RedisMode;
use super::durations::RetryDelays;
use super::route::parse_http_url;
use super::{ConfigError, is_name};
use crate::amqp::AmqpNodes;
use crate::secret::SecretRef;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// `redis://host:port/db`. In `sentinel` mode only its user, password
    /// and db are used (for the primary the sentinels name).
    pub url: String,
    /// `single` (`url`), `sentinel` (`sentinels` + `master_name`) or
    /// `cluster` (`nodes`).
    pub mode: RedisMode,
    /// Sentinel mode: the sentinels, `redis://host:26379` each (`env:`/`file:` allowed).
    pub sentinels: Vec<String>,
    /// Sentinel mode: the name the sentinels monitor the primary under.
    pub master_name: Option<String>,
    /// Cluster mode: seed nodes, `redis://[:password@]host:port` each
    /// (`env:`/`file:` allowed); the rest of the cluster is discovered.
    pub nodes: Vec<String>,
    /// Dedup keys are `{key_prefix}:{source}:{digest of the event id}`.
    pub key_prefix: String,
    /// Whether a claim also reads each event's key of the old form,
    /// `{key_prefix}:{source}:{event id}`, written before ids were digested:
    /// needed until the longest `dedup_ttl` has passed since the upgrade,
    /// after which `false` keeps ids out of Redis's commands too.
    pub read_old_form_keys: bool,
    /// Limit on every Redis call; past it the `on_redis_error` policy applies.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Life of a `pending` key: long enough to cover a publish, short enough
    /// that a crashed gateway's keys free themselves for the provider's retry.
    #[serde(with = "humantime_serde")]
    pub pending_ttl: Duration,
    /// Calls in a row that time out before the connection is replaced by a
    /// new one: a connection whose peer vanished silently never recovers
    /// by itself. (`READONLY`, a demoted primary, replaces it at once.)
    pub reconnect_after_timeouts: u32,
    /// TCP keepalive of the Redis sockets: probes after this long idle,
    /// then every this long, and `TCP_USER_TIMEOUT` of three times it.
    #[serde(with = "humantime_serde")]
    pub tcp_keepalive: Duration,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".into(),
            mode: RedisMode::Single,
            sentinels: Vec::new(),
            master_name: None,
            nodes: Vec::new(),
            key_prefix: "sluice:dedup".into(),
            read_old_form_keys: true,
            timeout: Duration::from_millis(250),
            pending_ttl: Duration::from_secs(30),
            reconnect_after_timeouts: 3,
            tcp_keepalive: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AmqpConfig {
    /// `amqp://user:pass@host:port/vhost` (`%2f` is the default vhost).
    /// With `urls` given it is set, at load, to the first of them.
    pub url: String,
    /// The nodes of a RabbitMQ cluster, instead of `url` (never both):
    /// connections go to the first that answers, in an order shuffled per
    /// process, and move to the next node when theirs is lost.
    pub urls: Vec<String>,
    /// `x-quorum-initial-group-size` of every queue: how many nodes hold a
    /// copy. Capped at the cluster's size (the count of `urls`, or of the
    /// members the management API lists); a one-node setup leaves the
    /// argument out, as before it existed. 0: never declared.
    pub quorum_initial_group_size: u32,
    /// `url` or `urls`, resolved and shuffled at load: what connects use
    /// (so changing `url` after load changes nothing; load a new config).
    #[serde(skip)]
    pub nodes: AmqpNodes,
    /// Every exchange and queue name starts with this.
    pub prefix: String,
    /// Delays of the retry tiers, in order; an event is dead after the last.
    pub retry_delays: RetryDelays,
    /// `x-delivery-limit` of the work queue: a message that crashes workers
    /// this many times goes to the dead queue instead of looping.
    pub delivery_limit: u32,
    /// Limit on connecting and on declaring the topology.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// AMQP heartbeat asked of the broker (whole seconds): a connection
    /// silent for two of them is closed, so a broker cut off without a
    /// word (a dropped route, a frozen VM) is noticed within twice this.
    /// It wins over a `heartbeat=` in `url`.
    #[serde(with = "humantime_serde")]
    pub heartbeat: Duration,
    /// The broker's management API (`http://host:15672`), where the worker
    /// checks at start that at-least-once dead-lettering is in force (the
    /// `stream_queue` feature flag); signs in as `url`'s user. Unset: not
    /// checked (the worker says so at start).
    #[serde(deserialize_with = "management_url")]
    pub management_url: Option<Url>,
}

impl Default for AmqpConfig {
    fn default() -> Self {
        Self {
            url: "amqp://guest:guest@127.0.0.1:5672/%2f".into(),
            urls: Vec::new(),
            quorum_initial_group_size: 3,
            nodes: AmqpNodes::default(),
            prefix: "sluice".into(),
            retry_delays: RetryDelays::default(),
            delivery_limit: 10,
            connect_timeout: Duration::from_secs(5),
            heartbeat: Duration::from_secs(10),
            management_url: None,
        }
    }
}

/// Checks `[redis]` beyond its types.
pub(super) fn validate_redis(redis: &RedisConfig) -> Result<(), ConfigError> {
    if redis.reconnect_after_timeouts == 0 {
        return Err(ConfigError::invalid(
            "redis.reconnect_after_timeouts",
            "must be at least 1 (3: a connection is replaced after three calls in a row time out)",
        ));
    }
    if redis.tcp_keepalive < Duration::from_secs(1) {
        return Err(ConfigError::invalid(
            "redis.tcp_keepalive",
            "must be at least 1s (the kernel counts keepalive in seconds)",
        ));
    }
    Ok(())
}

/// Checks `[amqp]` beyond its types.
pub(super) fn validate_amqp(amqp: &AmqpConfig) -> Result<(), ConfigError> {
    let seconds = amqp.heartbeat.as_secs();
    if amqp.heartbeat.subsec_nanos() != 0 || !(1..=u64::from(u16::MAX)).contains(&seconds) {
        return Err(ConfigError::invalid(
            "amqp.heartbeat",
            "must be whole seconds from 1s to 65535s (AMQP counts it in seconds); \
             10s notices a silent broker within 20s",
        ));
    }
    if amqp.delivery_limit == 0 {
        return Err(ConfigError::invalid(
            "amqp.delivery_limit",
            "must be at least 1",
        ));
    }
    if !is_name(&amqp.prefix, ".") {
        return Err(ConfigError::invalid(
            "amqp.prefix",
            "use letters, digits, '-', '_' and '.' only",
        ));
    }
    Ok(())
}

/// `amqp.management_url`, parsed once as it is read.
fn management_url<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Url>, D::Error> {
    let Some(text) = Option::<String>::deserialize(deserializer)? else {
        return Ok(None);
    };
    parse_http_url(&text).map(Some).map_err(|problem| {
        serde::de::Error::custom(format!(
            "{problem}: give the management API's address, e.g. http://127.0.0.1:15672"
        ))
    })
}

/// Reads a URL written as `env:NAME` or `file:/path`; leaves any other value as it is.
pub(super) fn resolve_url(key: &str, url: &mut String) -> Result<(), ConfigError> {
    if !url.starts_with("env:") && !url.starts_with("file:") {
        return Ok(());
    }
    let secret = SecretRef::parse(url)
        .and_then(|reference| reference.resolve().map_err(|e| e.to_string()))
        .map_err(|problem| ConfigError::invalid(key, problem))?;
    *url = secret.expose().to_owned();
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    #[test]
    fn a_url_is_read_from_a_file_without_its_newline() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("redis-url");
        std::fs::write(&path, "redis://:s3cret@127.0.0.1:6379/0\n").expect("file");
        let toml = format!("[redis]\nurl = \"file:{}\"", path.display());
        let config = Config::from_toml(&toml).expect("loads");
        assert_eq!(config.redis.url, "redis://:s3cret@127.0.0.1:6379/0");
    }

    #[test]
    fn an_unset_variable_names_the_key_and_the_variable() {
        let toml = "[amqp]\nurl = \"env:SLUICE_TEST_SURELY_UNSET_AMQP_URL\"";
        let error = Config::from_toml(toml).expect_err("refused").to_string();
        assert!(error.contains("amqp.url"), "{error}");
        assert!(
            error.contains("SLUICE_TEST_SURELY_UNSET_AMQP_URL"),
            "{error}"
        );
    }

    #[test]
    fn the_heartbeat_defaults_to_ten_seconds_and_must_be_whole_seconds() {
        let config = Config::from_toml("").expect("loads");
        assert_eq!(config.amqp.heartbeat, std::time::Duration::from_secs(10));
        for bad in ["0s", "1500ms", "70000s"] {
            let error = Config::from_toml(&format!("[amqp]\nheartbeat = \"{bad}\""))
                .expect_err("refused")
                .to_string();
            assert!(error.contains("amqp.heartbeat"), "{bad}: {error}");
        }
    }

    #[test]
    fn a_management_url_must_be_http() {
        let error = Config::from_toml("[amqp]\nmanagement_url = \"127.0.0.1:15672\"")
            .expect_err("refused")
            .to_string();
        assert!(error.contains("amqp.management_url"), "{error}");
        let config = Config::from_toml("[amqp]\nmanagement_url = \"http://127.0.0.1:15672\"");
        assert!(config.is_ok());
    }

    #[test]
    fn a_plain_url_is_kept_as_written() {
        let config =
            Config::from_toml("[amqp]\nurl = \"amqp://u:p@127.0.0.1:5672/%2f\"").expect("loads");
        assert_eq!(config.amqp.url, "amqp://u:p@127.0.0.1:5672/%2f");
    }
}
