//! The keys that spread Sluice's brokers over several machines: a RabbitMQ
//! cluster's nodes (`amqp.urls`, `amqp.quorum_initial_group_size`) and
//! Redis's `mode` (one server, a Sentinel-watched primary, or a Redis
//! Cluster). Lists are read like the single URLs: any entry may be an
//! `env:`/`file:` secret reference.

use figment::Figment;
use lapin::uri::AMQPUri;
use serde::Deserialize;

use super::ConfigError;
use super::brokers::{AmqpConfig, RedisConfig, resolve_url};
use crate::amqp::{AmqpNodes, redact_url};

/// How Redis is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RedisMode {
    /// One server at `redis.url`.
    #[default]
    Single,
    /// The primary the sentinels name; a failover is followed.
    Sentinel,
    /// A Redis Cluster found from `redis.nodes`; keys are spread by slot.
    Cluster,
}

/// `amqp.url` and `amqp.urls` together are a mistake: which one is meant?
pub(super) fn refuse_both_urls(figment: &Figment) -> Result<(), ConfigError> {
    if figment.find_value("amqp.url").is_ok() && figment.find_value("amqp.urls").is_ok() {
        return Err(ConfigError::invalid(
            "amqp.urls",
            "amqp.url and amqp.urls are both set: keep amqp.url for one node, \
             or list every node in amqp.urls and remove amqp.url",
        ));
    }
    Ok(())
}

/// Resolves `amqp.urls` (or `amqp.url`) into the nodes connects use.
pub(super) fn resolve_amqp_nodes(amqp: &mut AmqpConfig) -> Result<(), ConfigError> {
    if amqp.urls.is_empty() {
        amqp.nodes = AmqpNodes::single(amqp.url.clone());
        return Ok(());
    }
    for (index, url) in amqp.urls.iter_mut().enumerate() {
        let key = format!("amqp.urls[{index}]");
        resolve_url(&key, url)?;
        if let Err(problem) = url.parse::<AMQPUri>() {
            let problem = problem.replace(url.as_str(), &redact_url(url));
            return Err(ConfigError::invalid(
                key,
                format!("not an AMQP URL ({problem}): write amqp://user:pass@host:port/vhost"),
            ));
        }
    }
    amqp.url = amqp.urls[0].clone();
    amqp.nodes = AmqpNodes::shuffled(amqp.urls.clone())
        .ok_or_else(|| ConfigError::invalid("amqp.urls", "lists no node"))?;
    Ok(())
}

/// Resolves the secret references among `redis.sentinels` and `redis.nodes`.
pub(super) fn resolve_redis_lists(redis: &mut RedisConfig) -> Result<(), ConfigError> {
    for (list, name) in [
        (&mut redis.sentinels, "sentinels"),
        (&mut redis.nodes, "nodes"),
    ] {
        for (index, url) in list.iter_mut().enumerate() {
            resolve_url(&format!("redis.{name}[{index}]"), url)?;
        }
    }
    Ok(())
}

/// Checks that `redis.mode` has what it needs and nothing of another mode.
pub(super) fn validate_redis_mode(redis: &RedisConfig) -> Result<(), ConfigError> {
    let sentinel_keys = !redis.sentinels.is_empty() || redis.master_name.is_some();
    match redis.mode {
        RedisMode::Single if sentinel_keys || !redis.nodes.is_empty() => Err(ConfigError::invalid(
            "redis.mode",
            "is single (the default) but redis.sentinels, redis.master_name or redis.nodes \
             is set: set mode = \"sentinel\" or \"cluster\", or remove those keys",
        )),
        RedisMode::Sentinel if redis.sentinels.is_empty() || redis.master_name.is_none() => {
            Err(ConfigError::invalid(
                "redis.sentinels",
                "sentinel mode needs redis.sentinels (e.g. [\"redis://10.0.0.1:26379\"]) \
                 and redis.master_name (the name in `sentinel monitor`)",
            ))
        }
        RedisMode::Cluster if redis.nodes.is_empty() => Err(ConfigError::invalid(
            "redis.nodes",
            "cluster mode needs redis.nodes: one or more of the cluster's nodes, \
             e.g. [\"redis://10.0.0.1:6379\"]",
        )),
        RedisMode::Cluster if redis.key_prefix.contains(['{', '}']) => Err(ConfigError::invalid(
            "redis.key_prefix",
            "may not hold { or } in cluster mode: braces are Redis Cluster's hash tag, \
             which Sluice sets itself to spread the keys",
        )),
        RedisMode::Cluster if !redis.sentinels.is_empty() || redis.master_name.is_some() => {
            Err(ConfigError::invalid(
                "redis.sentinels",
                "is for sentinel mode; cluster mode reads only redis.nodes",
            ))
        }
        _ => Ok(()),
    }
}

