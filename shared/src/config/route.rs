//! `[[routes]]`: where the worker delivers events, read from the file's form
//! into a [`RouteConfig`] whose handler holds what it needs, parsed, with
//! its limits (`concurrency`, `rate`) and its circuit breaker.

use std::time::Duration;

use serde::Deserialize;
use url::Url;

use super::edge::{RateLimitConfig, validate_rate_limit};
use super::secrets::ConfigSecret;
use super::{ConfigError, is_name};
use crate::glob::Glob;
use crate::ordering::{DEFAULT_PARTITION_PREFETCH, DEFAULT_PARTITIONS, MAX_PARTITIONS, OrderedBy};
use crate::secret::SecretRef;

/// Where the worker delivers events that match.
#[derive(Debug, Clone)]
pub struct RouteConfig {
    /// Names the route in logs and metrics.
    pub name: String,
    /// Globs over `<source>.<type>`, e.g. `whatzme.*` or `whatsapp.message.*`.
    pub patterns: Vec<Glob>,
    /// What delivering means.
    pub handler: RouteHandler,
    /// Limit on one delivery attempt.
    pub timeout: Duration,
    /// A match takes the event alone: routes after this one are not
    /// tried (those before it that matched still get their copy). Off by
    /// default: every matching route gets the event.
    pub exclusive: bool,
    /// `ordered_by`: the route delivers the events of one key in the order
    /// the gateway accepted them, through partition queues the gateway
    /// feeds ([`crate::ordering`]). None: any order, through the work queue.
    pub ordered: Option<OrderedBy>,
    /// Deliveries to this route running at once in one worker (and the
    /// prefetch of its queue's consumer): `concurrency`, else `worker.concurrency`.
    pub concurrency: u16,
    /// Delivery attempts per second, with a burst; none: no limit.
    pub rate: Option<RateLimitConfig>,
    /// When to stop sending to the route and hold its events.
    pub breaker: BreakerConfig,
}

/// `[routes.breaker]`: after `failures` unhealthy failures in a row the
/// worker stops sending to the route (its events wait in the route's
/// queue, attempts untouched), then probes it with one delivery after
/// `probe_after`, doubling up to `probe_max` while the probes fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    /// Off: every event is attempted whatever the route answers.
    pub enabled: bool,
    /// Unhealthy failures in a row (a timeout, a connection error, 408,
    /// 425, 429, 5xx) that open the breaker; any other answer resets the count.
    pub failures: u32,
    /// The first wait before a probe.
    #[serde(with = "humantime_serde")]
    pub probe_after: Duration,
    /// The longest wait between probes.
    #[serde(with = "humantime_serde")]
    pub probe_max: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            failures: 5,
            probe_after: Duration::from_secs(5),
            probe_max: Duration::from_secs(300),
        }
    }
}

impl BreakerConfig {
    fn validate(&self, key: impl Fn(&str) -> String) -> Result<(), ConfigError> {
        if self.failures == 0 {
            return Err(ConfigError::invalid(
                key("breaker.failures"),
                "must be at least 1 (to never open the breaker, set breaker.enabled = false)",
            ));
        }
        if self.probe_after.is_zero() {
            return Err(ConfigError::invalid(
                key("breaker.probe_after"),
                "must be above 0, e.g. \"5s\"",
            ));
        }
        if self.probe_max < self.probe_after {
            return Err(ConfigError::invalid(
                key("breaker.probe_max"),
                "must be at least breaker.probe_after: the wait between probes grows from one to the other",
            ));
        }
        Ok(())
    }
}

/// What delivering means, with what it needs.
#[derive(Debug, Clone)]
pub enum RouteHandler {
    /// POST the CloudEvents envelope, signed.
    Http(HttpRoute),
    /// Log the event's id and type (never its data) and acknowledge.
    Log,
}

/// `handler = "http"`: where to POST and what to sign with.
#[derive(Debug, Clone)]
pub struct HttpRoute {
    /// An `http://` or `https://` URL.
    pub url: Url,
    /// The `whsec_...` secret deliveries are signed with (Standard
    /// Webhooks); the worker reads it at start ([`ConfigSecret::signing_key`]).
    pub secret: ConfigSecret,
}

/// The `handler` key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HandlerKind {
    /// POST the CloudEvents envelope, signed, to `url`.
    Http,
    /// Log the event's id and type (never its data) and acknowledge.
    Log,
}

