//! Turning a verified body into events: the `json` extractor.
//!
//! One request becomes one event whose id and type come from JSON pointers
//! (`/messages/0/key/id`, `/event`). An event without an id is identified by
//! the SHA-256 of its body, so an identical retry still deduplicates. A body
//! that is not JSON (invalid UTF-8, truncated, nested past serde_json's depth
//! limit of 128) is [`Extracted::Unparseable`]: it is kept in the dead queue,
//! never thrown away.

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::signature::VerifiedBody;

/// The longest provider id used as is; longer ones are hashed so dedup keys stay small.
const MAX_ID_LEN: usize = 200;
/// The longest event type kept; it becomes part of a routing key (255 bytes at most).
const MAX_TYPE_LEN: usize = 100;

/// A provider's event id, safe for Redis keys and AMQP headers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EventId(String);

impl EventId {
    /// Takes a provider id as is when it is short printable text, else its SHA-256.
    pub fn from_provider(raw: &str) -> Self {
        let printable = raw.chars().all(|c| !c.is_control());
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

/// The `json` extractor: one event, id and type from JSON pointers.
#[derive(Debug, Clone, Default)]
pub struct JsonExtractor {
    pub id_pointer: Option<String>,
    pub type_pointer: Option<String>,
}

impl JsonExtractor {
    pub fn extract(&self, body: &VerifiedBody) -> Extracted {
        let bytes = body.bytes();
        let Ok(data) = serde_json::from_slice::<Value>(bytes) else {
            return Extracted::Unparseable {
                id: EventId::digest_of(bytes),
            };
        };
        let id = lookup(&data, self.id_pointer.as_deref())
            .map(|raw| EventId::from_provider(&raw))
            .unwrap_or_else(|| EventId::digest_of(bytes));
        let event_type = lookup(&data, self.type_pointer.as_deref())
            .map(|raw| EventType::normalise(&raw))
            .unwrap_or_else(EventType::unknown);
        Extracted::Events(vec![Event {
            id,
            event_type,
            data,
        }])
    }
}

/// A string or number at `pointer`, as text.
fn lookup(data: &Value, pointer: Option<&str>) -> Option<String> {
    match data.pointer(pointer?)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signature::tests_support::verified;

    fn whatzme() -> JsonExtractor {
        JsonExtractor {
            id_pointer: Some("/messages/0/key/id".into()),
            type_pointer: Some("/event".into()),
        }
    }

    #[test]
    fn the_whatzme_upsert_fixture_gives_its_documented_id_and_type() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shared/fixtures/whatzme-upsert.json"
        );
        let body = std::fs::read(path).unwrap();
        let Extracted::Events(events) = whatzme().extract(&verified(body)) else {
            panic!("the fixture is JSON");
        };
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].id.as_str(), "3EB0C767D26A1D2E5F01");
        assert_eq!(events[0].event_type.as_str(), "messages.upsert");
    }

    #[test]
    fn a_body_without_an_id_is_identified_by_its_hash() {
        let body = br#"{"event":"x"}"#.to_vec();
        let Extracted::Events(events) = whatzme().extract(&verified(body.clone())) else {
            panic!("JSON");
        };
        assert_eq!(events[0].id, EventId::digest_of(&body));
    }

    #[test]
    fn invalid_json_invalid_utf8_and_deep_nesting_are_unparseable() {
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        for body in [
            b"{\"event\":".to_vec(),
            b"{\"a\":\"\xff\"}".to_vec(),
            deep.into_bytes(),
        ] {
            assert!(matches!(
                whatzme().extract(&verified(body)),
                Extracted::Unparseable { .. }
            ));
        }
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
    }
}
