//! `[[routes]]`: where the worker delivers events.

use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, is_name};
use crate::secret::SecretRef;

/// Where the worker delivers events that match.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Names the route in logs and metrics.
    pub name: String,
    /// Globs over `<source>.<type>`, e.g. `whatzme.*` or `whatsapp.message.*`.
    #[serde(rename = "match")]
    pub patterns: Vec<String>,
    /// What delivering means.
    pub handler: HandlerKind,
    /// Where the `http` handler POSTs.
    #[serde(default)]
    pub url: Option<String>,
    /// `whsec_...` secret the `http` handler signs with (Standard Webhooks).
    #[serde(default)]
    pub secret: Option<SecretRef>,
    /// Limit on one delivery attempt.
    #[serde(default = "default_delivery_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

fn default_delivery_timeout() -> Duration {
    Duration::from_secs(10)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HandlerKind {
    /// POST the CloudEvents envelope, signed, to `url`.
    Http,
    /// Log the event's id and type (never its data) and acknowledge.
    Log,
}

pub(super) fn validate(index: usize, route: &RouteConfig) -> Result<(), ConfigError> {
    let key = |field: &str| format!("routes[{index}] ({}).{field}", route.name);
    if !is_name(&route.name, "") {
        return Err(ConfigError::invalid(
            key("name"),
            "1 to 64 of a-z, 0-9, '-' and '_'",
        ));
    }
    if route.patterns.is_empty() {
        return Err(ConfigError::invalid(
            key("match"),
            "list at least one glob, e.g. \"whatzme.*\"",
        ));
    }
    if route.handler == HandlerKind::Http {
        match &route.url {
            Some(url) if url.starts_with("http://") || url.starts_with("https://") => {}
            _ => {
                return Err(ConfigError::invalid(
                    key("url"),
                    "the http handler needs an http:// or https:// URL",
                ));
            }
        }
        if route.secret.is_none() {
            return Err(ConfigError::invalid(
                key("secret"),
                "the http handler signs every delivery: set secret = \"env:NAME\" (a whsec_ secret)",
            ));
        }
    }
    if route.timeout.is_zero() {
        return Err(ConfigError::invalid(key("timeout"), "must be above 0"));
    }
    Ok(())
}