/// A route as the file writes it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RouteFile {
    name: String,
    #[serde(rename = "match")]
    patterns: Vec<String>,
    handler: HandlerKind,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    secret: Option<SecretRef>,
    #[serde(default = "default_delivery_timeout", with = "humantime_serde")]
    timeout: Duration,
    #[serde(default)]
    exclusive: bool,
    #[serde(default)]
    ordered_by: Option<Pointers>,
    #[serde(default)]
    partitions: Option<u16>,
    #[serde(default)]
    partition_prefetch: Option<u16>,
    #[serde(default)]
    concurrency: Option<usize>,
    #[serde(default)]
    rate: Option<RateLimitConfig>,
    #[serde(default)]
    breaker: Option<BreakerConfig>,
}

/// `ordered_by`: one JSON pointer, or several tried in turn.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Pointers {
    One(String),
    Several(Vec<String>),
}

fn default_delivery_timeout() -> Duration {
    Duration::from_secs(10)
}

impl RouteFile {
    /// Checks the route at `index` and gives its handler what it needs;
    /// `concurrency` unset is `default_concurrency` (`worker.concurrency`).
    pub(super) fn into_config(
        mut self,
        index: usize,
        default_concurrency: usize,
    ) -> Result<RouteConfig, ConfigError> {
        let key = |field: &str| format!("routes[{index}] ({}).{field}", self.name);
        if !is_name(&self.name, "") {
            return Err(ConfigError::invalid(
                key("name"),
                "1 to 64 of a-z, 0-9, '-' and '_'",
            ));
        }
        if self.patterns.is_empty() {
            return Err(ConfigError::invalid(
                key("match"),
                "list at least one glob, e.g. \"whatzme.*\"",
            ));
        }
        let handler = match self.handler {
            HandlerKind::Log => {
                // Ignoring them would hide a route meant to deliver.
                for (name, given) in [
                    ("url", self.url.is_some()),
                    ("secret", self.secret.is_some()),
                ] {
                    if given {
                        return Err(ConfigError::invalid(
                            key(name),
                            "the log handler delivers nowhere and would ignore it: remove it, or set handler = \"http\"",
                        ));
                    }
                }
                RouteHandler::Log
            }
            HandlerKind::Http => {
                let url = self
                    .url
                    .as_deref()
                    .ok_or_else(|| "none given".to_owned())
                    .and_then(parse_http_url)
                    .map_err(|problem| {
                        ConfigError::invalid(
                            key("url"),
                            format!(
                                "the http handler needs an http:// or https:// URL ({problem})"
                            ),
                        )
                    })?;
                let secret = self.secret.take().ok_or_else(|| {
                    ConfigError::invalid(
                        key("secret"),
                        "the http handler signs every delivery: set secret = \"env:NAME\" (a whsec_ secret)",
                    )
                })?;
                RouteHandler::Http(HttpRoute {
                    url,
                    secret: ConfigSecret::new(key("secret"), secret),
                })
            }
        };
        if self.timeout.is_zero() {
            return Err(ConfigError::invalid(key("timeout"), "must be above 0"));
        }
        let ordered = ordered(
            self.ordered_by.take(),
            self.partitions,
            self.partition_prefetch,
            &key,
        )?;
        if ordered.is_some() {
            // The partition consumers hold a key's events in place; the
            // route queues' gate (limits, breaker) is not theirs.
            let limits = [
                ("concurrency", self.concurrency.is_some()),
                ("rate", self.rate.is_some()),
                ("breaker", self.breaker.is_some()),
            ];
            if let Some((name, _)) = limits.iter().find(|(_, given)| *given) {
                return Err(ConfigError::invalid(
                    key(name),
                    "is not available on an ordered route (one with ordered_by): its partitions \
                     deliver one event per key at a time, retrying in place; bound it with \
                     partition_prefetch, or remove ordered_by",
                ));
            }
        }
        let breaker = self.breaker.unwrap_or_default();
        let concurrency = self.concurrency.unwrap_or(default_concurrency);
        // It is also the prefetch of the route's consumer, an AMQP u16.
        let concurrency = u16::try_from(concurrency)
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| {
                let source = if self.concurrency.is_some() {
                    "concurrency"
                } else {
                    "concurrency (from worker.concurrency)"
                };
                ConfigError::invalid(
                    key(source),
                    "must be from 1 to 65535: deliveries to this route at once, and its queue's prefetch",
                )
            })?;
        if let Some(rate) = &self.rate {
            validate_rate_limit(&key("rate"), rate)?;
        }
        breaker.validate(key)?;
        Ok(RouteConfig {
            name: self.name,
            patterns: self.patterns.iter().map(|p| Glob::new(p)).collect(),
            handler,
            timeout: self.timeout,
            exclusive: self.exclusive,
            ordered,
            concurrency,
            rate: self.rate,
            breaker,
        })
    }
}

