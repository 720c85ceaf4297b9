//! Property tests of the extractors over arbitrary input: any bytes, and
//! JSON shaped like Meta's and WhatzMeAPI's bodies with arbitrary values in
//! every place, give events, a refusal or an unparseable body; never a panic.
//! Every event's id is a usable key (printable ASCII, at most 200 bytes),
//! its type a usable routing-key part, its data valid JSON, and the length
//! counted before its envelope is written is the length written. `make fuzz`
//! runs them with a million cases each (`PROPTEST_CASES`).

use std::time::SystemTime;

use proptest::prelude::*;
use serde_json::{Value, json};

use super::json::JsonExtractor;
use super::whatsapp::WhatsAppExtractor;
use super::{Event, Extracted, Extractor};
use crate::signature::tests_support::verified;

const MAX_EVENTS: usize = 5_000;

fn extractors() -> [Extractor; 3] {
    [
        Extractor::WhatsApp(WhatsAppExtractor),
        Extractor::Json(JsonExtractor {
            id_pointer: Some("/messages/0/key/id".into()),
            items_pointer: Some("/statuses".into()),
            item_id_pointer: Some("/id".into()),
            item_id_suffix_pointer: Some("/status".into()),
            type_pointer: Some("/event".into()),
        }),
        Extractor::StandardWebhooks(JsonExtractor {
            type_pointer: Some("/type".into()),
            ..JsonExtractor::default()
        }),
    ]
}

/// The promises every extracted event keeps.
fn check(events: &[Event]) -> Result<(), TestCaseError> {
    prop_assert!(
        !events.is_empty(),
        "a parsed body yields at least one event"
    );
    for event in events {
        let id = event.id.as_str();
        prop_assert!(!id.is_empty() && id.len() <= 200, "id {id:?}");
        prop_assert!(
            id.bytes().all(|b| b == b' ' || b.is_ascii_graphic()),
            "id {id:?}"
        );
        let kind = event.event_type.as_str();
        prop_assert!(
            !kind.is_empty()
                && kind
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)),
            "type {kind:?}"
        );
        prop_assert!(event.data.to_value().is_ok(), "data is JSON");
        let body = sluice_shared::envelope::Envelope::json_bytes(
            "fuzz",
            id,
            kind,
            SystemTime::UNIX_EPOCH,
            event.data.pieces(),
        );
        prop_assert_eq!(body.len(), event.envelope_len("fuzz"));
        prop_assert!(
            serde_json::from_slice::<Value>(&body).is_ok(),
            "the envelope is JSON"
        );
    }
    Ok(())
}

fn run(body: Vec<u8>) -> Result<(), TestCaseError> {
    for extractor in extractors() {
        if let Extracted::Events(events) = extractor.extract(&verified(body.clone()), MAX_EVENTS) {
            check(&events)?;
        }
    }
    Ok(())
}

/// Any JSON value, a few levels deep.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        "\\PC{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map("[a-z_]{1,8}|id|from|wa_id|status|type", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A message or status with arbitrary values.
fn meta_item() -> impl Strategy<Value = Value> {
    (any_json(), any_json(), any_json()).prop_map(
        |(id, from, extra)| json!({"id": id, "from": from, "type": "text", "x": extra, "status": extra}),
    )
}

/// Meta's body with arbitrary values where Meta puts its own.
fn meta_shaped() -> impl Strategy<Value = Value> {
    let value = (
        proptest::collection::vec(meta_item(), 0..4),
        proptest::collection::vec(meta_item(), 0..4),
        any_json(),
        any_json(),
    )
        .prop_map(|(messages, statuses, contacts, metadata)| {
            json!({"messages": messages, "statuses": statuses, "contacts": contacts, "metadata": metadata})
        });
    let change = prop_oneof![
        (any_json(), value).prop_map(|(field, value)| json!({"field": field, "value": value})),
        any_json(),
    ];
    (
        proptest::collection::vec(proptest::collection::vec(change, 0..3), 0..3),
        any_json(),
    )
        .prop_map(|(entries, object)| {
            let entry: Vec<Value> = entries
                .into_iter()
                .map(|changes| json!({"id": "1", "changes": changes}))
                .collect();
            json!({"object": object, "entry": entry})
        })
}

proptest! {
    #[test]
    fn fuzz_any_bytes_extract_or_fail_cleanly(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        run(body)?;
    }

    #[test]
    fn fuzz_meta_shaped_bodies_give_usable_events(body in meta_shaped()) {
        run(serde_json::to_vec(&body).expect("a JSON value serialises"))?;
    }

    #[test]
    fn fuzz_whatzme_shaped_bodies_give_usable_events(
        event in any_json(),
        key in any_json(),
        statuses in proptest::collection::vec(any_json(), 0..6),
        rest in any_json(),
    ) {
        let body = json!({"event": event, "messages": [{"key": {"id": key}}], "statuses": statuses, "rest": rest});
        run(serde_json::to_vec(&body).expect("a JSON value serialises"))?;
    }
}
