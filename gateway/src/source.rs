//! Sources: the providers allowed to POST, each with its authentication,
//! extractor, optional handshake and challenge, built once at start-up from
//! `[sources.*]`. Resolving a source's secrets here means a missing secret
//! stops the gateway before it serves.

use std::collections::HashMap;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName};
use bytes::Bytes;
use serde_json::Value;
use sluice_shared::config::{
    ConfigError, ConfigSecret, DigestEncoding, ExtractorKind, GatewayConfig, SourceConfig,
    SourceScheme, TokenConfig,
};
use sluice_shared::secret::Secret;

use ipnet::IpNet;

use crate::extract::json::JsonExtractor;
use crate::extract::whatsapp::WhatsAppExtractor;
use crate::extract::{Event, Extracted, Extractor, FanOutError};
use crate::signature::{
    Authenticator, HmacSignature, Presented, Scheme, SecretDigests, SignatureError,
    StandardSignature, TokenCheck, VerifiedBody,
};
use sluice_shared::rate_limit::RateLimiter;

pub use sluice_shared::message::SourceName;

/// A POSTed event that is a verification challenge: its value is echoed.
#[derive(Debug, Clone)]
pub struct Challenge {
    event_type: String,
    pointer: String,
}

/// How much one request may fan out into, from `[gateway]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FanOutLimits {
    /// `gateway.max_events_per_request`.
    pub max_events: usize,
    /// [`GatewayConfig::max_fan_out_bytes`]: the envelopes of all the
    /// request's events together.
    pub max_bytes: usize,
}

impl FanOutLimits {
    pub fn from_config(gateway: &GatewayConfig) -> Self {
        Self {
            max_events: gateway.max_events_per_request,
            max_bytes: gateway.max_fan_out_bytes(),
        }
    }
}

/// One provider endpoint, ready to authenticate and extract.
pub struct Source {
    pub name: SourceName,
    auth: Authenticator,
    extractor: Extractor,
    limits: FanOutLimits,
    /// Meta's `verify_token`, when the source answers the GET handshake.
    verify_token: Option<SecretDigests>,
    challenge: Option<Challenge>,
    /// How long an accepted event id is remembered.
    pub dedup_ttl: Duration,
    /// Client addresses allowed to post (empty: any).
    pub allow_ips: Vec<IpNet>,
    /// Events per second this source may send, when limited.
    pub rate_limit: Option<RateLimiter>,
}

/// Why a GET handshake is refused (403).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    #[error("this source has no GET handshake")]
    NotSupported,
    #[error("hub.mode must be \"subscribe\"")]
    Mode,
    #[error("hub.verify_token is missing or wrong")]
    Token,
    #[error("hub.challenge is missing or longer than 1024 characters")]
    Challenge,
}

impl Source {
    /// The source `name` as the config loader checked it; reads its secrets
    /// (the loader left them as references, for the gateway alone to read).
    pub fn from_config(
        name: &str,
        config: &SourceConfig,
        limits: FanOutLimits,
    ) -> Result<Self, ConfigError> {
        let auth = Authenticator {
            scheme: scheme(&config.scheme)?,
            token: config.tokens.as_ref().map(token_check).transpose()?,
        };
        let verify_token = match &config.scheme {
            SourceScheme::WhatsappCloud(meta) => {
                Some(SecretDigests::new(&[meta.verify_token.resolve()?]))
            }
            _ => None,
        };
        let challenge = config.challenge.as_ref().map(|c| Challenge {
            event_type: c.event_type.clone(),
            pointer: c.pointer.clone(),
        });
        Ok(Self {
            name: SourceName::from_config_name(name),
            auth,
            extractor: extractor(config),
            limits,
            verify_token,
            challenge,
            dedup_ttl: config.dedup_ttl,
            allow_ips: config.allow_ips.clone(),
            rate_limit: config.rate_limit.as_ref().map(RateLimiter::new),
        })
    }

    /// Everything about authentication that needs no body (see [`Authenticator::check_headers`]).
    pub fn check_headers(&self, headers: &HeaderMap) -> Result<Presented, SignatureError> {
        self.auth.check_headers(headers)
    }

    /// The presented signature against the body.
    pub fn verify_body(
        &self,
        presented: Presented,
        body: Bytes,
    ) -> Result<VerifiedBody, SignatureError> {
        self.auth.verify_body(presented, body)
    }

    /// The body's events, or their refusal: more than `limits.max_events`
    /// (counted before any is built), or envelopes adding up to more than
    /// `limits.max_bytes` (sized before any is written). Pure and `'static`,
    /// so it may run on a blocking thread.
    #[cfg(test)]
    pub fn extract(&self, body: &VerifiedBody) -> Extracted {
        self.extract_sized(body).0
    }

