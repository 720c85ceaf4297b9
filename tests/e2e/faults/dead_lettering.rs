//! A RabbitMQ 3.10 without the `stream_queue` feature flag dead-letters
//! at-most-once although the queues ask for at-least-once, and says so only
//! in its own log. The worker checks through the management API at start
//! and refuses to run on such a broker, saying how to fix it.

use sluice_worker::Worker;

use sluice_testkit::private::{PrivateRabbit, RabbitOptions};
use sluice_testkit::{RunningWorker, SHARED_REDIS, TestEnv, metric};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_refuses_a_broker_that_would_dead_letter_at_most_once() {
    let rabbit = PrivateRabbit::start_with(RabbitOptions {
        management: true,
        without_stream_queue: true,
    })
    .await;
    let env = TestEnv::with_brokers("atmostonce", &rabbit.url(), SHARED_REDIS);
    let mut config = env.config("");
    let management = reqwest::Url::parse(&rabbit.management_url()).expect("the management URL");
    config.amqp.management_url = Some(management);

    let refused = Worker::build(config.clone()).await.err().expect("refused");
    let message = refused.to_string();
    assert!(
        message.contains("rabbitmqctl enable_feature_flag stream_queue")
            && message.contains("at-most-once"),
        "{message}"
    );
    assert_eq!(refused.exit_code(), 1);

    rabbit.enable_feature_flag("stream_queue").await;
    let worker = RunningWorker::start(config).await;
    let verified = metric(
        &reqwest::Client::new(),
        worker.admin_addr,
        "sluice_worker_dead_lettering_verified",
    )
    .await;
    assert_eq!(
        verified,
        Some(1.0),
        "once the flag is on, it starts and says so"
    );
    worker.stop().await;
    rabbit.stop().await;
}

/// Publishes one persistent message to the dead exchange and awaits its
/// confirm: whether RabbitMQ took it (ack) or refused it (nack).
async fn publish_dead(channel: &lapin::Channel, exchange: &str, id: &str) -> bool {
    let properties = lapin::BasicProperties::default()
        .with_message_id(id.into())
        .with_delivery_mode(2);
    let confirm = channel
        .basic_publish(
            exchange.into(),
            "whatzme.contact.upsert".into(),
            lapin::options::BasicPublishOptions::default(),
            id.as_bytes(),
            properties,
        )
        .await
        .expect("the publish is sent")
        .await
        .expect("a confirm comes back");
    match confirm {
        lapin::Confirmation::Ack(None) => true,
        lapin::Confirmation::Nack(None) => false,
        other => panic!("neither a plain ack nor a nack: {other:?}"),
    }
}

/// Under a length limit set by a policy (as a managed RabbitMQ may have),
/// a full dead queue refuses the next dead event instead of dropping its
/// oldest one; and a dead queue declared by an earlier version, without the
/// argument, is kept as it is and still receives dead events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capped_dead_queue_refuses_rather_than_drops_and_an_old_one_is_kept() {
    let rabbit = PrivateRabbit::start().await;
    let connection = lapin::Connection::connect(&rabbit.url(), Default::default())
        .await
        .expect("the private node answers");
    let channel = connection.create_channel().await.expect("a channel");
    channel
        .confirm_select(Default::default())
        .await
        .expect("confirm mode");

    let capped = TestEnv::with_brokers("deadcap", &rabbit.url(), SHARED_REDIS).topology();
    capped.declare(&connection).await.expect("the topology");
    let dead = capped.dead_queue();
    let definition = r#"{"max-length": 2}"#;
    rabbit
        .ctl(&[
            "set_policy",
            "--apply-to",
            "queues",
            "cap",
            &format!("^{dead}$"),
            definition,
        ])
        .await;
    let applied = sluice_testkit::eventually(std::time::Duration::from_secs(10), || async {
        let listed = rabbit.ctl(&["list_queues", "-q", "name", "policy"]).await;
        listed
            .lines()
            .any(|line| line.starts_with(&dead) && line.contains("cap"))
    })
    .await;
    assert!(applied, "the policy applies to {dead}");
    let exchange = capped.dead_exchange();
    // A quorum queue turns to refusing once a publish took it over its
    // limit, so it may hold one more than the cap; what matters is that
    // publishes come back refused and nothing taken is dropped.
    let mut acked = Vec::new();
    let mut refused = 0;
    for n in 0..10 {
        let id = format!("dead-{n}");
        if publish_dead(&channel, &exchange, &id).await {
            acked.push(id);
        } else {
            refused += 1;
        }
    }
    assert!(
        refused > 0,
        "a capped dead queue refuses: {acked:?} all taken"
    );
    let broker = sluice_testkit::broker::Broker::connect(&rabbit.url()).await;
    let kept: Vec<String> = broker
        .drain(&dead)
        .await
        .iter()
        .map(|m| String::from_utf8_lossy(&m.body).into_owned())
        .collect();
    assert_eq!(
        kept, acked,
        "every dead event it took is kept, the oldest first"
    );
    assert_eq!(kept.first().map(String::as_str), Some("dead-0"));

    // As an earlier version declared it: no x-overflow.
    let old = TestEnv::with_brokers("deadold", &rabbit.url(), SHARED_REDIS).topology();
    let mut args = lapin::types::FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        lapin::types::AMQPValue::LongString("quorum".into()),
    );
    let durable = lapin::options::QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel
        .queue_declare(old.dead_queue().as_str().into(), durable, args)
        .await
        .expect("the old dead queue");
    old.declare(&connection)
        .await
        .expect("an old dead queue is kept, not refused");
    assert!(publish_dead(&channel, &old.dead_exchange(), "old-0").await);
    assert_eq!(
        broker.count(&old.dead_queue()).await,
        1,
        "still bound and receiving"
    );
    rabbit.stop().await;
}
