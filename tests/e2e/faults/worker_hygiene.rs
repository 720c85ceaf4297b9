//! The worker's own faults: a delivery task that panics gives its message
//! back instead of sitting on it until `consumer_timeout` (30 min), and a
//! message that cannot be settled is requeued after a pause, not at once.

use std::time::Duration;

use lapin::BasicProperties;
use lapin::options::{BasicGetOptions, BasicPublishOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use sluice_worker::consumer::guard_panics;
use sluice_worker::settle::Settler;

use sluice_testkit::broker::Broker;
use sluice_testkit::downstream::{Downstream, Plan};
use sluice_testkit::{
    RunningGateway, RunningWorker, SHARED_AMQP, TestEnv, eventually, post_signed, upsert_body,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_that_panics_gives_its_message_back() {
    let broker = Broker::connect(SHARED_AMQP).await;
    let channel = broker.channel();
    let queue = format!("e2e-panic-{}", uuid::Uuid::new_v4().simple());
    let exclusive = QueueDeclareOptions {
        exclusive: true,
        auto_delete: true,
        ..Default::default()
    };
    channel
        .queue_declare(queue.as_str().into(), exclusive, FieldTable::default())
        .await
        .expect("a queue of the test's own");
    channel
        .basic_publish(
            "".into(),
            queue.as_str().into(),
            BasicPublishOptions::default(),
            b"an event",
            BasicProperties::default(),
        )
        .await
        .expect("publish");
    let get = || async {
        channel
            .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: false })
            .await
            .expect("basic.get")
    };
    let taken = eventually(Duration::from_secs(5), || async {
        broker.count(&queue).await == 1
    })
    .await;
    assert!(taken, "the message is queued");
    let message = get().await.expect("the message");
    let acker = message.delivery.acker.clone();

    let connection = lapin::Connection::connect(SHARED_AMQP, Default::default())
        .await
        .expect("a connection");
    let copies = sluice_shared::publish::ConfirmChannels::new(connection, 1);
    let settler =
        Settler::new(copies, sluice_testkit::TestEnv::new("panics").topology()).expect("a name");
    let panicked = guard_panics(
        async { panic!("a bug in a delivery") },
        &settler,
        &acker,
        Duration::from_millis(50),
    )
    .await;
    assert!(panicked);

    let again = get()
        .await
        .expect("the message is back in the queue at once");
    assert!(again.delivery.redelivered, "and marked redelivered");
    assert_eq!(again.delivery.data, b"an event");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_cannot_be_settled_is_requeued_after_a_pause() {
    let env = TestEnv::new("requeuepause");
    let downstream = Downstream::start(Plan::Always(500)).await;
    let config = env.config(&env.http_route(&downstream.url()));
    let worker = RunningWorker::start(config.clone()).await;
    let gateway = RunningGateway::start(config).await;
    // The first retry tier's queue deleted by hand once both declared it:
    // the retry copy comes back unroutable, so the original cannot be settled.
    let broker = Broker::connect(&env.amqp_url).await;
    let tier = env.topology().retry_tiers()[0].queue.clone();
    broker.delete_queue(&tier).await;
    assert!(!broker.exists(&tier).await, "the tier is gone");
    let id = format!("{}-event", env.prefix);
    let (status, _) = post_signed(
        &reqwest::Client::new(),
        &gateway.url("whatzme"),
        &upsert_body(&id),
    )
    .await;
    assert_eq!(status, 200);
    let first = eventually(Duration::from_secs(10), || async {
        downstream.attempts(&id) >= 1
    })
    .await;
    assert!(first, "the event is attempted");

    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        downstream.attempts(&id),
        1,
        "no second attempt within 600 ms: the requeue waits a second"
    );
    let second = eventually(Duration::from_secs(5), || async {
        downstream.attempts(&id) >= 2
    })
    .await;
    assert!(second, "the message comes back after the pause");
    // The returned copy made the worker declare the topology again: the
    // next retry copy is routed to the restored tier and comes back.
    let third = eventually(Duration::from_secs(5), || async {
        downstream.attempts(&id) >= 3
    })
    .await;
    assert!(third, "the message is retried again");
    assert!(
        broker.exists(&tier).await,
        "the returned copy made the worker declare the topology again"
    );

    worker.stop().await;
    gateway.stop().await;
    env.delete_topology().await;
}
