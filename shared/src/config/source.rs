//! `[sources.<name>]`: a provider endpoint, how it authenticates and how its
//! requests become events.

use std::time::Duration;

use serde::Deserialize;

use ipnet::IpNet;

use super::edge::{RateLimitConfig, validate_rate_limit};
use super::{ConfigError, is_name};
use crate::secret::SecretRef;

/// One provider endpoint, `POST /webhooks/{name}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// How requests are authenticated.
    pub scheme: SchemeKind,
    /// Active signing secrets; two during a rotation. Each `env:NAME` or
    /// `file:/path`. Not used by the `token` scheme.
    #[serde(default)]
    pub secrets: Vec<SecretRef>,
    /// Header carrying the signature (`hmac-sha256`).
    #[serde(default = "default_signature_header")]
    pub header: String,
    /// Text before the digest in the header, e.g. `sha256=` (`hmac-sha256`).
    #[serde(default)]
    pub prefix: Option<String>,
    /// How the digest is written (`hmac-sha256`).
    #[serde(default)]
    pub encoding: DigestEncoding,
    /// The token Meta's GET handshake must present (`whatsapp-cloud`).
    #[serde(default)]
    pub verify_token: Option<SecretRef>,
    /// Largest distance between `webhook-timestamp` and now, either way
    /// (`standard-webhooks`): older or newer messages are replays or forgeries.
    #[serde(default = "default_tolerance", with = "humantime_serde")]
    pub tolerance: Duration,
    /// Shared tokens: the whole check of the `token` scheme, and an extra
    /// check when set with a signature scheme. Two during a rotation.
    #[serde(default)]
    pub tokens: Vec<SecretRef>,
    /// Header carrying the token.
    #[serde(default = "default_token_header")]
    pub token_header: String,
    /// How the token is written in its header.
    #[serde(default)]
    pub token_format: TokenFormat,
    /// How one request becomes events; defaults to the scheme's own
    /// (`whatsapp-cloud`, `standard-webhooks`), else `json`.
    #[serde(default)]
    pub extractor: Option<ExtractorKind>,
    /// JSON pointer to the event id in the body (`json`); without one, or
    /// when it points at nothing, the id is the SHA-256 of the body.
    #[serde(default)]
    pub id_pointer: Option<String>,
    /// JSON pointer to an array whose items become one event each (`json`),
    /// e.g. `/statuses`; a body without it is one event as usual.
    #[serde(default)]
    pub items_pointer: Option<String>,
    /// JSON pointer to an item's id, relative to the item (e.g. `/id`).
    #[serde(default)]
    pub item_id_pointer: Option<String>,
    /// JSON pointer, relative to the item, to text appended to its id after
    /// `:` (e.g. `/status`, so each status of one message is its own event).
    #[serde(default)]
    pub item_id_suffix_pointer: Option<String>,
    /// JSON pointer to the event type in the body (`json`, `standard-webhooks`).
    #[serde(default)]
    pub type_pointer: Option<String>,
    /// An event type that is a verification challenge, answered and never
    /// published (NotMeta: `webhook.verified`).
    #[serde(default)]
    pub challenge_type: Option<String>,
    /// Where a challenge event carries the value to echo.
    #[serde(default = "default_challenge_pointer")]
    pub challenge_pointer: String,
    /// How long an event id is remembered; Meta retries for up to 7 days.
    #[serde(default = "default_dedup_ttl", with = "humantime_serde")]
    pub dedup_ttl: Duration,
    /// Events per second (and burst) this source may send; past it 429 with
    /// `Retry-After`. None: no limit.
    #[serde(default)]
    pub rate_limit: Option<RateLimitConfig>,
    /// Client addresses (CIDR blocks) allowed to POST; others get 403.
    /// Empty: any address. Behind a proxy, set `gateway.trusted_proxies`.
    #[serde(default)]
    pub allow_ips: Vec<IpNet>,
}

