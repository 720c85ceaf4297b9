use super::*;

fn event(id: &str) -> Event {
    Event {
        id: EventId::from_provider(id),
        event_type: EventType::unknown(),
        data: crate::extract::EventData::from_value(&serde_json::Value::Null),
    }
}

#[test]
fn repeats_inside_one_request_count_as_duplicates() {
    let (unique, repeated) = first_of_each_id(vec![event("a"), event("b"), event("a")]);
    assert_eq!(repeated, 1);
    let ids: Vec<_> = unique.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["a", "b"]);
}