/// `ordered_by` with its `partitions` and `partition_prefetch`, checked;
/// either of those without `ordered_by` is refused (it would be ignored).
fn ordered(
    pointers: Option<Pointers>,
    partitions: Option<u16>,
    prefetch: Option<u16>,
    key: &dyn Fn(&str) -> String,
) -> Result<Option<OrderedBy>, ConfigError> {
    let Some(pointers) = pointers else {
        for (name, given) in [
            ("partitions", partitions.is_some()),
            ("partition_prefetch", prefetch.is_some()),
        ] {
            if given {
                return Err(ConfigError::invalid(
                    key(name),
                    "only an ordered route has partitions, and this one has no ordered_by: \
                         remove it, or set ordered_by = \"/json/pointer\"",
                ));
            }
        }
        return Ok(None);
    };
    let pointers = match pointers {
        Pointers::One(pointer) => vec![pointer],
        Pointers::Several(pointers) => pointers,
    };
    if pointers.is_empty() {
        return Err(ConfigError::invalid(
            key("ordered_by"),
            "name at least one JSON pointer into the event's data, e.g. \"/data/conversation_id\"",
        ));
    }
    if let Some(bad) = pointers.iter().find(|p| !p.starts_with('/')) {
        return Err(ConfigError::invalid(
            key("ordered_by"),
            format!(
                "`{bad}` is not a JSON pointer into the event's data: write it from the \
                     data's root with a leading '/', e.g. \"/value/messages/0/from\""
            ),
        ));
    }
    let partitions = partitions.unwrap_or(DEFAULT_PARTITIONS);
    if !(1..=MAX_PARTITIONS).contains(&partitions) {
        return Err(ConfigError::invalid(
            key("partitions"),
            format!("must be 1 to {MAX_PARTITIONS}: each partition is a queue with a consumer"),
        ));
    }
    let prefetch = prefetch.unwrap_or(DEFAULT_PARTITION_PREFETCH);
    if prefetch == 0 {
        return Err(ConfigError::invalid(
            key("partition_prefetch"),
            "must be at least 1: a worker holds this many messages of a partition at once",
        ));
    }
    Ok(Some(OrderedBy {
        pointers,
        partitions,
        prefetch,
    }))
}

