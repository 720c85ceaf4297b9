//! The `json` extractor: one event per request, id and type from JSON pointers
//! (`/messages/0/key/id` and `/event`, or `/id` and `/type`).

use serde_json::Value;

use super::data::{EventData, Template, serialise};
use super::{Event, EventId, EventType, Extracted, FanOutError};
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
    /// The body's events: one, or one per item (refused past `max_events`).
    pub fn extract(&self, body: &VerifiedBody, max_events: usize) -> Extracted {
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
        if items.len() > max_events {
            return Extracted::Refused(FanOutError::TooManyEvents {
                events: items.len(),
                limit: max_events,
            });
        }
        // The emptied array is where each event's own item goes.
        let hole = self.items_pointer.as_deref().and_then(|p| data.pointer(p));
        let (false, Some(hole)) = (items.is_empty(), hole) else {
            let id = lookup(&data, self.id_pointer.as_deref())
                .map(|raw| EventId::from_provider(&raw))
                .unwrap_or_else(|| EventId::digest_of(bytes));
            return Extracted::Events(vec![Event {
                id,
                event_type,
                data: EventData::from_value(&data),
            }]);
        };
        // The rest of the body, serialised once for all the items.
        let template = Template::new(&data, &[hole]);
        let events = items
            .into_iter()
            .map(|item| {
                let narrowed = serialise(std::slice::from_ref(&item));
                // No id in an item: hash the item, so each item still counts once.
                let id = self.item_id(&item).unwrap_or_else(|| {
                    let inside = narrowed.len().saturating_sub(1);
                    EventId::digest_of(narrowed.get(1..inside).unwrap_or_default())
                });
                Event {
                    id,
                    event_type: event_type.clone(),
                    data: template.fill(&[&narrowed]),
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
    use serde_json::json;

    fn events_of(extractor: &JsonExtractor, body: Vec<u8>) -> Vec<Event> {
        match extractor.extract(&verified(body), 1_000) {
            Extracted::Events(events) => events,
            other => panic!("the body gives events: {other:?}"),
        }
    }

    fn statuses() -> JsonExtractor {
        JsonExtractor {
            items_pointer: Some("/statuses".into()),
            item_id_pointer: Some("/id".into()),
            item_id_suffix_pointer: Some("/status".into()),
            ..whatzme()
        }
    }

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
        let extractor = statuses();
        let upsert = events_of(&extractor, fixture("whatzme-upsert.json"));
        assert_eq!(upsert[0].id.as_str(), "3EB0C767D26A1D2E5F01");
        let events = events_of(&extractor, fixture("whatzme-update.json"));
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
        let data = events[1].data.to_value().unwrap();
        assert_eq!(data["statuses"].as_array().map(Vec::len), Some(1));
        assert_eq!(data["statuses"][0]["status"], "read");
        assert_eq!(data["event"], "messages.update");
    }

    #[test]
    fn each_item_gets_the_rest_of_the_body_exactly_as_serde_writes_it() {
        let body = json!({
            "event": "messages.update",
            "instance": {"name": "shop", "tags": ["a", "b"]},
            "statuses": [{"id": "A", "status": "read"}, {"status": "sent", "n": 1}],
            "zeta": null
        });
        let events = events_of(&statuses(), serde_json::to_vec(&body).unwrap());
        for (event, item) in events.iter().zip(body["statuses"].as_array().unwrap()) {
            let mut expected = body.clone();
            expected["statuses"] = json!([item]);
            assert_eq!(event.data.to_vec(), expected.to_string().into_bytes());
        }
        assert_eq!(events[0].id.as_str(), "A:read");
        let no_id = EventId::digest_of(json!({"status": "sent", "n": 1}).to_string().as_bytes());
        assert_eq!(events[1].id, no_id, "an item without an id is its own hash");
    }

    #[test]
    fn items_past_the_limit_are_refused_before_any_event_is_built() {
        let items: Vec<_> = (0..11)
            .map(|n| json!({"id": n, "status": "read"}))
            .collect();
        let body = serde_json::to_vec(&json!({"statuses": items})).unwrap();
        let refused = statuses().extract(&verified(body.clone()), 10);
        let expected = FanOutError::TooManyEvents {
            events: 11,
            limit: 10,
        };
        assert_eq!(refused, Extracted::Refused(expected));
        let Extracted::Events(events) = statuses().extract(&verified(body), 11) else {
            panic!("eleven are within a limit of eleven");
        };
        assert_eq!(events.len(), 11);
    }

    #[test]
    fn the_notmeta_fixture_reads_id_and_type_at_the_top() {
        let extractor = JsonExtractor {
            id_pointer: Some("/id".into()),
            type_pointer: Some("/type".into()),
            ..JsonExtractor::default()
        };
        let events = events_of(&extractor, fixture("notmeta-message-received.json"));
        assert_eq!(
            (events[0].id.as_str(), events[0].event_type.as_str()),
            ("evt_123456789", "message.received")
        );
    }

    #[test]
    fn the_whatzme_upsert_fixture_gives_its_documented_id_and_type() {
        let body = fixture("whatzme-upsert.json");
        let events = events_of(&whatzme(), body.clone());
        assert_eq!(events.len(), 1);
        let whole: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(events[0].data, EventData::from_value(&whole));
        assert_eq!(events[0].id.as_str(), "3EB0C767D26A1D2E5F01");
        assert_eq!(events[0].event_type.as_str(), "messages.upsert");
    }

    #[test]
    fn a_body_without_an_id_is_identified_by_its_hash() {
        let body = br#"{"event":"x"}"#.to_vec();
        let events = events_of(&whatzme(), body.clone());
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
                whatzme().extract(&verified(body), 1_000),
                Extracted::Unparseable { .. }
            ));
        }
    }
}
