//! Dead messages that are not what the worker writes: someone else's bytes,
//! and RabbitMQ's own dead-lettering at the work queue's delivery limit.

use std::time::{Duration, SystemTime};

use lapin::BasicProperties;
use lapin::options::{BasicGetOptions, BasicNackOptions, BasicPublishOptions};
use lapin::types::{AMQPValue, FieldArray, FieldTable, LongString};
use sluice_shared::envelope::Envelope;
use sluice_shared::message::{EventType, MessageHeaders, PERSISTENT, SourceName, headers};

use super::{DeadFixture, original, peeked_ids};
use sluice_testkit::broker::Broker;
use sluice_testkit::eventually;

/// 2026-01-02T00:00:00Z, in whole seconds as AMQP timestamps are.
const DEATH_TIME_S: u64 = 1_767_312_000;

fn text(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value))
}

/// What RabbitMQ leaves on a message it dead-letters at `x-delivery-limit`.
fn delivery_limit_properties(fixture: &DeadFixture, id: &str) -> BasicProperties {
    let topology = fixture.env.topology();
    let mut death = FieldTable::default();
    death.insert("count".into(), AMQPValue::LongLongInt(1));
    death.insert("reason".into(), text("delivery_limit"));
    death.insert("queue".into(), text(&topology.work_queue()));
    death.insert("exchange".into(), text(&topology.events_exchange()));
    death.insert("time".into(), AMQPValue::Timestamp(DEATH_TIME_S));
    let mut headers = MessageHeaders {
        source: Some(SourceName::from_config_name("alpha")),
        event_type: Some(EventType::normalise("message.text")),
        attempt: Some(0),
        ..MessageHeaders::default()
    };
    headers.broker_deaths.insert(
        headers::X_DEATH.into(),
        AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::FieldTable(death)])),
    );
    headers
        .broker_deaths
        .insert("x-first-death-reason".into(), text("delivery_limit"));
    BasicProperties::default()
        .with_message_id(id.into())
        .with_delivery_mode(PERSISTENT)
        .with_headers(headers.encode())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_is_not_a_sluice_envelope_is_shown_and_exported_raw_never_replayed() {
    let fixture = DeadFixture::seed("dlq-raw", 3, "").await;
    fixture
        .publish(
            "someone.else",
            &[0xff, 0xfe, b'x'],
            BasicProperties::default(),
        )
        .await;
    fixture
        .publish(
            "someone.else",
            br#"{"hello":"world"}"#,
            BasicProperties::default(),
        )
        .await;
    let limit_id = format!("{}-limit", fixture.env.prefix);
    let at = std::time::UNIX_EPOCH;
    let envelope = Envelope::json(
        "alpha",
        &limit_id,
        "message.text",
        at,
        serde_json::json!({}),
    );
    let properties = delivery_limit_properties(&fixture, &limit_id);
    fixture
        .publish("alpha.message.text", &envelope.to_bytes(), properties)
        .await;

    let stats = fixture.dlq(&["stats", "--json"]).await;
    assert_eq!(stats.code, Some(0), "{}", stats.stderr);
    let stats = stats.json();
    assert_eq!(stats["count"], 6);
    assert_eq!(stats["raw"], 2);
    assert_eq!(stats["by_reason"]["unknown"], 2);
    assert_eq!(stats["by_reason"]["delivery_limit"], 1);
    assert_eq!(
        stats["newest"], "2026-01-02T00:00:00.000Z",
        "the broker's death time"
    );

    let peek = fixture
        .dlq(&["peek", "--limit", "10", "--show-data", "--json"])
        .await;
    assert_eq!(peek.code, Some(0), "{}", peek.stderr);
    let peek = peek.json();
    assert_eq!(peeked_ids(&peek)[5], limit_id);
    assert_eq!(peek["events"][3]["raw"]["base64"], "//54");
    assert_eq!(peek["events"][3]["id"], serde_json::Value::Null);
    assert_eq!(peek["events"][4]["raw"]["utf8"], r#"{"hello":"world"}"#);
    assert_eq!(peek["events"][5]["reason"], "delivery_limit");
    assert_eq!(peek["events"][5]["source"], "alpha");
    let table = fixture.dlq(&["peek", "--limit", "10"]).await;
    assert!(table.stdout.contains("(raw, 3 bytes)"), "{}", table.stdout);

    let out = fixture.env.dir.path().join("raw.jsonl");
    let export = fixture
        .dlq(&["export", "--out", out.to_str().expect("UTF-8")])
        .await;
    assert_eq!(export.code, Some(0), "{}", export.stderr);
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&out)
        .expect("the export")
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    assert_eq!(lines.len(), 6);
    assert_eq!(lines[3]["raw"]["base64"], "//54");
    assert_eq!(
        lines[5]["headers"]["x-death"][0]["reason"],
        "delivery_limit"
    );

    let replay = fixture.dlq(&["replay", "--json"]).await;
    assert_eq!(replay.code, Some(0), "{}", replay.stderr);
    assert_eq!(replay.json()["not_replayable"], 2);
    assert_eq!(
        replay.json()["replayed"],
        4,
        "the three seeded and the broker's"
    );
    let broker = Broker::connect(&fixture.env.amqp_url).await;
    let copies = broker.drain(&fixture.env.topology().work_queue()).await;
    assert_eq!(copies.len(), 4);
    assert_eq!(
        copies[3].headers().broker_deaths.get(headers::X_DEATH),
        None,
        "the broker's record is taken off"
    );
    assert_eq!(
        fixture.drain_and_delete().await,
        ["-", "-"],
        "the raw ones stay dead"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_rabbitmq_dead_lettered_at_the_delivery_limit_reads_as_such_and_replays() {
    let fixture = DeadFixture::seed("dlq-limit", 0, "").await;
    let topology = fixture.env.topology();
    let id = format!("{}-crasher", fixture.env.prefix);
    let data = serde_json::json!({});
    let envelope = Envelope::json("alpha", &id, "message.text", SystemTime::now(), data);
    let channel = fixture.channel();
    let confirm = channel
        .basic_publish(
            topology.events_exchange().as_str().into(),
            "alpha.message.text".into(),
            BasicPublishOptions::default(),
            &envelope.to_bytes(),
            original(&id, "alpha", "message.text"),
        )
        .await
        .expect("publish");
    assert!(confirm.await.expect("confirm").is_ack());
    // A worker that dies on this event, again and again: taken, then given back.
    let work = topology.work_queue();
    let dead = eventually(Duration::from_secs(20), || async {
        let options = BasicGetOptions { no_ack: false };
        if let Some(message) = channel
            .basic_get(work.as_str().into(), options)
            .await
            .expect("get")
        {
            let requeue = BasicNackOptions {
                multiple: false,
                requeue: true,
            };
            message.delivery.acker.nack(requeue).await.expect("nack");
        }
        fixture.dead_count().await == 1
    })
    .await;
    assert!(
        dead,
        "RabbitMQ dead-letters it at the work queue's x-delivery-limit"
    );

    let peek = fixture.dlq(&["peek", "--json"]).await;
    assert_eq!(peek.code, Some(0), "{}", peek.stderr);
    let event = &peek.json()["events"][0];
    assert_eq!(event["id"], id.as_str());
    assert_eq!(event["reason"], "delivery_limit");
    assert_eq!(event["source"], "alpha");
    assert_eq!(event["type"], "message.text");
    assert!(
        event["last_failure"].is_string(),
        "the broker's time: {event}"
    );

    let replay = fixture
        .dlq(&["replay", "--reason", "delivery_limit", "--json"])
        .await;
    assert_eq!(replay.json()["replayed"], 1, "{}", replay.stderr);
    let copies = Broker::connect(&fixture.env.amqp_url)
        .await
        .drain(&work)
        .await;
    assert_eq!(copies.len(), 1);
    assert_eq!(
        copies[0].headers().broker_deaths.get(headers::X_DEATH),
        None
    );
    assert_eq!(copies[0].headers().attempt, Some(0));
    assert!(fixture.drain_and_delete().await.is_empty());
}