impl AmqpConfig {
    /// The `x-quorum-initial-group-size` to declare: the configured size
    /// capped at the count of nodes, or `None` (argument left out) for one
    /// node or 0. The node count comes from the configuration, not from
    /// the nodes running now: a queue's arguments cannot change once it is
    /// declared, so the value must not depend on which nodes were up when
    /// a process started.
    pub fn quorum_group_size(&self) -> Option<u32> {
        let nodes = u32::try_from(self.nodes.len()).unwrap_or(u32::MAX);
        let wanted = self.quorum_initial_group_size;
        if nodes <= 1 || wanted == 0 {
            return None;
        }
        if wanted > nodes {
            tracing::warn!(
                wanted,
                nodes,
                "amqp.quorum_initial_group_size is more than the nodes in amqp.urls; \
                 each queue gets a copy on every node instead"
            );
        }
        Some(wanted.min(nodes))
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, RedisMode};

    #[test]
    fn url_and_urls_together_are_refused_by_name() {
        let toml = "[amqp]\nurl = \"amqp://a\"\nurls = [\"amqp://b\"]";
        let error = Config::from_toml(toml).expect_err("refused").to_string();
        assert!(error.contains("amqp.url and amqp.urls"), "{error}");
    }

    #[test]
    fn urls_become_shuffled_nodes_and_url_the_first() {
        let toml = "[amqp]\nurls = [\"amqp://u:p@h1:5672/%2f\", \"amqp://u:p@h2:5672/%2f\", \"amqp://u:p@h3:5672/%2f\"]";
        let config = Config::from_toml(toml).expect("loads");
        assert_eq!(config.amqp.nodes.len(), 3);
        assert_eq!(config.amqp.url, "amqp://u:p@h1:5672/%2f");
        assert_eq!(config.amqp.quorum_group_size(), Some(3));
        let single = Config::from_toml("").expect("loads");
        assert_eq!(single.amqp.nodes.len(), 1);
        assert_eq!(
            single.amqp.quorum_group_size(),
            None,
            "as before: no argument"
        );
    }

    #[test]
    fn the_group_size_is_capped_at_the_nodes() {
        let toml = "[amqp]\nquorum_initial_group_size = 5\nurls = [\"amqp://h1\", \"amqp://h2\"]";
        let config = Config::from_toml(toml).expect("loads");
        assert_eq!(config.amqp.quorum_group_size(), Some(2));
    }

    #[test]
    fn each_listed_url_may_be_a_secret_reference() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("node2");
        std::fs::write(&path, "amqp://u:s3cret@h2:5672/%2f\n").expect("file");
        let toml = format!(
            "[amqp]\nurls = [\"amqp://h1\", \"file:{}\"]",
            path.display()
        );
        let config = Config::from_toml(&toml).expect("loads");
        assert!(
            config
                .amqp
                .nodes
                .redacted()
                .contains("amqp://u:***@h2:5672/%2f")
        );
        let bad = Config::from_toml("[amqp]\nurls = [\"amqp://h1\", \"http://h2\"]");
        let error = bad.expect_err("refused").to_string();
        assert!(error.contains("amqp.urls[1]"), "{error}");
    }

    #[test]
    fn each_redis_mode_needs_its_own_keys() {
        let sentinel =
            "[redis]\nmode = \"sentinel\"\nmaster_name = \"m\"\nsentinels = [\"redis://h:26379\"]";
        let config = Config::from_toml(sentinel).expect("loads");
        assert_eq!(config.redis.mode, RedisMode::Sentinel);
        for (bad, key) in [
            (
                "[redis]\nmode = \"sentinel\"\nmaster_name = \"m\"",
                "redis.sentinels",
            ),
            ("[redis]\nmode = \"cluster\"", "redis.nodes"),
            ("[redis]\nnodes = [\"redis://h:7000\"]", "redis.mode"),
        ] {
            let error = Config::from_toml(bad).expect_err(bad).to_string();
            assert!(error.contains(key), "{bad}: {error}");
        }
    }
}
