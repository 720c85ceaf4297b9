//! The `json` extractor: one event per request, id and type from JSON pointers
//! (`/messages/0/key/id` and `/event`, or `/id` and `/type`).

use serde_json::Value;

use super::{Event, EventId, EventType, Extracted};
use crate::signature::VerifiedBody;

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
    use crate::extract::EventId;
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
}