    /// [`Source::extract`], with the bytes the events' messages will take
    /// (0 when there are no events), for the shared body-memory budget.
    pub fn extract_sized(&self, body: &VerifiedBody) -> (Extracted, usize) {
        let extracted = self.extractor.extract(body, self.limits.max_events);
        let Extracted::Events(events) = &extracted else {
            return (extracted, 0);
        };
        let source = self.name.as_str();
        let bytes = events
            .iter()
            .map(|event| event.envelope_len(source))
            .fold(0, usize::saturating_add);
        if bytes > self.limits.max_bytes {
            let refused = Extracted::Refused(FanOutError::TooManyBytes {
                events: events.len(),
                bytes,
                limit: self.limits.max_bytes,
            });
            return (refused, 0);
        }
        (extracted, bytes)
    }

    /// The value to echo when `events` is this source's challenge event.
    pub fn challenge_answer(&self, events: &[Event]) -> Option<String> {
        let challenge = self.challenge.as_ref()?;
        match events {
            [event] if event.event_type.as_str() == challenge.event_type => {
                let data = event.data.to_value().unwrap_or_default();
                match data.pointer(&challenge.pointer) {
                    Some(Value::String(s)) => Some(s.clone()),
                    Some(other) => Some(other.to_string()),
                    None => Some(String::new()),
                }
            }
            _ => None,
        }
    }

    /// Meta's subscription handshake: the challenge to echo, or why not.
    pub fn handshake(
        &self,
        mode: Option<&str>,
        token: Option<&str>,
        challenge: Option<&str>,
    ) -> Result<String, HandshakeError> {
        let expected = self
            .verify_token
            .as_ref()
            .ok_or(HandshakeError::NotSupported)?;
        if mode != Some("subscribe") {
            return Err(HandshakeError::Mode);
        }
        if !token.is_some_and(|t| expected.matches(t.as_bytes())) {
            return Err(HandshakeError::Token);
        }
        match challenge {
            Some(c) if !c.is_empty() && c.len() <= 1024 => Ok(c.to_owned()),
            _ => Err(HandshakeError::Challenge),
        }
    }
}

fn scheme(config: &SourceScheme) -> Result<Scheme, ConfigError> {
    Ok(match config {
        SourceScheme::HmacSha256(hmac) => Scheme::Hmac(HmacSignature::new(
            hmac.header.clone(),
            hmac.prefix.clone(),
            hmac.encoding,
            &resolve_all(&hmac.secrets)?,
        )),
        // Meta signs with the app secret: `X-Hub-Signature-256: sha256=<hex>`.
        SourceScheme::WhatsappCloud(meta) => Scheme::Hmac(HmacSignature::new(
            HeaderName::from_static("x-hub-signature-256"),
            Some("sha256=".into()),
            DigestEncoding::Hex,
            &resolve_all(&meta.secrets)?,
        )),
        SourceScheme::StandardWebhooks(standard) => {
            let keys = standard
                .secrets
                .iter()
                .map(ConfigSecret::signing_key)
                .collect::<Result<Vec<_>, _>>()?;
            Scheme::Standard(StandardSignature::new(keys, standard.tolerance))
        }
        SourceScheme::Token => Scheme::TokenOnly,
    })
}

fn token_check(tokens: &TokenConfig) -> Result<TokenCheck, ConfigError> {
    let secrets = resolve_all(&tokens.tokens)?;
    Ok(TokenCheck::new(
        tokens.header.clone(),
        tokens.format,
        &secrets,
    ))
}

fn extractor(config: &SourceConfig) -> Extractor {
    let json = JsonExtractor {
        id_pointer: config.id_pointer.clone(),
        items_pointer: config.items_pointer.clone(),
        item_id_pointer: config.item_id_pointer.clone(),
        item_id_suffix_pointer: config.item_id_suffix_pointer.clone(),
        type_pointer: config.type_pointer.clone(),
    };
    match config.extractor {
        ExtractorKind::Json => Extractor::Json(json),
        ExtractorKind::WhatsappCloud => Extractor::WhatsApp(WhatsAppExtractor),
        ExtractorKind::StandardWebhooks => Extractor::StandardWebhooks(JsonExtractor {
            type_pointer: json.type_pointer.or_else(|| Some("/type".into())),
            ..JsonExtractor::default()
        }),
    }
}

fn resolve_all(secrets: &[ConfigSecret]) -> Result<Vec<Secret>, ConfigError> {
    secrets.iter().map(ConfigSecret::resolve).collect()
}

/// All configured sources by name.
#[derive(Default)]
pub struct Sources(HashMap<String, Source>);

impl Sources {
    /// Every source of `configs`, each held to `gateway`'s fan-out limits.
    pub fn from_config<'a>(
        gateway: &GatewayConfig,
        configs: impl IntoIterator<Item = (&'a String, &'a SourceConfig)>,
    ) -> Result<Self, ConfigError> {
        let limits = FanOutLimits::from_config(gateway);
        configs
            .into_iter()
            .map(|(name, config)| Ok((name.clone(), Source::from_config(name, config, limits)?)))
            .collect::<Result<HashMap<_, _>, _>>()
            .map(Self)
    }

    pub fn get(&self, name: &str) -> Option<&Source> {
        self.0.get(name)
    }
}

#[cfg(test)]
mod tests;
