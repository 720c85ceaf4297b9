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
//! the message's sender (all of them for a status, or when none matches).
//!
//! The body is parsed once and counted before any event is built (more than
//! `max_events` are refused). Each change's context is serialised once, as a
//! [`Template`] with holes for the item and, for messages, the sender's
//! contacts (each sender's serialised once too); an event is that template
//! plus its item, so the events take memory in proportion to the body.

use std::collections::HashMap;

use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::data::{EventData, Template, serialise};
use super::{Event, EventId, EventType, Extracted, FanOutError};
use crate::signature::VerifiedBody;

/// The `whatsapp-cloud` extractor; it has no settings.
#[derive(Debug, Clone, Copy, Default)]
pub struct WhatsAppExtractor;

impl WhatsAppExtractor {
    /// The body's events, or a refusal when it holds more than `max_events`.
    pub fn extract(&self, body: &VerifiedBody, max_events: usize) -> Extracted {
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
                data: EventData::from_value(&payload),
            }]);
        }
        let events = count_events(&payload);
        if events > max_events {
            return Extracted::Refused(FanOutError::TooManyEvents {
                events,
                limit: max_events,
            });
        }
        Extracted::Events(split_body(payload))
    }
}

/// The changes of every entry, in payload order.
fn changes(payload: &Value) -> impl Iterator<Item = &Value> {
    let entries = payload.get("entry").and_then(Value::as_array);
    entries.into_iter().flatten().flat_map(|entry| {
        let changes = entry.get("changes").and_then(Value::as_array);
        changes.into_iter().flatten()
    })
}

/// Whether some `entry[]` holds a non-empty `changes[]`.
fn has_changes(payload: &Value) -> bool {
    changes(payload).next().is_some()
}

/// How many events [`split_body`] makes of the payload, without making them.
fn count_events(payload: &Value) -> usize {
    changes(payload)
        .map(|change| {
            let Some(value) = change.get("value").and_then(Value::as_object) else {
                return 1;
            };
            let items = |list: List| {
                value
                    .get(list.key())
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len)
            };
            (items(List::Messages) + items(List::Statuses)).max(1)
        })
        .fold(0, usize::saturating_add)
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
    let mut contacts = context
        .remove("contacts")
        .map(|c| Contacts::new(into_items(c)));
    let mut data = origin.envelope(Value::Object(context));
    if !messages.is_empty() {
        message_events(&mut data, messages, contacts.as_mut(), events);
    }
    if !statuses.is_empty() {
        status_events(&mut data, statuses, contacts.map(|c| c.list), events);
    }
}

/// One event per message: the change's envelope with the message alone and,
/// when the change has `contacts`, only the sender's.
fn message_events(
    data: &mut Value,
    messages: Vec<Value>,
    mut contacts: Option<&mut Contacts>,
    events: &mut Vec<Event>,
) {
    let holes: &[&str] = match contacts {
        Some(_) => &[List::Messages.key(), "contacts"],
        None => &[List::Messages.key()],
    };
    let template = template(data, holes);
    for message in messages {
        let sender = contacts.as_mut().map(|c| c.of_sender(&message));
        let item = serialise(std::slice::from_ref(&message));
        let fills: Vec<&Bytes> = [Some(&item), sender.as_ref()]
            .into_iter()
            .flatten()
            .collect();
        events.push(item_event(List::Messages, &message, template.fill(&fills)));
    }
}

/// One event per status: the change's envelope with the status alone and
/// every contact of the change.
fn status_events(
    data: &mut Value,
    statuses: Vec<Value>,
    contacts: Option<Vec<Value>>,
    events: &mut Vec<Event>,
) {
    if let Some(value) = data.get_mut("value").and_then(Value::as_object_mut) {
        // The messages' hole, if they had one, is no part of a status.
        value.remove(List::Messages.key());
        if let Some(contacts) = contacts {
            value.insert("contacts".into(), Value::Array(contacts));
        }
    }
    let template = template(data, &[List::Statuses.key()]);
    for status in statuses {
        let item = serialise(std::slice::from_ref(&status));
        events.push(item_event(List::Statuses, &status, template.fill(&[&item])));
    }
}

/// The change's envelope serialised once, with `holes` (keys of its value,
/// put there if missing) left for each event to fill, in that order.
fn template(data: &mut Value, holes: &[&str]) -> Template {
    if let Some(value) = data.get_mut("value").and_then(Value::as_object_mut) {
        for key in holes {
            value.insert((*key).to_owned(), Value::Null);
        }
    }
    // Just inserted, so always found; a hole not found would only stay unfilled.
    let missing = &Value::Null;
    let nodes: Vec<&Value> = holes
        .iter()
        .map(|key| {
            data.get("value")
                .and_then(|v| v.get(*key))
                .unwrap_or(missing)
        })
        .collect();
    Template::new(data, &nodes)
}

/// A change's `contacts`, indexed by `wa_id`, so each message keeps only its
/// sender's profile (the right one at `contacts[0]`) in linear time, each
/// sender's serialised once however many messages they sent.
struct Contacts {
    list: Vec<Value>,
    by_wa_id: HashMap<String, Vec<usize>>,
    /// The serialised contacts of each sender seen so far.
    of_sender: HashMap<String, Bytes>,
    /// All of them serialised, once needed.
    all: Option<Bytes>,
}

impl Contacts {
    fn new(list: Vec<Value>) -> Self {
        let mut by_wa_id: HashMap<String, Vec<usize>> = HashMap::new();
        for (index, contact) in list.iter().enumerate() {
            if let Some(wa_id) = contact.get("wa_id").and_then(Value::as_str) {
                by_wa_id.entry(wa_id.to_owned()).or_default().push(index);
            }
        }
        Self {
            list,
            by_wa_id,
            of_sender: HashMap::new(),
            all: None,
        }
    }

    /// The contacts whose `wa_id` is the message's `from`, serialised; all of them when none is.
    fn of_sender(&mut self, message: &Value) -> Bytes {
        let Self {
            list,
            by_wa_id,
            of_sender,
            all,
        } = self;
        let from = message.get("from").and_then(Value::as_str);
        match from.and_then(|f| Some((f, by_wa_id.get(f)?))) {
            Some((from, indices)) => of_sender
                .entry(from.to_owned())
                .or_insert_with(|| {
                    let own: Vec<&Value> = indices.iter().filter_map(|&i| list.get(i)).collect();
                    serialise(&own)
                })
                .clone(),
            None => all.get_or_insert_with(|| serialise(list)).clone(),
        }
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

/// One message or status, with its data already spliced from its change's template.
fn item_event(list: List, item: &Value, data: EventData) -> Event {
    let (provider_id, event_type) = list.identify(item);
    let id = match provider_id {
        Some(raw) => EventId::from_provider(&raw),
        // No wamid: its content still identifies an identical retry. The data
        // is canonical already: serde_json's maps are sorted (see `content_id`).
        None => EventId::digest_of_pieces(data.pieces()),
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
        data: EventData::from_value(&data),
    }
}

/// The SHA-256 of a value's canonical form: compact, keys sorted at every level.
///
/// serde_json's maps are sorted already unless its `preserve_order` feature is
/// on (nothing in the workspace turns it on today, and a test of this module
/// would fail if something did); sorting here keeps ids stable, and so dedup
/// correct, even if a dependency ever turns it on.
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
