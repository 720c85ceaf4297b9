//! `[sources.<name>]` as the file writes it (one flat table for every
//! scheme) and its checked conversion into a [`SourceConfig`]; a key that
//! only another scheme reads is refused, not silently ignored.

use std::time::Duration;

use axum::http::HeaderName;
use axum::http::header::AUTHORIZATION;
use ipnet::IpNet;
use serde::Deserialize;

use super::edge::{RateLimitConfig, validate_rate_limit};
use super::secrets::ConfigSecret;
use super::source::{
    ChallengeConfig, DigestEncoding, ExtractorKind, HmacScheme, SchemeKind, SourceConfig,
    SourceScheme, StandardWebhooksScheme, TokenConfig, TokenFormat, WhatsappCloudScheme,
};
use super::{ConfigError, is_name};
use crate::secret::SecretRef;

use SchemeKind::{HmacSha256, StandardWebhooks, Token, WhatsappCloud};

/// The keys only some schemes read, and which: any other scheme refuses
/// them. Every other key of a source is read whatever its scheme.
pub const SCHEME_KEYS: &[(&str, &[SchemeKind])] = &[
    ("secrets", &[HmacSha256, WhatsappCloud, StandardWebhooks]),
    ("header", &[HmacSha256]),
    ("prefix", &[HmacSha256]),
    ("encoding", &[HmacSha256]),
    ("verify_token", &[WhatsappCloud]),
    ("tolerance", &[StandardWebhooks]),
];

impl SchemeKind {
    /// The keys this scheme reads beyond those of every source, in
    /// [`SCHEME_KEYS`] order.
    pub fn own_keys(self) -> Vec<&'static str> {
        SCHEME_KEYS
            .iter()
            .filter(|(_, schemes)| schemes.contains(&self))
            .map(|(key, _)| *key)
            .collect()
    }
}

/// One source as the file writes it: every key any scheme takes. The keys
/// of [`SCHEME_KEYS`] are options, so a key written for the wrong scheme is
/// seen and refused.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SourceFile {
    scheme: SchemeKind,
    #[serde(default)]
    secrets: Option<Vec<SecretRef>>,
    #[serde(default)]
    header: Option<String>,
    #[serde(default)]
    prefix: Option<String>,
    #[serde(default)]
    encoding: Option<DigestEncoding>,
    #[serde(default)]
    verify_token: Option<SecretRef>,
    #[serde(default, with = "humantime_serde")]
    tolerance: Option<Duration>,
    #[serde(default)]
    tokens: Vec<SecretRef>,
    #[serde(default)]
    token_header: Option<String>,
    #[serde(default)]
    token_format: TokenFormat,
    #[serde(default)]
    extractor: Option<ExtractorKind>,
    #[serde(default)]
    id_pointer: Option<String>,
    #[serde(default)]
    items_pointer: Option<String>,
    #[serde(default)]
    item_id_pointer: Option<String>,
    #[serde(default)]
    item_id_suffix_pointer: Option<String>,
    #[serde(default)]
    type_pointer: Option<String>,
    #[serde(default)]
    challenge_type: Option<String>,
    #[serde(default = "default_challenge_pointer")]
    challenge_pointer: String,
    #[serde(default = "default_dedup_ttl", with = "humantime_serde")]
    dedup_ttl: Duration,
    #[serde(default)]
    rate_limit: Option<RateLimitConfig>,
    #[serde(default)]
    allow_ips: Vec<IpNet>,
}

fn default_challenge_pointer() -> String {
    "/data/challenge".into()
}

fn default_dedup_ttl() -> Duration {
    Duration::from_secs(7 * 24 * 3600)
}

/// `tolerance` when unset.
const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);

impl SourceFile {
    /// Checks the source `name` and builds its scheme's settings; every
    /// error names the key (`sources.<name>.<key>`) and what to do.
    pub(super) fn into_config(mut self, name: &str) -> Result<SourceConfig, ConfigError> {
        let key = |field: &str| format!("sources.{name}.{field}");
        if !is_name(name, "") {
            return Err(ConfigError::invalid(
                format!("sources.{name}"),
                "a source name is 1 to 64 of a-z, 0-9, '-' and '_' (it appears in URLs and routing keys)",
            ));
        }
        self.refuse_foreign_keys(&key)?;
        let scheme = self.scheme(name)?;
        let token_header = header_name(&key("token_header"), self.token_header.as_deref())?;
        let pointers = [
            ("items_pointer", self.items_pointer.as_deref()),
            ("id_pointer", self.id_pointer.as_deref()),
            ("item_id_pointer", self.item_id_pointer.as_deref()),
            (
                "item_id_suffix_pointer",
                self.item_id_suffix_pointer.as_deref(),
            ),
            ("type_pointer", self.type_pointer.as_deref()),
            ("challenge_pointer", Some(self.challenge_pointer.as_str())),
        ];
        for (field, pointer) in pointers {
            if let Some(p) = pointer
                && !p.is_empty()
                && !p.starts_with('/')
            {
                return Err(ConfigError::invalid(
                    key(field),
                    "a JSON pointer starts with '/', e.g. \"/messages/0/key/id\"",
                ));
            }
        }
        if let Some(limit) = &self.rate_limit {
            validate_rate_limit(&format!("sources.{name}.rate_limit"), limit)?;
        }
        if self.dedup_ttl < Duration::from_secs(1) {
            return Err(ConfigError::invalid(
                key("dedup_ttl"),
                "must be at least 1s",
            ));
        }
        let tokens = (!self.tokens.is_empty()).then(|| TokenConfig {
            tokens: ConfigSecret::list(&key("tokens"), std::mem::take(&mut self.tokens)),
            header: token_header.unwrap_or(AUTHORIZATION),
            format: self.token_format,
        });
        let extractor = self.extractor.unwrap_or(match scheme.kind() {
            WhatsappCloud => ExtractorKind::WhatsappCloud,
            StandardWebhooks => ExtractorKind::StandardWebhooks,
            HmacSha256 | Token => ExtractorKind::Json,
        });
        let challenge = self.challenge_type.map(|event_type| ChallengeConfig {
            event_type,
            pointer: self.challenge_pointer,
        });
        Ok(SourceConfig {
            scheme,
            tokens,
            extractor,
            id_pointer: self.id_pointer,
            items_pointer: self.items_pointer,
            item_id_pointer: self.item_id_pointer,
            item_id_suffix_pointer: self.item_id_suffix_pointer,
            type_pointer: self.type_pointer,
            challenge,
            dedup_ttl: self.dedup_ttl,
            rate_limit: self.rate_limit,
            allow_ips: self.allow_ips,
        })
    }

