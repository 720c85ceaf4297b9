//! A failing downstream: retried through the tiers, or dead with its reasons.

use std::time::Duration;

use sluice_shared::message::DeadReason;

use sluice_testkit::broker::Broker;
use sluice_testkit::downstream::Plan;
use sluice_testkit::{OneEvent, eventually, one_event};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_that_fails_twice_arrives_on_the_third_attempt() {
    let OneEvent {
        env,
        downstream,
        gateway,
        worker,
        id,
    } = one_event("twice", Plan::FailFirst(2, 500), |_| {}).await;
    let arrived = eventually(Duration::from_secs(20), || async {
        downstream.delivered_ids().contains(&id)
    })
    .await;
    assert!(arrived, "the event arrives after two retries");
    assert_eq!(
        downstream.attempts(&id),
        3,
        "two failures, then the success"
    );
    worker.stop().await;
    gateway.stop().await;
    env.assert_queues_empty_and_delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_400_sends_the_event_to_the_dead_queue_at_once_with_its_reasons() {
    let OneEvent {
        env,
        downstream,
        gateway,
        worker,
        id,
    } = one_event("rejected", Plan::Always(400), |_| {}).await;
    let broker = Broker::connect(&env.amqp_url).await;
    let topology = env.topology();
    let dead = eventually(Duration::from_secs(10), || async {
        broker.count(&topology.dead_queue()).await == 1
    })
    .await;
    assert!(dead, "the event reaches the dead queue");
    worker.stop().await;
    gateway.stop().await;
    assert_eq!(downstream.attempts(&id), 1, "a 400 is never retried");
    let taken = broker.drain(&topology.dead_queue()).await;
    let message = &taken[0];
    assert_eq!(
        message
            .properties
            .message_id()
            .as_ref()
            .map(|s| s.to_string()),
        Some(id.clone())
    );
    assert_eq!(message.headers().reason, Some(DeadReason::Rejected));
    assert_eq!(
        message.routing_key, "whatzme.messages.upsert",
        "the dead copy keeps <source>.<type>"
    );
    assert_eq!(message.headers().last_status, Some(400));
    assert_eq!(message.headers().attempts, Some(1));
    assert!(message.headers().last_error.is_some_and(|e| !e.is_empty()));
    assert!(message.headers().first_failure_ms.is_some());
    assert!(message.headers().last_failure_ms.is_some());
    assert_eq!(
        message.json()["id"],
        id,
        "the dead message keeps its envelope"
    );
    assert_eq!(broker.total(&topology).await, 0);
    broker.delete(&topology).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_that_always_fails_is_dead_after_the_last_tier() {
    let OneEvent {
        env,
        downstream,
        gateway,
        worker,
        id,
    } = one_event("always", Plan::Always(503), |_| {}).await;
    let broker = Broker::connect(&env.amqp_url).await;
    let topology = env.topology();
    let dead = eventually(Duration::from_secs(30), || async {
        broker.count(&topology.dead_queue()).await == 1
    })
    .await;
    assert!(dead, "the event reaches the dead queue");
    worker.stop().await;
    gateway.stop().await;
    let tiers = topology.retry_tiers().len() as u32;
    assert_eq!(
        downstream.attempts(&id),
        tiers + 1,
        "one attempt, then one per tier"
    );
    let taken = broker.drain(&topology.dead_queue()).await;
    assert_eq!(
        taken[0].headers().reason,
        Some(DeadReason::AttemptsExhausted)
    );
    assert_eq!(taken[0].headers().attempts, Some(i64::from(tiers + 1)));
    assert_eq!(taken[0].headers().last_status, Some(503));
    assert!(downstream.delivered_ids().is_empty());
    assert_eq!(broker.total(&topology).await, 0);
    broker.delete(&topology).await;
}
