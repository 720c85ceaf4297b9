//! The `json` extractor: one event per request, id and type from JSON pointers
//! (`/messages/0/key/id` and `/event`, or `/id` and `/type`).

use serde_json::Value;

use super::{Event, EventId, EventType, Extracted};
use crate::signature::VerifiedBody;

/// The `json` extractor: id and type from JSON pointers, one event per
/// request or one per item of an array.
#[derive(Debug, Clone, Default)]
pub struct JsonExtractor {
    /// The id in the body.
    pub id_pointer: Option<String>,
    /// An array whose items are one event each (`/statuses`).
    pub items_pointer: Option<String>,
    /// An item's id, relative to the item.
    pub item_id_pointer: Option<String>,
    /// Text appended to an item's id after `:`, relative to the item.
    pub item_id_suffix_pointer: Option<String>,
    /// The type, always from the body.
    pub type_pointer: Option<String>,
}

impl JsonExtractor {
    pub fn extract(&self, body: &VerifiedBody) -> Extracted {
        let bytes = body.bytes();
        let Ok(mut data) = serde_json::from_slice::<Value>(bytes) else {
            return Extracted::Unparseable {
                id: EventId::digest_of(bytes),
            };
        };
        let event_type = lookup(&data, self.type_pointer.as_deref())
            .map(|raw| EventType::normalise(&raw))
            .unwrap_or_else(EventType::unknown);
        let items = self.take_items(&mut data);
        if items.is_empty() {
            let id = lookup(&data, self.id_pointer.as_deref())
                .map(|raw| EventId::from_provider(&raw))
                .unwrap_or_else(|| EventId::digest_of(bytes));
            return Extracted::Events(vec![Event {
                id,
                event_type,
                data,
            }]);
        }
        let pointer = self.items_pointer.as_deref().unwrap_or_default();
        let events = items
            .into_iter()
            .map(|item| {
                // No id in an item: hash the item, so each item still counts once.
                let id = self
                    .item_id(&item)
                    .unwrap_or_else(|| EventId::digest_of(item.to_string().as_bytes()));
                let mut event_data = data.clone();
                if let Some(slot) = event_data.pointer_mut(pointer) {
                    *slot = Value::Array(vec![item]);
                }
                Event {
                    id,
                    event_type: event_type.clone(),
                    data: event_data,
                }
            })
            .collect();
        Extracted::Events(events)
    }

    /// Takes the items array out of the body (left empty), so each event's
    /// data is the small rest of the body plus its one item.
    fn take_items(&self, data: &mut Value) -> Vec<Value> {
        let Some(pointer) = self.items_pointer.as_deref() else {
            return Vec::new();
        };
        match data.pointer_mut(pointer) {
            Some(Value::Array(items)) => std::mem::take(items),
            _ => Vec::new(),
        }
    }

    fn item_id(&self, item: &Value) -> Option<EventId> {
        let id = lookup(item, self.item_id_pointer.as_deref())?;
        let raw = match lookup(item, self.item_id_suffix_pointer.as_deref()) {
            Some(suffix) => format!("{id}:{suffix}"),
            None => id,
        };
        Some(EventId::from_provider(&raw))
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
            ..JsonExtractor::default()
        }
    }

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/../tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(path).unwrap()
    }

    #[test]
    fn a_status_batch_fans_out_one_event_per_item_with_status_suffixed_ids() {
        // One config serves both WhatzMeAPI shapes: upsert (id in the body) and update (per status).
        let extractor = JsonExtractor {
            items_pointer: Some("/statuses".into()),
            item_id_pointer: Some("/id".into()),
            item_id_suffix_pointer: Some("/status".into()),
            ..whatzme()
        };
        let Extracted::Events(upsert) =
            extractor.extract(&verified(fixture("whatzme-upsert.json")))
        else {
            panic!("JSON");
        };
        assert_eq!(upsert[0].id.as_str(), "3EB0C767D26A1D2E5F01");
        let Extracted::Events(events) =
            extractor.extract(&verified(fixture("whatzme-update.json")))
        else {
            panic!("JSON");
        };
        let ids: Vec<_> = events.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "3EB0C767D26A1D2E5F01:delivered",
                "3EB0C767D26A1D2E5F01:read"
            ]
        );
        assert!(
            events
                .iter()
                .all(|e| e.event_type.as_str() == "messages.update")
        );
        assert_eq!(events[1].data["statuses"].as_array().map(Vec::len), Some(1));
        assert_eq!(events[1].data["statuses"][0]["status"], "read");
        assert_eq!(events[1].data["event"], "messages.update");
    }

    #[test]
    fn the_notmeta_fixture_reads_id_and_type_at_the_top() {
        let extractor = JsonExtractor {
            id_pointer: Some("/id".into()),
            type_pointer: Some("/type".into()),
            ..JsonExtractor::default()
        };
        let Extracted::Events(events) =
            extractor.extract(&verified(fixture("notmeta-message-received.json")))
        else {
            panic!("JSON");
        };
        assert_eq!(
            (events[0].id.as_str(), events[0].event_type.as_str()),
            ("evt_123456789", "message.received")
        );
    }

    #[test]
    fn the_whatzme_upsert_fixture_gives_its_documented_id_and_type() {
        let body = fixture("whatzme-upsert.json");
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
