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