/// Parses an `http://` or `https://` URL; the problem otherwise, without the URL.
pub(super) fn parse_http_url(text: &str) -> Result<Url, String> {
    if !(text.starts_with("http://") || text.starts_with("https://")) {
        return Err("not an http:// or https:// URL".into());
    }
    Url::parse(text).map_err(|e| format!("not a valid URL: {e}"))
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, RouteHandler};

    fn route(handler: &str) -> String {
        format!("[[routes]]\nname = \"crm\"\nmatch = [\"*\"]\n{handler}")
    }

    #[test]
    fn an_http_route_holds_its_url_parsed_and_its_secret_named() {
        let config = Config::from_toml(&route(
            "handler = \"http\"\nurl = \"https://crm.example/hook?x=1\"\nsecret = \"env:CRM\"",
        ))
        .expect("loads");
        let RouteHandler::Http(http) = &config.routes[0].handler else {
            panic!("an http route: {:?}", config.routes[0].handler);
        };
        assert_eq!(http.url.host_str(), Some("crm.example"));
        assert_eq!(http.url.query(), Some("x=1"));
        assert_eq!(http.secret.key(), "routes[0] (crm).secret");
    }

    #[test]
    fn an_http_route_without_a_usable_url_names_the_key() {
        for url in [
            "",
            "url = \"ftp://x/\"",
            "url = \"http://exa mple/\"",
            "url = \"http://\"",
        ] {
            let text = route(&format!("handler = \"http\"\nsecret = \"env:CRM\"\n{url}"));
            let error = Config::from_toml(&text).expect_err(url).to_string();
            assert!(error.contains("routes[0] (crm).url"), "{url}: {error}");
            assert!(error.contains("http:// or https://"), "{url}: {error}");
        }
    }

    #[test]
    fn exclusive_is_off_unless_set_and_must_be_a_boolean() {
        let config = Config::from_toml(&route("handler = \"log\"")).expect("loads");
        assert!(
            !config.routes[0].exclusive,
            "every matching route by default"
        );
        let config =
            Config::from_toml(&route("handler = \"log\"\nexclusive = true")).expect("loads");
        assert!(config.routes[0].exclusive);
        let error = Config::from_toml(&route("handler = \"log\"\nexclusive = \"yes\""))
            .expect_err("a string is no boolean")
            .to_string();
        assert!(error.contains("exclusive"), "{error}");
    }

    #[test]
    fn an_ordered_route_takes_one_pointer_or_several_and_defaults_its_partitions() {
        let config = Config::from_toml(&route(
            "handler = \"log\"\nordered_by = \"/data/conversation_id\"",
        ))
        .expect("loads");
        let ordered = config.routes[0].ordered.as_ref().expect("ordered");
        assert_eq!(ordered.pointers, ["/data/conversation_id"]);
        assert_eq!(ordered.partitions, 16);
        assert_eq!(ordered.prefetch, 32);
        let config = Config::from_toml(&route(
            "handler = \"log\"\nordered_by = [\"/a\", \"/b\"]\npartitions = 4\npartition_prefetch = 2",
        ))
        .expect("loads");
        let ordered = config.routes[0].ordered.as_ref().expect("ordered");
        assert_eq!(
            (ordered.pointers.len(), ordered.partitions, ordered.prefetch),
            (2, 4, 2)
        );
        let plain = Config::from_toml(&route("handler = \"log\"")).expect("loads");
        assert!(plain.routes[0].ordered.is_none());
    }

    #[test]
    fn a_bad_ordered_route_is_refused_naming_the_key() {
        for (extra, key, says) in [
            (
                "ordered_by = \"data/id\"",
                "routes[0] (crm).ordered_by",
                "leading '/'",
            ),
            (
                "ordered_by = \"\"",
                "routes[0] (crm).ordered_by",
                "leading '/'",
            ),
            (
                "ordered_by = []",
                "routes[0] (crm).ordered_by",
                "at least one",
            ),
            (
                "ordered_by = \"/k\"\npartitions = 0",
                "routes[0] (crm).partitions",
                "1 to 1024",
            ),
            (
                "ordered_by = \"/k\"\npartitions = 5000",
                "routes[0] (crm).partitions",
                "1 to 1024",
            ),
            (
                "ordered_by = \"/k\"\npartition_prefetch = 0",
                "routes[0] (crm).partition_prefetch",
                "at least 1",
            ),
            (
                "partitions = 4",
                "routes[0] (crm).partitions",
                "no ordered_by",
            ),
            (
                "partition_prefetch = 4",
                "routes[0] (crm).partition_prefetch",
                "no ordered_by",
            ),
        ] {
            let text = route(&format!("handler = \"log\"\n{extra}"));
            let error = Config::from_toml(&text).expect_err(extra).to_string();
            assert!(error.contains(key), "{extra}: {error}");
            assert!(error.contains(says), "{extra}: {error}");
        }
    }

    #[test]
    fn a_hold_limit_that_reaches_the_consumer_timeout_with_a_route_timeout_is_refused() {
        let text = format!(
            "[worker]\nordered_hold_limit = \"29m\"\n{}",
            route("handler = \"log\"\nordered_by = \"/k\"\ntimeout = \"2m\"")
        );
        let error = Config::from_toml(&text).expect_err("29m + 2m").to_string();
        assert!(error.contains("worker.ordered_hold_limit"), "{error}");
        assert!(error.contains("consumer_timeout"), "{error}");
        let unordered = format!(
            "[worker]\nordered_hold_limit = \"29m\"\n{}",
            route("handler = \"log\"\ntimeout = \"2m\"")
        );
        Config::from_toml(&unordered).expect("only ordered routes are held");
        let error = Config::from_toml("[worker]\nordered_hold_limit = \"10ms\"")
            .expect_err("too short")
            .to_string();
        assert!(error.contains("worker.ordered_hold_limit"), "{error}");
    }

    #[test]
    fn a_log_route_needs_no_url() {
        let config = Config::from_toml(&route("handler = \"log\"")).expect("loads");
        assert!(matches!(config.routes[0].handler, RouteHandler::Log));
    }

    #[test]
    fn a_log_route_with_a_url_or_secret_is_refused_naming_the_key() {
        for (extra, key) in [
            ("url = \"https://crm.example/hook\"", "routes[0] (crm).url"),
            ("secret = \"env:CRM\"", "routes[0] (crm).secret"),
        ] {
            let text = route(&format!("handler = \"log\"\n{extra}"));
            let error = Config::from_toml(&text).expect_err(extra).to_string();
            assert!(error.contains(key), "{extra}: {error}");
            assert!(error.contains("handler = \"http\""), "{extra}: {error}");
        }
    }

    #[test]
    fn limits_default_to_the_worker_s_concurrency_no_rate_and_a_breaker_on() {
        let text = format!("[worker]\nconcurrency = 7\n{}", route("handler = \"log\""));
        let config = Config::from_toml(&text).expect("loads");
        let route = &config.routes[0];
        assert_eq!(route.concurrency, 7);
        assert_eq!(route.rate, None);
        assert_eq!(route.breaker, super::BreakerConfig::default());
        assert!(route.breaker.enabled);
        assert_eq!(route.breaker.failures, 5);
    }

    #[test]
    fn an_ordered_route_refuses_the_route_queues_limits() {
        for extra in [
            "concurrency = 2",
            "rate = { per_second = 5, burst = 1 }",
            "[routes.breaker]\nfailures = 2",
        ] {
            let toml = format!(
                "[[routes]]\nname = \"crm\"\nmatch = [\"*\"]\nhandler = \"log\"\nordered_by = \"/k\"\n{extra}"
            );
            let refused = crate::config::Config::from_toml(&toml).expect_err("refused");
            assert!(
                refused
                    .to_string()
                    .contains("not available on an ordered route"),
                "{refused}"
            );
        }
    }

    #[test]
    fn a_route_s_own_limits_and_breaker_are_read() {
        let text = route(
            "handler = \"log\"\nconcurrency = 3\nrate = { per_second = 2.5, burst = 4 }\n\
             [routes.breaker]\nfailures = 2\nprobe_after = \"1s\"\nprobe_max = \"1m\"",
        );
        let config = Config::from_toml(&text).expect("loads");
        let route = &config.routes[0];
        assert_eq!(route.concurrency, 3);
        let rate = route.rate.expect("a rate");
        assert_eq!((rate.per_second, rate.burst), (2.5, 4));
        assert_eq!(route.breaker.failures, 2);
        assert_eq!(route.breaker.probe_after, std::time::Duration::from_secs(1));
        assert_eq!(route.breaker.probe_max, std::time::Duration::from_secs(60));
    }

    #[test]
    fn bad_limits_and_breaker_settings_are_refused_naming_the_key() {
        for (extra, key) in [
            ("concurrency = 0", "routes[0] (crm).concurrency"),
            ("concurrency = 70000", "routes[0] (crm).concurrency"),
            (
                "rate = { per_second = 0, burst = 1 }",
                "routes[0] (crm).rate.per_second",
            ),
            (
                "rate = { per_second = 1, burst = 0 }",
                "routes[0] (crm).rate.burst",
            ),
            (
                "[routes.breaker]\nfailures = 0",
                "routes[0] (crm).breaker.failures",
            ),
            (
                "[routes.breaker]\nprobe_after = \"0s\"",
                "routes[0] (crm).breaker.probe_after",
            ),
            (
                "[routes.breaker]\nprobe_after = \"1m\"\nprobe_max = \"5s\"",
                "routes[0] (crm).breaker.probe_max",
            ),
            ("[routes.breaker]\nfailure = 3", "failure"),
        ] {
            let text = route(&format!("handler = \"log\"\n{extra}"));
            let error = Config::from_toml(&text).expect_err(extra).to_string();
            assert!(error.contains(key), "{extra}: {error}");
        }
        let text = format!(
            "[worker]\nconcurrency = 70000\n{}",
            route("handler = \"log\"")
        );
        let error = Config::from_toml(&text).expect_err("too many").to_string();
        assert!(
            error.contains("routes[0] (crm).concurrency (from worker.concurrency)"),
            "{error}"
        );
    }
}
