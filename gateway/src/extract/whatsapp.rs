//! The `whatsapp-cloud` extractor: one Meta webhook body becomes one event per
//! message and per status update, and one event per change of any other kind
//! (template status, account and quality updates, errors without messages).
//!
//! Meta batches up to 1,000 updates in one request and retries the whole
//! request, so each update must deduplicate on its own: a message by its
//! wamid, a status by `<wamid>:<status>` (one message is sent, then delivered,
//! then read), any other change by a hash of its content. Each event's data
//! keeps Meta's own envelope (`object`, `entry_id`, `field`, `value`) narrowed
//! to its one item, so a receiver parses it as it would parse Meta's, with the
//! `metadata` of the change still beside the item and `contacts` narrowed to
//! the message's sender (all of them for a status, or when none matches). The body is
//! parsed once and its parts are moved, not copied, into the events; only the
//! small context of a change is cloned per item.

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use super::{Event, EventId, EventType, Extracted};
use crate::signature::VerifiedBody;

/// The `whatsapp-cloud` extractor; it has no settings.
#[derive(Debug, Clone, Copy, Default)]
pub struct WhatsAppExtractor;

impl WhatsAppExtractor {
    pub fn extract(&self, body: &VerifiedBody) -> Extracted {
        let bytes = body.bytes();
        let Ok(payload) = serde_json::from_slice::<Value>(bytes) else {
            return Extracted::Unparseable {
                id: EventId::digest_of(bytes),
            };
        };
        // Every change yields at least one event, so a body with a change
        // cannot come out empty; one without is still authenticated and is
        // kept whole rather than answered with zero events.
        if !has_changes(&payload) {
            return Extracted::Events(vec![Event {
                id: EventId::digest_of(bytes),
                event_type: EventType::unknown(),
                data: payload,
            }]);
        }
        Extracted::Events(split_body(payload))
    }
}

/// Whether some `entry[]` holds a non-empty `changes[]`.
fn has_changes(payload: &Value) -> bool {
    let Some(entries) = payload.get("entry").and_then(Value::as_array) else {
        return false;
    };
    entries.iter().any(|entry| {
        entry
            .get("changes")
            .and_then(Value::as_array)
            .is_some_and(|changes| !changes.is_empty())
    })
}

/// The events of every change of every entry, in payload order.
fn split_body(mut payload: Value) -> Vec<Event> {
    let object = remove(&mut payload, "object");
    let mut events = Vec::new();
    for mut entry in into_items(remove(&mut payload, "entry")) {
        let entry_id = remove(&mut entry, "id");
        for change in into_items(remove(&mut entry, "changes")) {
            split_change(&object, &entry_id, change, &mut events);
        }
    }
    events
}

/// Where a change sits in the body: the envelope every event built from it carries.
struct Origin<'a> {
    object: &'a Value,
    entry_id: &'a Value,
    field: Value,
}

impl Origin<'_> {
    /// Meta's envelope around one (possibly narrowed) change value.
    fn envelope(&self, value: Value) -> Value {
        json!({
            "object": self.object.clone(),
            "entry_id": self.entry_id.clone(),
            "field": self.field.clone(),
            "value": value,
        })
    }
}

/// Appends a change's events: one per message, then one per status, or one
/// for the whole change when it carries neither.
fn split_change(object: &Value, entry_id: &Value, change: Value, events: &mut Vec<Event>) {
    let (field, value) = match change {
        Value::Object(mut change) => (
            change.remove("field").unwrap_or(Value::Null),
            change.remove("value").unwrap_or(Value::Null),
        ),
        // Not Meta's shape; kept whole as the value so nothing is lost.
        other => (Value::Null, other),
    };
    let origin = Origin {
        object,
        entry_id,
        field,
    };
    let Value::Object(mut context) = value else {
        events.push(change_event(&origin, value));
        return;
    };
    if !has_items(&context, List::Messages) && !has_items(&context, List::Statuses) {
        events.push(change_event(&origin, Value::Object(context)));
        return;
    }
    // Taken out once, so each item's value is the context plus that item alone.
    let messages = into_items(context.remove(List::Messages.key()).unwrap_or_default());
    let statuses = into_items(context.remove(List::Statuses.key()).unwrap_or_default());
    let contacts = context
        .remove("contacts")
        .map(|c| Contacts::new(into_items(c)));
    for message in messages {
        let mut context = context.clone();
        if let Some(contacts) = &contacts {
            context.insert("contacts".into(), contacts.of_sender(&message));
        }
        events.push(item_event(&origin, &context, List::Messages, message));
    }
    if let Some(contacts) = &contacts {
        context.insert("contacts".into(), contacts.all());
    }
    for status in statuses {
        events.push(item_event(&origin, &context, List::Statuses, status));
    }
}

