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
mod tests;
