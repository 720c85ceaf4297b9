use serde_json::{Value, json};

use super::*;
use crate::signature::tests_support::verified;

fn fixture(name: &str) -> Vec<u8> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/");
    std::fs::read(format!("{dir}{name}")).unwrap()
}

fn events_of(body: Vec<u8>) -> Vec<Event> {
    match WhatsAppExtractor.extract(&verified(body), 1_000) {
        Extracted::Events(events) => events,
        other => panic!("the body gives events: {other:?}"),
    }
}

/// An event's data, parsed back.
fn data(event: &Event) -> Value {
    event.data.to_value().unwrap()
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
    let data = &data(&events[0]);
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
        let data = data(message);
        let value = &data["value"];
        assert_eq!(value["messages"].as_array().unwrap().len(), 1);
        assert_eq!(value["messages"][0]["id"], message.id.as_str());
        let contacts = value["contacts"].as_array().unwrap();
        assert_eq!(contacts.len(), 1, "only the sender's contact");
        assert_eq!(contacts[0]["wa_id"], value["messages"][0]["from"]);
        assert!(value.get("statuses").is_none());
    }
    for status in &events[3..] {
        let data = data(status);
        let value = &data["value"];
        let statuses = value["statuses"].as_array().unwrap();
        assert_eq!(statuses.len(), 1);
        let (wamid, state) = (&statuses[0]["id"], &statuses[0]["status"]);
        let own_id = format!("{}:{}", wamid.as_str().unwrap(), state.as_str().unwrap());
        assert_eq!(own_id, status.id.as_str());
        assert_eq!(value["metadata"]["phone_number_id"], "110000000000001");
        assert!(value.get("messages").is_none());
    }
    let failed = &data(&events[6])["value"]["statuses"][0];
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
    assert_eq!(data(&events[5]), expected);
}

#[test]
fn a_template_status_update_is_one_event_identified_by_its_content() {
    let events = events_of(template_update("APPROVED"));
    assert_eq!(events.len(), 1);
    let event = &events[0];
    assert_eq!(event.event_type.as_str(), "message_template_status_update");
    assert_eq!(event.id.as_str().len(), 64);
    let data = data(event);
    assert_eq!(data["object"], "whatsapp_business_account");
    assert_eq!(data["entry_id"], "102290129340398");
    assert_eq!(data["value"]["event"], "APPROVED");

    let again = events_of(template_update("APPROVED"));
    assert_eq!(again[0].id, event.id);
    let rejected = events_of(template_update("REJECTED"));
    assert_ne!(rejected[0].id, event.id);
}

#[test]
fn the_same_change_with_its_keys_in_another_order_keeps_its_id() {
    let one =
        br#"{"entry":[{"id":"1","changes":[{"field":"account_update","value":{"a":1,"b":2}}]}]}"#;
    let two =
        br#"{"entry":[{"changes":[{"value":{"b":2,"a":1},"field":"account_update"}],"id":"1"}]}"#;
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
    assert_eq!(data(&events[0])["value"]["errors"][0]["code"], 131051);
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
    let extracted = WhatsAppExtractor.extract(&verified(body.clone()), 1_000);
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
            data(&events[0]),
            serde_json::from_slice::<Value>(body).unwrap()
        );
    }
}

/// A change of `n` text messages from two senders, then `n` statuses.
fn big_batch(n: usize) -> Vec<u8> {
    let message = |i: usize| json!({"from": format!("52155{}", i % 2), "id": format!("wamid.M{i}"), "type": "text", "text": {"body": "hola"}});
    let status =
        |i: usize| json!({"id": format!("wamid.S{i}"), "status": "read", "recipient_id": "521550"});
    let body = json!({"object": "whatsapp_business_account", "entry": [{"id": "9", "changes": [
        {"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550001111", "phone_number_id": "1"},
            "contacts": [{"profile": {"name": "A"}, "wa_id": "521550"}, {"profile": {"name": "B"}, "wa_id": "521551"}],
            "messages": (0..n).map(message).collect::<Vec<_>>(),
        }},
        {"field": "messages", "value": {"statuses": (0..n).map(status).collect::<Vec<_>>()}}
    ]}]});
    serde_json::to_vec(&body).unwrap()
}

#[test]
fn serde_json_maps_are_sorted_as_the_content_ids_assume() {
    // Ids of items without a wamid hash the spliced bytes, which are only
    // canonical while serde_json's `preserve_order` feature stays off.
    assert_eq!(json!({"b": 1, "a": 2}).to_string(), r#"{"a":2,"b":1}"#);
}

#[test]
fn every_event_holds_the_bytes_serde_writes_for_its_data() {
    let mut bodies = vec![
        fixture("whatsapp-cloud-text.json"),
        fixture("whatsapp-cloud-batch.json"),
        template_update("APPROVED"),
        big_batch(5),
    ];
    bodies.push(
        br#"{"entry":[{"changes":[{"field":"messages","value":{"messages":[{"type":"text"}]}}]}]}"#
            .to_vec(),
    );
    for body in bodies {
        for event in events_of(body) {
            assert_eq!(
                String::from_utf8(event.data.to_vec()).unwrap(),
                data(&event).to_string()
            );
        }
    }
}

#[test]
fn a_message_without_a_wamid_keeps_the_id_of_its_canonical_data() {
    let body = json!({"entry": [{"id": "1", "changes": [{"field": "messages", "value": {
        "contacts": [{"wa_id": "1"}], "messages": [{"type": "text", "from": "1"}]
    }}]}]});
    let events = events_of(serde_json::to_vec(&body).unwrap());
    let mut canonical = data(&events[0]);
    let expected = content_id(&mut canonical);
    assert_eq!(events[0].id, expected);
}

#[test]
fn the_events_are_counted_before_they_are_built_and_refused_past_the_limit() {
    for body in [
        fixture("whatsapp-cloud-text.json"),
        fixture("whatsapp-cloud-batch.json"),
        template_update("APPROVED"),
        big_batch(7),
    ] {
        let payload: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(count_events(&payload), events_of(body).len());
    }
    let refused = WhatsAppExtractor.extract(&verified(big_batch(6)), 11);
    let expected = FanOutError::TooManyEvents {
        events: 12,
        limit: 11,
    };
    assert_eq!(refused, Extracted::Refused(expected));
    let within = WhatsAppExtractor.extract(&verified(big_batch(6)), 12);
    assert!(matches!(within, Extracted::Events(events) if events.len() == 12));
}

#[test]
fn the_events_of_a_change_share_one_serialised_context_and_each_sender_one_contacts() {
    let events = events_of(big_batch(4));
    let first_piece = |event: &Event| event.data.pieces()[0].as_ptr();
    assert!(
        events[..4]
            .iter()
            .all(|e| first_piece(e) == first_piece(&events[0]))
    );
    assert!(
        events[4..]
            .iter()
            .all(|e| first_piece(e) == first_piece(&events[4]))
    );
    // Messages 0 and 2 come from one sender: one copy of their contacts.
    let contacts_of = |event: &Event| {
        let pieces = event.data.pieces();
        let contacts = pieces.iter().find(|p| p.starts_with(b"[{\"profile\""));
        contacts.map(|p| p.as_ptr())
    };
    assert!(contacts_of(&events[0]).is_some());
    assert_eq!(contacts_of(&events[0]), contacts_of(&events[2]));
    assert_ne!(contacts_of(&events[0]), contacts_of(&events[1]));
}