/// A change's `contacts`, indexed by `wa_id`, so each message keeps only its
/// sender's profile (the right one at `contacts[0]`) in linear time.
struct Contacts {
    list: Vec<Value>,
    by_wa_id: HashMap<String, Vec<usize>>,
}

impl Contacts {
    fn new(list: Vec<Value>) -> Self {
        let mut by_wa_id: HashMap<String, Vec<usize>> = HashMap::new();
        for (index, contact) in list.iter().enumerate() {
            if let Some(wa_id) = contact.get("wa_id").and_then(Value::as_str) {
                by_wa_id.entry(wa_id.to_owned()).or_default().push(index);
            }
        }
        Self { list, by_wa_id }
    }

    /// The contacts whose `wa_id` is the message's `from`; all of them when none is.
    fn of_sender(&self, message: &Value) -> Value {
        let from = message.get("from").and_then(Value::as_str);
        match from.and_then(|f| self.by_wa_id.get(f)) {
            Some(indices) => Value::Array(indices.iter().map(|&i| self.list[i].clone()).collect()),
            None => self.all(),
        }
    }

    fn all(&self) -> Value {
        Value::Array(self.list.clone())
    }
}

/// The two per-item lists of a `messages` change.
#[derive(Debug, Clone, Copy)]
enum List {
    Messages,
    Statuses,
}

impl List {
    fn key(self) -> &'static str {
        match self {
            Self::Messages => "messages",
            Self::Statuses => "statuses",
        }
    }

    /// The provider id and the type of one item, before any fallback.
    fn identify(self, item: &Value) -> (Option<String>, EventType) {
        let text = |key: &str| item.get(key).and_then(Value::as_str);
        // An empty wamid would give every such item the same id: treat it as missing.
        let wamid = text("id").filter(|id| !id.is_empty());
        match self {
            Self::Messages => {
                let kind = text("type").unwrap_or("unknown");
                let event_type = EventType::normalise(&format!("message.{kind}"));
                (wamid.map(str::to_owned), event_type)
            }
            Self::Statuses => {
                let status = text("status").unwrap_or("unknown");
                let event_type = EventType::normalise(&format!("status.{status}"));
                (wamid.map(|id| format!("{id}:{status}")), event_type)
            }
        }
    }
}

/// Whether the change value holds a non-empty list under `list`'s key.
fn has_items(context: &Map<String, Value>, list: List) -> bool {
    context
        .get(list.key())
        .and_then(Value::as_array)
        .is_some_and(|items| !items.is_empty())
}

/// One message or status, in its change's envelope with its list narrowed to it.
fn item_event(origin: &Origin, context: &Map<String, Value>, list: List, item: Value) -> Event {
    let (provider_id, event_type) = list.identify(&item);
    let mut value = context.clone();
    value.insert(list.key().to_owned(), Value::Array(vec![item]));
    let mut data = origin.envelope(Value::Object(value));
    let id = match provider_id {
        Some(raw) => EventId::from_provider(&raw),
        // No wamid: its content still identifies an identical retry.
        None => content_id(&mut data),
    };
    Event {
        id,
        event_type,
        data,
    }
}

/// A change without messages or statuses, as one event identified by its content.
fn change_event(origin: &Origin, value: Value) -> Event {
    let event_type = origin
        .field
        .as_str()
        .map(EventType::normalise)
        .unwrap_or_else(EventType::unknown);
    // `object` is left out of the hash: it is the same for every change Meta sends.
    let mut data = json!({
        "entry_id": origin.entry_id.clone(),
        "field": origin.field.clone(),
        "value": value,
    });
    let id = content_id(&mut data);
    if let Value::Object(map) = &mut data {
        map.insert("object".to_owned(), origin.object.clone());
    }
    Event {
        id,
        event_type,
        data,
    }
}

/// The SHA-256 of a value's canonical form: compact, keys sorted at every level.
///
/// serde_json's maps are sorted already unless its `preserve_order` feature is
/// on (nothing in the workspace turns it on today); sorting here keeps ids
/// stable, and so dedup correct, even if a dependency ever turns it on.
fn content_id(value: &mut Value) -> EventId {
    value.sort_all_objects();
    EventId::digest_of(value.to_string().as_bytes())
}

