//! [`Config::load`]: the layers read into the file's form, then checked and
//! turned into a [`Config`] in one pass.

use std::collections::BTreeMap;
use std::path::Path;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::Deserialize;

use super::dlq::DlqFile;
use super::route::RouteFile;
use super::source_file::SourceFile;
use super::{
    AmqpConfig, Config, ConfigError, GatewayConfig, RedisConfig, RouteConfig, TelemetryConfig,
    WorkerConfig,
};
use super::{brokers, cluster, gateway, worker};
use crate::ordering::CONSUMER_TIMEOUT;

/// The file (and environment) as written: tables whose values need more
/// than their types hold here in their written form, read into [`Config`]
/// by [`ConfigFile::into_config`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    gateway: GatewayConfig,
    #[serde(default)]
    worker: WorkerConfig,
    #[serde(default)]
    redis: RedisConfig,
    #[serde(default)]
    amqp: AmqpConfig,
    #[serde(default)]
    telemetry: TelemetryConfig,
    #[serde(default)]
    sources: BTreeMap<String, SourceFile>,
    #[serde(default)]
    routes: Vec<RouteFile>,
    #[serde(default)]
    dlq: DlqFile,
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
        Self::from_figment(figment.merge(env))
    }

    /// Parses a TOML document without the environment layer (for tests and tools).
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        Self::from_figment(Figment::from(Toml::string(text)))
    }

    fn from_figment(figment: Figment) -> Result<Self, ConfigError> {
        cluster::refuse_both_urls(&figment)?;
        let file: ConfigFile = figment
            .extract()
            .map_err(|e| ConfigError::Load(Box::new(e)))?;
        file.into_config()
    }
}

impl ConfigFile {
    /// Reads the broker URLs written as secret references, checks what the
    /// types alone cannot, and builds each source, route and the dlq API.
    fn into_config(mut self) -> Result<Config, ConfigError> {
        brokers::resolve_url("redis.url", &mut self.redis.url)?;
        brokers::resolve_url("amqp.url", &mut self.amqp.url)?;
        cluster::resolve_amqp_nodes(&mut self.amqp)?;
        cluster::resolve_redis_lists(&mut self.redis)?;
        gateway::validate(&self.gateway)?;
        worker::validate(&self.worker)?;
        brokers::validate_redis(&self.redis)?;
        cluster::validate_redis_mode(&self.redis)?;
        brokers::validate_amqp(&self.amqp)?;
        let sources = self
            .sources
            .into_iter()
            .map(|(name, source)| {
                let source = source.into_config(&name)?;
                Ok((name, source))
            })
            .collect::<Result<_, ConfigError>>()?;
        let routes: Vec<RouteConfig> = self
            .routes
            .into_iter()
            .enumerate()
            .map(|(index, route)| route.into_config(index, self.worker.concurrency))
            .collect::<Result<_, _>>()?;
        // A route's copy of an event names its route (`x-sluice-route`):
        // two routes of one name could not be told apart.
        for (index, route) in routes.iter().enumerate() {
            if routes[..index].iter().any(|r| r.name == route.name) {
                return Err(ConfigError::invalid(
                    format!("routes[{index}] ({}).name", route.name),
                    "another route has this name; give each route a name of its own",
                ));
            }
        }
        check_hold_limit(&self.worker, &routes)?;
        Ok(Config {
            gateway: self.gateway,
            worker: self.worker,
            redis: self.redis,
            amqp: self.amqp,
            telemetry: self.telemetry,
            sources,
            routes,
            dlq: self.dlq.into_config()?,
        })
    }
}

/// An ordered route's message is held unacknowledged for up to
/// `worker.ordered_hold_limit` plus one attempt that started just before it
/// ran out: together they must stay under RabbitMQ's `consumer_timeout`.
fn check_hold_limit(worker: &WorkerConfig, routes: &[RouteConfig]) -> Result<(), ConfigError> {
    let hold = worker.ordered_hold_limit;
    for route in routes.iter().filter(|route| route.ordered.is_some()) {
        if hold.saturating_add(route.timeout) >= CONSUMER_TIMEOUT {
            return Err(ConfigError::invalid(
                "worker.ordered_hold_limit",
                format!(
                    "{} plus route {}'s timeout of {} reaches RabbitMQ's default \
                     consumer_timeout of 30m, which would close the channel of a partition \
                     holding a stuck key: lower one of them",
                    humantime::format_duration(hold),
                    route.name,
                    humantime::format_duration(route.timeout),
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::*;

    #[test]
    fn two_routes_of_one_name_are_refused() {
        let route = "[[routes]]\nname = \"crm\"\nmatch = [\"*\"]\nhandler = \"log\"\n";
        let error = Config::from_toml(&format!("{route}{route}"))
            .expect_err("one name, two routes")
            .to_string();
        assert!(error.contains("routes[1] (crm).name"), "{error}");
    }

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
}
