//! A dead event as JSON: one line of `dlq export`, one item of `dlq peek --json`.
//!
//! The record names the event (id, source, type), says why it died (reason,
//! last error and status, attempts, failure times), and carries the message
//! itself: routing key, properties, every AMQP header (converted to plain
//! JSON) and the body, as the envelope when it is one, else `raw` (UTF-8 text,
//! or base64 for other bytes). Peek leaves the payload out unless asked.

use std::time::{Duration, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use lapin::types::{AMQPValue, FieldTable};
use serde_json::{Map, Value, json};

use super::event::DeadEvent;
use sluice_shared::message::integer;

/// The record of `event`; `with_data` includes the payload.
pub fn record(event: &DeadEvent, with_data: bool) -> Value {
    let properties = &event.properties;
    let mut record = json!({
        "position": event.position,
        "id": event.id,
        "source": event.source,
        "type": event.event_type,
        "route": event.route,
        "reason": event.reason.as_str(),
        "last_error": event.last_error,
        "last_status": event.last_status,
        "attempts": event.attempts,
        "first_failure": event.first_failure_ms.map(rfc3339),
        "last_failure": event.last_failure_ms.map(rfc3339),
        "received": event.received_ms.map(rfc3339),
        "replayed": event.replayed,
        "routing_key": event.routing_key,
        "properties": {
            "message_id": properties.message_id().as_ref().map(|v| v.to_string()),
            "content_type": properties.content_type().as_ref().map(|v| v.to_string()),
            "timestamp": properties.timestamp(),
            "delivery_mode": properties.delivery_mode(),
        },
        "headers": properties.headers().as_ref().map(table_json).unwrap_or_default(),
        "body_bytes": event.body.len(),
    });
    let body = match &event.envelope {
        Some(envelope) if with_data => ("envelope", envelope.clone()),
        Some(envelope) => ("envelope", without_data(envelope)),
        None if with_data => ("raw", raw(&event.body)),
        None => ("raw", Value::Null),
    };
    if let Some(object) = record.as_object_mut() {
        object.insert(body.0.to_owned(), body.1);
    }
    record
}

/// Milliseconds since the epoch as RFC 3339 (UTC, milliseconds).
pub fn rfc3339(ms: i64) -> String {
    let at = match u64::try_from(ms) {
        Ok(ms) => UNIX_EPOCH + Duration::from_millis(ms),
        Err(_) => UNIX_EPOCH,
    };
    humantime::format_rfc3339_millis(at).to_string()
}

/// The envelope without its payload (`data`, `data_base64`).
fn without_data(envelope: &Value) -> Value {
    let mut envelope = envelope.clone();
    if let Some(object) = envelope.as_object_mut() {
        object.remove("data");
        object.remove("data_base64");
    }
    envelope
}

/// Bytes that are not an envelope: as text when they are UTF-8, else base64.
fn raw(body: &[u8]) -> Value {
    match std::str::from_utf8(body) {
        Ok(text) => json!({ "utf8": text }),
        Err(_) => json!({ "base64": STANDARD.encode(body) }),
    }
}

/// AMQP headers as plain JSON.
pub fn table_json(table: &FieldTable) -> Value {
    let map: Map<String, Value> = table
        .inner()
        .iter()
        .map(|(name, value)| (name.to_string(), value_json(value)))
        .collect();
    Value::Object(map)
}

fn value_json(value: &AMQPValue) -> Value {
    match value {
        AMQPValue::Boolean(b) => json!(b),
        AMQPValue::Float(f) => json!(f),
        AMQPValue::Double(d) => json!(d),
        AMQPValue::DecimalValue(d) => json!({ "scale": d.scale, "value": d.value }),
        AMQPValue::ShortString(s) => json!(s.as_str()),
        AMQPValue::LongString(s) => match std::str::from_utf8(s.as_bytes()) {
            Ok(text) => json!(text),
            Err(_) => json!({ "base64": STANDARD.encode(s.as_bytes()) }),
        },
        AMQPValue::FieldArray(list) => {
            Value::Array(list.as_slice().iter().map(value_json).collect())
        }
        AMQPValue::FieldTable(table) => table_json(table),
        AMQPValue::ByteArray(bytes) => json!({ "base64": STANDARD.encode(bytes.as_slice()) }),
        AMQPValue::Void => Value::Null,
        number => integer(number).map_or(Value::Null, |n| json!(n)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::BasicProperties;
    use lapin::types::{FieldArray, LongString};

    #[test]
    fn a_raw_binary_message_is_exported_as_base64() {
        let event = DeadEvent::read(4, "k", BasicProperties::default(), vec![0xff, 0x00, 0x41]);
        let record = record(&event, true);
        assert_eq!(record["raw"]["base64"], "/wBB");
        assert_eq!(record["reason"], "unknown");
        assert_eq!(record["position"], 4);
        assert!(record.get("envelope").is_none());
    }

    #[test]
    fn raw_text_stays_text_and_peek_hides_it() {
        let event = DeadEvent::read(1, "k", BasicProperties::default(), b"hello".to_vec());
        assert_eq!(record(&event, true)["raw"]["utf8"], "hello");
        assert_eq!(record(&event, false)["raw"], Value::Null);
        assert_eq!(record(&event, false)["body_bytes"], 5);
    }

    #[test]
    fn an_envelope_loses_its_data_unless_asked() {
        let body = br#"{"specversion":"1.0","id":"e","source":"sluice/a","type":"t","data":{"phone":"+34"}}"#;
        let event = DeadEvent::read(1, "a.t", BasicProperties::default(), body.to_vec());
        let peeked = record(&event, false);
        assert_eq!(peeked["envelope"]["id"], "e");
        assert!(peeked["envelope"].get("data").is_none());
        assert_eq!(record(&event, true)["envelope"]["data"]["phone"], "+34");
    }

    #[test]
    fn headers_of_every_kind_become_json() {
        let mut inner = FieldTable::default();
        inner.insert(
            "reason".into(),
            AMQPValue::LongString(LongString::from("delivery_limit")),
        );
        inner.insert("time".into(), AMQPValue::Timestamp(1_700_000_000));
        let mut table = FieldTable::default();
        table.insert(
            "x-death".into(),
            AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::FieldTable(inner)])),
        );
        table.insert("flag".into(), AMQPValue::Boolean(true));
        table.insert("n".into(), AMQPValue::ShortInt(-3));
        table.insert("nothing".into(), AMQPValue::Void);
        let json = table_json(&table);
        assert_eq!(json["x-death"][0]["reason"], "delivery_limit");
        assert_eq!(json["x-death"][0]["time"], 1_700_000_000);
        assert_eq!(json["flag"], true);
        assert_eq!(json["n"], -3);
        assert_eq!(json["nothing"], Value::Null);
    }

    #[test]
    fn times_are_rfc3339_in_utc() {
        assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    }
}