/// Takes `key` out of an object, leaving `Null` for anything else.
fn remove(value: &mut Value, key: &str) -> Value {
    value
        .as_object_mut()
        .and_then(|map| map.remove(key))
        .unwrap_or(Value::Null)
}

/// The items of an array; nothing for any other value.
fn into_items(value: Value) -> Vec<Value> {
    match value {
        Value::Array(items) => items,
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::signature::tests_support::verified;

    fn fixture(name: &str) -> Vec<u8> {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/fixtures/");
        std::fs::read(format!("{dir}{name}")).unwrap()
    }

    fn events_of(body: Vec<u8>) -> Vec<Event> {
        match WhatsAppExtractor.extract(&verified(body)) {
            Extracted::Events(events) => events,
            Extracted::Unparseable { .. } => panic!("the body is JSON"),
        }
    }

    fn ids_and_types(events: &[Event]) -> Vec<(&str, &str)> {
        let pairs = events
            .iter()
            .map(|e| (e.id.as_str(), e.event_type.as_str()));
        pairs.collect()
    }

    /// Meta's documented template status update, with one field set by the caller.
    fn template_update(event: &str) -> Vec<u8> {
        let body = json!({
            "object": "whatsapp_business_account",
            "entry": [{
                "id": "102290129340398",
                "time": 1749416383,
                "changes": [{
                    "field": "message_template_status_update",
                    "value": {
                        "event": event,
                        "message_template_id": 1_589_254_845_219_520_u64,
                        "message_template_name": "order_confirmation",
                        "message_template_language": "en_US",
                        "reason": "NONE",
                        "message_template_category": "UTILITY"
                    }
                }]
            }]
        });
        serde_json::to_vec(&body).unwrap()
    }

    #[test]
    fn the_text_fixture_gives_one_text_message_in_its_context() {
        let events = events_of(fixture("whatsapp-cloud-text.json"));
        let wamid = "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA=";
        assert_eq!(ids_and_types(&events), [(wamid, "message.text")]);
        let data = &events[0].data;
        assert_eq!(data["object"], "whatsapp_business_account");
        assert_eq!(data["entry_id"], "102290129340398");
        assert_eq!(data["field"], "messages");
        assert_eq!(data["value"]["messaging_product"], "whatsapp");
        assert_eq!(
            data["value"]["metadata"]["phone_number_id"],
            "106540352242922"
        );
        assert_eq!(data["value"]["contacts"][0]["wa_id"], "16505551234");
        assert_eq!(data["value"]["messages"][0]["id"], wamid);
        assert!(data["value"].get("statuses").is_none());
    }

    #[test]
    fn the_batch_fixture_gives_seven_events_in_payload_order() {
        let events = events_of(fixture("whatsapp-cloud-batch.json"));
        let expected = [
            ("wamid.AAA001", "message.text"),
            ("wamid.AAA002", "message.image"),
            ("wamid.AAA003", "message.reaction"),
            ("wamid.OUT900:sent", "status.sent"),
            ("wamid.OUT900:delivered", "status.delivered"),
            ("wamid.OUT901:read", "status.read"),
            ("wamid.OUT902:failed", "status.failed"),
        ];
        assert_eq!(ids_and_types(&events), expected);
    }

    #[test]
    fn each_batch_event_holds_only_its_own_item_and_the_whole_context() {
        let events = events_of(fixture("whatsapp-cloud-batch.json"));
        for message in &events[..3] {
            let value = &message.data["value"];
            assert_eq!(value["messages"].as_array().unwrap().len(), 1);
            assert_eq!(value["messages"][0]["id"], message.id.as_str());
            let contacts = value["contacts"].as_array().unwrap();
            assert_eq!(contacts.len(), 1, "only the sender's contact");
            assert_eq!(contacts[0]["wa_id"], value["messages"][0]["from"]);
            assert!(value.get("statuses").is_none());
        }
        for status in &events[3..] {
            let value = &status.data["value"];
            let statuses = value["statuses"].as_array().unwrap();
            assert_eq!(statuses.len(), 1);
            let (wamid, state) = (&statuses[0]["id"], &statuses[0]["status"]);
            let own_id = format!("{}:{}", wamid.as_str().unwrap(), state.as_str().unwrap());
            assert_eq!(own_id, status.id.as_str());
            assert_eq!(value["metadata"]["phone_number_id"], "110000000000001");
            assert!(value.get("messages").is_none());
        }
        let failed = &events[6].data["value"]["statuses"][0];
        assert_eq!(failed["errors"][0]["code"], 131026);
    }

    #[test]
    fn a_status_event_keeps_metas_envelope_around_its_one_status() {
        let events = events_of(fixture("whatsapp-cloud-batch.json"));
        let expected = json!({
            "object": "whatsapp_business_account",
            "entry_id": "200000000000001",
            "field": "messages",
            "value": {
                "messaging_product": "whatsapp",
                "metadata": {
                    "display_phone_number": "15550001111",
                    "phone_number_id": "110000000000001"
                },
                "statuses": [{
                    "id": "wamid.OUT901",
                    "status": "read",
                    "timestamp": "1763700012",
                    "recipient_id": "5215500000002"
                }]
            }
        });
        assert_eq!(events[5].data, expected);
    }

    #[test]
    fn a_template_status_update_is_one_event_identified_by_its_content() {
        let events = events_of(template_update("APPROVED"));
        assert_eq!(events.len(), 1);
        let event = &events[0];
        assert_eq!(event.event_type.as_str(), "message_template_status_update");
        assert_eq!(event.id.as_str().len(), 64);
        assert_eq!(event.data["object"], "whatsapp_business_account");
        assert_eq!(event.data["entry_id"], "102290129340398");
        assert_eq!(event.data["value"]["event"], "APPROVED");

        let again = events_of(template_update("APPROVED"));
        assert_eq!(again[0].id, event.id);
        let rejected = events_of(template_update("REJECTED"));
        assert_ne!(rejected[0].id, event.id);
    }

    #[test]
    fn the_same_change_with_its_keys_in_another_order_keeps_its_id() {
        let one = br#"{"entry":[{"id":"1","changes":[{"field":"account_update","value":{"a":1,"b":2}}]}]}"#;
        let two = br#"{"entry":[{"changes":[{"value":{"b":2,"a":1},"field":"account_update"}],"id":"1"}]}"#;
        let (one, two) = (events_of(one.to_vec()), events_of(two.to_vec()));
        assert_eq!(one[0].id, two[0].id);
        assert_eq!(one[0].event_type.as_str(), "account_update");
    }

    #[test]
    fn a_messages_change_with_only_errors_is_one_event_of_its_field() {
        let body = json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{
            "field": "messages",
            "value": {"messaging_product": "whatsapp", "errors": [{"code": 131051}]}
        }]}]});
        let events = events_of(serde_json::to_vec(&body).unwrap());
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].event_type.as_str(), "messages");
        assert_eq!(events[0].data["value"]["errors"][0]["code"], 131051);
    }

    #[test]
    fn a_change_with_both_lists_gives_messages_before_statuses() {
        let body = json!({"entry": [{"changes": [{"field": "messages", "value": {
            "statuses": [{"id": "wamid.S", "status": "read"}],
            "messages": [{"id": "wamid.M"}, {"type": "text"}]
        }}]}]});
        let events = events_of(serde_json::to_vec(&body).unwrap());
        let pairs = ids_and_types(&events);
        assert_eq!(pairs[0], ("wamid.M", "message.unknown"));
        assert_eq!(pairs[1].1, "message.text");
        assert_eq!(pairs[1].0.len(), 64, "a message without an id is hashed");
        assert_eq!(pairs[2], ("wamid.S:read", "status.read"));
    }

    #[test]
    fn invalid_json_is_unparseable() {
        let body = b"{\"object\":\"whatsapp_business_account\",".to_vec();
        let extracted = WhatsAppExtractor.extract(&verified(body.clone()));
        let expected = Extracted::Unparseable {
            id: EventId::digest_of(&body),
        };
        assert_eq!(extracted, expected);
    }

    #[test]
    fn a_json_body_without_entries_is_one_unknown_event_kept_whole() {
        for body in [
            &br#"{"object":"page"}"#[..],
            br#"[1,2]"#,
            br#"{"entry":[]}"#,
        ] {
            let events = events_of(body.to_vec());
            assert_eq!(events.len(), 1);
            assert_eq!(events[0].id, EventId::digest_of(body));
            assert_eq!(events[0].event_type.as_str(), "unknown");
            assert_eq!(
                events[0].data,
                serde_json::from_slice::<Value>(body).unwrap()
            );
        }
    }
}
