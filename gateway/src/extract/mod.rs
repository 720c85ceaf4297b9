//! Turning a verified body into events.
//!
//! Each source has an extractor that turns one request into 1..n events,
//! each with an id, a type and data: [`json::JsonExtractor`] (id and type
//! from JSON pointers). An event without an id is identified by the SHA-256
//! of its body, so an identical retry still deduplicates. A body that is not
//! JSON (invalid UTF-8, truncated, nested past serde_json's depth limit of
//! 128) is [`Extracted::Unparseable`]: it is kept in the dead queue, never
//! thrown away.

pub mod json;
pub mod whatsapp;

use crate::signature::VerifiedBody;

use serde_json::Value;
use sha2::{Digest, Sha256};

/// The longest provider id used as is; longer ones are hashed so dedup keys stay small.
const MAX_ID_LEN: usize = 200;
/// The longest event type kept; it becomes part of a routing key (255 bytes at most).
const MAX_TYPE_LEN: usize = 100;

/// A provider's event id, safe for Redis keys and AMQP headers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EventId(String);

impl EventId {
    /// Takes a provider id as is when it is short printable ASCII, else its
    /// SHA-256: control characters, bidi overrides (U+202E) and other
    /// non-ASCII text never reach a Redis key, an AMQP header or a log line.
    pub fn from_provider(raw: &str) -> Self {
        let printable = raw.bytes().all(|b| b == b' ' || b.is_ascii_graphic());
        if raw.is_empty() || raw.len() > MAX_ID_LEN || !printable {
            Self::digest_of(raw.as_bytes())
        } else {
            Self(raw.to_owned())
        }
    }

    /// The lowercase hex SHA-256 of some bytes.
    pub fn digest_of(bytes: &[u8]) -> Self {
        Self(hex::encode(Sha256::digest(bytes)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A normalised event type: `[A-Za-z0-9._-]`, other characters become `_`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventType(String);

impl EventType {
    pub fn normalise(raw: &str) -> Self {
        let text: String = raw
            .chars()
            .take(MAX_TYPE_LEN)
            .map(|c| {
                if c.is_ascii_alphanumeric() || "._-".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        if text.is_empty() {
            Self::unknown()
        } else {
            Self(text)
        }
    }

    /// The type of an event whose type pointer finds nothing.
    pub fn unknown() -> Self {
        Self("unknown".into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One event out of a request.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub id: EventId,
    pub event_type: EventType,
    pub data: Value,
}

/// What a body turned into.
#[derive(Debug, Clone, PartialEq)]
pub enum Extracted {
    Events(Vec<Event>),
    /// Authenticated but not parseable: goes to the dead queue as `unparseable`.
    Unparseable {
        id: EventId,
    },
}

/// A source's extractor.
#[derive(Debug, Clone)]
pub enum Extractor {
    Json(json::JsonExtractor),
    WhatsApp(whatsapp::WhatsAppExtractor),
    /// The `json` extractor, with the id the Standard Webhooks signature covered.
    StandardWebhooks(json::JsonExtractor),
}

impl Extractor {
    pub fn extract(&self, body: &VerifiedBody) -> Extracted {
        match self {
            Self::Json(json) => json.extract(body),
            Self::WhatsApp(whatsapp) => whatsapp.extract(body),
            Self::StandardWebhooks(json) => {
                let mut extracted = json.extract(body);
                if let (Extracted::Events(events), Some(id)) = (&mut extracted, body.webhook_id()) {
                    for event in events {
                        event.id = EventId::from_provider(id);
                    }
                }
                extracted
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_standard_webhooks_extractor_takes_the_signed_webhook_id_and_the_type() {
        let extractor = Extractor::StandardWebhooks(json::JsonExtractor {
            type_pointer: Some("/type".into()),
            ..json::JsonExtractor::default()
        });
        let body = br#"{"type":"invoice.paid","data":{"id":"in_1"}}"#.to_vec();
        let verified = crate::signature::tests_support::verified_with_id(body, "msg_2");
        let Extracted::Events(events) = extractor.extract(&verified) else {
            panic!("JSON");
        };
        assert_eq!(
            (events[0].id.as_str(), events[0].event_type.as_str()),
            ("msg_2", "invoice.paid")
        );
    }

    #[test]
    fn types_are_normalised_for_routing_keys() {
        assert_eq!(
            EventType::normalise("message read/ok").as_str(),
            "message_read_ok"
        );
        assert_eq!(EventType::normalise("").as_str(), "unknown");
        assert_eq!(EventType::normalise(&"a".repeat(300)).as_str().len(), 100);
    }

    #[test]
    fn long_or_control_ids_are_hashed() {
        assert_eq!(EventId::from_provider("wamid.X").as_str(), "wamid.X");
        assert_eq!(EventId::from_provider(&"x".repeat(201)).as_str().len(), 64);
        assert_eq!(EventId::from_provider("a\nb").as_str().len(), 64);
        assert_eq!(EventId::from_provider("a\u{202E}b").as_str().len(), 64);
        assert_eq!(EventId::from_provider("3EB0:read").as_str(), "3EB0:read");
    }
}