    /// The scheme with its own keys, checked; takes them out of `self`.
    fn scheme(&mut self, name: &str) -> Result<SourceScheme, ConfigError> {
        let key = |field: &str| format!("sources.{name}.{field}");
        let secrets = |list: Option<Vec<SecretRef>>| match list {
            Some(list) if !list.is_empty() => Ok(ConfigSecret::list(&key("secrets"), list)),
            _ => Err(ConfigError::invalid(
                key("secrets"),
                "list at least one secret",
            )),
        };
        Ok(match self.scheme {
            HmacSha256 => SourceScheme::HmacSha256(HmacScheme {
                secrets: secrets(self.secrets.take())?,
                header: header_name(&key("header"), self.header.as_deref())?
                    .unwrap_or(HeaderName::from_static("x-signature")),
                prefix: self.prefix.take(),
                encoding: self.encoding.unwrap_or_default(),
            }),
            WhatsappCloud => {
                let secrets = secrets(self.secrets.take())?;
                let Some(verify_token) = self.verify_token.take() else {
                    return Err(ConfigError::invalid(
                        key("verify_token"),
                        "Meta's subscription handshake needs it: verify_token = \"env:NAME\"",
                    ));
                };
                SourceScheme::WhatsappCloud(WhatsappCloudScheme {
                    secrets,
                    verify_token: ConfigSecret::new(key("verify_token"), verify_token),
                })
            }
            StandardWebhooks => {
                let secrets = secrets(self.secrets.take())?;
                let tolerance = self.tolerance.unwrap_or(DEFAULT_TOLERANCE);
                if tolerance.is_zero() {
                    return Err(ConfigError::invalid(key("tolerance"), "must be above 0"));
                }
                SourceScheme::StandardWebhooks(StandardWebhooksScheme { secrets, tolerance })
            }
            Token if self.tokens.is_empty() => {
                return Err(ConfigError::invalid(
                    key("tokens"),
                    "the token scheme needs at least one token",
                ));
            }
            Token => SourceScheme::Token,
        })
    }

    /// Refuses a key of [`SCHEME_KEYS`] that this source's scheme does not read.
    fn refuse_foreign_keys(&self, key: &impl Fn(&str) -> String) -> Result<(), ConfigError> {
        let written = [
            ("secrets", self.secrets.is_some()),
            ("header", self.header.is_some()),
            ("prefix", self.prefix.is_some()),
            ("encoding", self.encoding.is_some()),
            ("verify_token", self.verify_token.is_some()),
            ("tolerance", self.tolerance.is_some()),
        ];
        let scheme = self.scheme;
        for (field, _) in written.into_iter().filter(|(_, written)| *written) {
            let readers = SCHEME_KEYS
                .iter()
                .find(|(name, _)| *name == field)
                .map_or(&[][..], |(_, schemes)| *schemes);
            if readers.contains(&scheme) {
                continue;
            }
            return Err(ConfigError::invalid(
                key(field),
                foreign_key(scheme, field, readers),
            ));
        }
        Ok(())
    }
}

/// Why `field`, which only `readers` read, is refused on a `scheme` source.
fn foreign_key(scheme: SchemeKind, field: &str, readers: &[SchemeKind]) -> String {
    let readers: Vec<&str> = readers.iter().map(|s| s.as_str()).collect();
    let readers = match readers.as_slice() {
        [one] => format!("only {one} does"),
        _ => format!("only {} do", listed(&readers)),
    };
    let own = match scheme.own_keys().as_slice() {
        [] => "no key besides those every source takes".to_owned(),
        keys => {
            let keys: Vec<String> = keys.iter().map(|k| format!("`{k}`")).collect();
            format!("{} besides the keys every source takes", listed(&keys))
        }
    };
    format!(
        "scheme {scheme} does not read `{field}` ({readers}), so it would be ignored: remove \
         it, or set the scheme that uses it. Scheme {scheme} takes {own} \
         (docs/configuration.md, \"[sources.<name>]\")"
    )
}

/// `a`, `a and b`, `a, b and c`.
fn listed(items: &[impl AsRef<str>]) -> String {
    match items {
        [] => String::new(),
        [one] => one.as_ref().to_owned(),
        [rest @ .., last] => {
            let rest: Vec<&str> = rest.iter().map(AsRef::as_ref).collect();
            format!("{} and {}", rest.join(", "), last.as_ref())
        }
    }
}

/// Parses a header name; `None` stays `None` (the caller's default).
fn header_name(key: &str, text: Option<&str>) -> Result<Option<HeaderName>, ConfigError> {
    text.map(|text| {
        HeaderName::try_from(text)
            .map_err(|_| ConfigError::invalid(key, "must be a valid HTTP header name"))
    })
    .transpose()
}

#[cfg(test)]
mod tests;