impl SourceConfig {
    /// The extractor in force: the configured one, else the scheme's own.
    pub fn extractor(&self) -> ExtractorKind {
        self.extractor.unwrap_or(match self.scheme {
            SchemeKind::WhatsappCloud => ExtractorKind::WhatsappCloud,
            SchemeKind::StandardWebhooks => ExtractorKind::StandardWebhooks,
            SchemeKind::HmacSha256 | SchemeKind::Token => ExtractorKind::Json,
        })
    }
}

fn default_signature_header() -> String {
    "X-Signature".into()
}

fn default_token_header() -> String {
    "Authorization".into()
}

fn default_tolerance() -> Duration {
    Duration::from_secs(300)
}

fn default_challenge_pointer() -> String {
    "/data/challenge".into()
}

fn default_dedup_ttl() -> Duration {
    Duration::from_secs(7 * 24 * 3600)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SchemeKind {
    /// HMAC-SHA256 of the raw body in a configurable header.
    HmacSha256,
    /// Meta: `X-Hub-Signature-256: sha256=<hex>` with the app secret, plus the GET handshake.
    WhatsappCloud,
    /// `webhook-id`/`webhook-timestamp`/`webhook-signature` over `id.timestamp.body`.
    StandardWebhooks,
    /// Only a shared token in a header, for providers that sign nothing.
    Token,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DigestEncoding {
    #[default]
    Hex,
    Base64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TokenFormat {
    /// `Authorization: Bearer <token>`.
    #[default]
    Bearer,
    /// `Authorization: Basic base64(user:password)`; the token is `user:password`.
    Basic,
    /// The header's whole value is the token (e.g. `X-Api-Key: <token>`).
    Plain,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExtractorKind {
    /// One event (or one per item of `items_pointer`); id and type from JSON pointers.
    Json,
    /// One event per message and per status of Meta's `entry[].changes[]`.
    WhatsappCloud,
    /// One event; id from `webhook-id`.
    StandardWebhooks,
}

pub(super) fn validate(name: &str, source: &SourceConfig) -> Result<(), ConfigError> {
    let key = |field: &str| format!("sources.{name}.{field}");
    if !is_name(name, "") {
        return Err(ConfigError::invalid(
            format!("sources.{name}"),
            "a source name is 1 to 64 of a-z, 0-9, '-' and '_' (it appears in URLs and routing keys)",
        ));
    }
    let needs_secrets = source.scheme != SchemeKind::Token;
    if needs_secrets && source.secrets.is_empty() {
        return Err(ConfigError::invalid(
            key("secrets"),
            "list at least one secret",
        ));
    }
    if source.scheme == SchemeKind::Token && source.tokens.is_empty() {
        return Err(ConfigError::invalid(
            key("tokens"),
            "the token scheme needs at least one token",
        ));
    }
    if source.scheme == SchemeKind::WhatsappCloud && source.verify_token.is_none() {
        return Err(ConfigError::invalid(
            key("verify_token"),
            "Meta's subscription handshake needs it: verify_token = \"env:NAME\"",
        ));
    }
    for (field, header) in [
        ("header", &source.header),
        ("token_header", &source.token_header),
    ] {
        if axum::http::HeaderName::try_from(header.as_str()).is_err() {
            return Err(ConfigError::invalid(
                key(field),
                "must be a valid HTTP header name",
            ));
        }
    }
    let pointers = [
        ("items_pointer", source.items_pointer.as_deref()),
        ("id_pointer", source.id_pointer.as_deref()),
        ("item_id_pointer", source.item_id_pointer.as_deref()),
        (
            "item_id_suffix_pointer",
            source.item_id_suffix_pointer.as_deref(),
        ),
        ("type_pointer", source.type_pointer.as_deref()),
        ("challenge_pointer", Some(source.challenge_pointer.as_str())),
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
    if source.tolerance.is_zero() {
        return Err(ConfigError::invalid(key("tolerance"), "must be above 0"));
    }
    if let Some(limit) = &source.rate_limit {
        validate_rate_limit(name, limit)?;
    }
    if source.dedup_ttl < Duration::from_secs(1) {
        return Err(ConfigError::invalid(
            key("dedup_ttl"),
            "must be at least 1s",
        ));
    }
    Ok(())
}
