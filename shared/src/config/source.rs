//! `[sources.<name>]`: a provider endpoint, how it authenticates and how its
//! requests become events, as the loader hands it over: one variant per
//! scheme, holding only that scheme's settings, parsed.

use std::fmt;
use std::time::Duration;

use axum::http::HeaderName;
use ipnet::IpNet;
use serde::Deserialize;

use super::edge::RateLimitConfig;
use super::secrets::ConfigSecret;

/// One provider endpoint, `POST /webhooks/{name}`.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    /// How requests are signed, with that scheme's settings.
    pub scheme: SourceScheme,
    /// Shared tokens: the whole check of the `token` scheme (always set
    /// there), and an extra check when set with a signature scheme.
    pub tokens: Option<TokenConfig>,
    /// How one request becomes events: the configured one, else the scheme's
    /// own (`whatsapp-cloud`, `standard-webhooks`), else `json`.
    pub extractor: ExtractorKind,
    /// JSON pointer to the event id in the body (`json`); without one, or
    /// when it points at nothing, the id is the SHA-256 of the body.
    pub id_pointer: Option<String>,
    /// JSON pointer to an array whose items become one event each (`json`),
    /// e.g. `/statuses`; a body without it is one event as usual.
    pub items_pointer: Option<String>,
    /// JSON pointer to an item's id, relative to the item (e.g. `/id`).
    pub item_id_pointer: Option<String>,
    /// JSON pointer, relative to the item, to text appended to its id after
    /// `:` (e.g. `/status`, so each status of one message is its own event).
    pub item_id_suffix_pointer: Option<String>,
    /// JSON pointer to the event type in the body (`json`, `standard-webhooks`).
    pub type_pointer: Option<String>,
    /// An event that is a verification challenge, answered and never
    /// published (`challenge_type`, `challenge_pointer`).
    pub challenge: Option<ChallengeConfig>,
    /// How long an event id is remembered; Meta retries for up to 7 days.
    pub dedup_ttl: Duration,
    /// Events per second (and burst) this source may send; past it 429 with
    /// `Retry-After`. None: no limit.
    pub rate_limit: Option<RateLimitConfig>,
    /// Client addresses (CIDR blocks) allowed to POST; others get 403.
    /// Empty: any address. Behind a proxy, set `gateway.trusted_proxies`.
    pub allow_ips: Vec<IpNet>,
}

/// The signature scheme of a source, with the keys only it takes.
#[derive(Debug, Clone)]
pub enum SourceScheme {
    /// `hmac-sha256`: HMAC-SHA256 of the raw body in a configurable header.
    HmacSha256(HmacScheme),
    /// `whatsapp-cloud`: Meta's `X-Hub-Signature-256: sha256=<hex>` with the
    /// app secret, plus the GET handshake.
    WhatsappCloud(WhatsappCloudScheme),
    /// `standard-webhooks`: `webhook-id`/`webhook-timestamp`/`webhook-signature`
    /// over `id.timestamp.body`.
    StandardWebhooks(StandardWebhooksScheme),
    /// `token`: only a shared token in a header ([`SourceConfig::tokens`]).
    Token,
}

impl SourceScheme {
    /// The `scheme` key's value.
    pub fn kind(&self) -> SchemeKind {
        match self {
            Self::HmacSha256(_) => SchemeKind::HmacSha256,
            Self::WhatsappCloud(_) => SchemeKind::WhatsappCloud,
            Self::StandardWebhooks(_) => SchemeKind::StandardWebhooks,
            Self::Token => SchemeKind::Token,
        }
    }

    /// The signing secrets (`secrets`); none for `token`.
    pub fn secrets(&self) -> &[ConfigSecret] {
        match self {
            Self::HmacSha256(HmacScheme { secrets, .. })
            | Self::WhatsappCloud(WhatsappCloudScheme { secrets, .. })
            | Self::StandardWebhooks(StandardWebhooksScheme { secrets, .. }) => secrets,
            Self::Token => &[],
        }
    }
}

/// `scheme = "hmac-sha256"`.
#[derive(Debug, Clone)]
pub struct HmacScheme {
    /// Active signing secrets, at least one; two during a rotation.
    pub secrets: Vec<ConfigSecret>,
    /// Header carrying the signature (`header`, default `X-Signature`).
    pub header: HeaderName,
    /// Text before the digest in the header, e.g. `sha256=`.
    pub prefix: Option<String>,
    /// How the digest is written.
    pub encoding: DigestEncoding,
}

/// `scheme = "whatsapp-cloud"`.
#[derive(Debug, Clone)]
pub struct WhatsappCloudScheme {
    /// The Meta app's secrets, at least one.
    pub secrets: Vec<ConfigSecret>,
    /// The token Meta's GET handshake must present.
    pub verify_token: ConfigSecret,
}

/// `scheme = "standard-webhooks"`.
#[derive(Debug, Clone)]
pub struct StandardWebhooksScheme {
    /// `whsec_...` secrets, at least one; decoded by
    /// [`ConfigSecret::signing_key`] when the gateway reads them.
    pub secrets: Vec<ConfigSecret>,
    /// Largest distance between `webhook-timestamp` and now, either way
    /// (above 0): older or newer messages are replays or forgeries.
    pub tolerance: Duration,
}

/// `tokens`, `token_header`, `token_format`: a shared token in a header.
#[derive(Debug, Clone)]
pub struct TokenConfig {
    /// The active tokens, at least one; two during a rotation.
    pub tokens: Vec<ConfigSecret>,
    /// Header carrying the token (`token_header`, default `Authorization`).
    pub header: HeaderName,
    /// How the token is written in its header.
    pub format: TokenFormat,
}

/// A verification challenge: the event type, and where its value is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChallengeConfig {
    /// `challenge_type` (NotMeta: `webhook.verified`).
    pub event_type: String,
    /// `challenge_pointer`: the JSON pointer to the value to echo.
    pub pointer: String,
}

/// The `scheme` key.
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

impl SchemeKind {
    /// Every scheme.
    pub const ALL: [Self; 4] = [
        Self::HmacSha256,
        Self::WhatsappCloud,
        Self::StandardWebhooks,
        Self::Token,
    ];

    /// The value as written in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HmacSha256 => "hmac-sha256",
            Self::WhatsappCloud => "whatsapp-cloud",
            Self::StandardWebhooks => "standard-webhooks",
            Self::Token => "token",
        }
    }
}

impl fmt::Display for SchemeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
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
