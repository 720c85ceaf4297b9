//! Two copies of one event in the work queue (the gateway published it again
//! after its first publish's outcome was lost with a connection): the worker
//! delivers one, drops the other, and turns the event's dedup key `done`. A
//! message redelivered (the same copy again) is still delivered.

use std::time::Duration;

use lapin::BasicProperties;
use lapin::options::BasicPublishOptions;
use redis::AsyncCommands;
use sluice_shared::config::Config;
use sluice_shared::event_key::event_key;
use sluice_shared::message::{EventId, EventType, MessageHeaders, SourceName, event_properties};

use sluice_testkit::broker::Broker;
use sluice_testkit::downstream::{Downstream, Plan};
use sluice_testkit::{RunningWorker, SHARED_REDIS, TestEnv, eventually, metric};

/// A message as the gateway publishes it for event `id` in the request whose copy is `copy`.
fn message(id: &str, copy: &str) -> (Vec<u8>, BasicProperties) {
    let headers = MessageHeaders {
        source: Some(SourceName::from_config_name("whatzme")),
        event_type: Some(EventType::normalise("messages.upsert")),
        attempt: Some(0),
        request_id: Some(format!("req-{copy}")),
        copy: Some(copy.to_owned()),
        ..MessageHeaders::default()
    };
    let body = format!(
        r#"{{"specversion":"1.0","id":"{id}","source":"sluice/whatzme","type":"messages.upsert","data":{{}}}}"#
    );
    let properties = event_properties(
        &EventId::from_provider(id),
        std::time::SystemTime::now(),
        headers,
    );
    (body.into_bytes(), properties)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_copy_of_an_event_is_dropped_and_a_redelivery_is_not() {
    let env = TestEnv::new("copies");
    let downstream = Downstream::start(Plan::Succeed).await;
    // One message at a time: with several, the second copy may reach Redis
    // first and hold the record, and "first seen" would be a race.
    let toml = env
        .config_toml(&env.http_route(&downstream.url()))
        .replacen("[worker]\n", "[worker]\nconcurrency = 1\n", 1);
    let config = Config::from_toml(&toml).expect("the test config is valid");
    let worker = RunningWorker::start(config).await;
    let broker = Broker::connect(&env.amqp_url).await;
    let twice = format!("{}-twice", env.prefix);
    let redelivered = format!("{}-redelivered", env.prefix);
    let sends = [
        (twice.as_str(), "copy-a"),
        (twice.as_str(), "copy-b"),
        (redelivered.as_str(), "copy-c"),
        (redelivered.as_str(), "copy-c"),
    ];
    for (id, copy) in sends {
        let (body, properties) = message(id, copy);
        broker
            .channel()
            .basic_publish(
                "".into(),
                env.topology().work_queue().as_str().into(),
                BasicPublishOptions::default(),
                &body,
                properties,
            )
            .await
            .expect("publish")
            .await
            .expect("sent");
    }
    let client = reqwest::Client::new();
    let dropped = eventually(Duration::from_secs(10), || async {
        metric(
            &client,
            worker.admin_addr,
            "sluice_worker_duplicate_copies_total",
        )
        .await
            == Some(1.0)
            && downstream.deliveries().len() >= 3
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let deliveries = downstream.deliveries();
    let ids: Vec<String> = deliveries.iter().map(|d| d.id.clone()).collect();
    assert!(dropped, "one copy dropped, three deliveries: {ids:?}");
    assert_eq!(ids.iter().filter(|id| **id == twice).count(), 1, "{ids:?}");
    // The copy delivered must be the one holding the record.
    let delivered_copy = deliveries
        .iter()
        .find(|d| d.id == twice)
        .and_then(|d| d.request_id.as_deref()?.strip_prefix("req-"))
        .map(str::to_owned);
    assert_eq!(
        ids.iter().filter(|id| **id == redelivered).count(),
        2,
        "{ids:?}"
    );

    let mut redis = redis::Client::open(SHARED_REDIS)
        .expect("a Redis URL")
        .get_multiplexed_async_connection()
        .await
        .expect("Redis");
    let dedup: Option<String> = redis
        .get(event_key(&env.prefix, "whatzme", &twice))
        .await
        .expect("GET");
    assert_eq!(
        dedup.as_deref(),
        Some("done"),
        "a provider's later retry is a duplicate"
    );
    let holder: Option<String> = redis
        .get(event_key(
            &format!("{}:copy", env.prefix),
            "whatzme",
            &twice,
        ))
        .await
        .expect("GET");
    assert!(
        holder.as_deref() == Some("copy-a"),
        "the first copy seen (one message at a time) holds the record: {holder:?}"
    );
    assert_eq!(
        holder, delivered_copy,
        "the copy delivered is the one holding the record; the other was dropped"
    );
    worker.stop().await;
    env.assert_queues_empty_and_delete().await;
}
