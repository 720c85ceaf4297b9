//! Under a memory alarm RabbitMQ blocks a connection as soon as it
//! publishes, and stops reading from it: acks sent on it wait too. The
//! worker publishes its copies (the router's route copies, retry and dead
//! copies) on a connection of its own, so a copy held by the alarm does not
//! hold the acks of the deliveries that succeed: what waits in the route
//! queues still drains. (The router itself must publish to move an event,
//! so the work queue does not drain during an alarm: docs/reliability.md.)

use std::time::Duration;

use sluice_testkit::broker::Broker;
use sluice_testkit::downstream::{Downstream, Plan};
use sluice_testkit::private::PrivateRabbit;
use sluice_testkit::{
    RunningGateway, RunningWorker, SHARED_REDIS, TestEnv, eventually, metric, post_signed,
    upsert_body,
};

const GOOD: usize = 40;

/// Ready and unacknowledged messages of `queue`, as the node counts them.
async fn ready_and_unacked(rabbit: &PrivateRabbit, queue: &str) -> (u64, u64) {
    let listed = rabbit
        .ctl(&[
            "list_queues",
            "-q",
            "name",
            "messages_ready",
            "messages_unacknowledged",
        ])
        .await;
    let line = listed
        .lines()
        .find(|line| line.split_whitespace().next() == Some(queue));
    let mut counts = line
        .into_iter()
        .flat_map(|line| line.split_whitespace().skip(1))
        .map(|n| n.parse().unwrap_or(u64::MAX));
    let ready = counts.next().unwrap_or(u64::MAX);
    (ready, counts.next().unwrap_or(u64::MAX))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_a_memory_alarm_the_worker_still_acks_what_it_delivers() {
    let rabbit = PrivateRabbit::start().await;
    let env = TestEnv::with_brokers("alarmacks", &rabbit.url(), SHARED_REDIS);
    // The good route delivers one at a time, 100 ms each: its backlog lasts
    // into the alarm. The bad one hangs until its 2 s timeout, so its retry
    // copy is published while the alarm is on.
    let good = Downstream::start(Plan::Slow(Duration::from_millis(100))).await;
    let bad = Downstream::start(Plan::Hang).await;
    let timeout = r#"timeout = "2s""#;
    let routes = env.route(
        "good",
        r#"["whatzme.messages.upsert"]"#,
        &good.url(),
        &format!("{timeout}\nconcurrency = 1"),
    ) + &env.route(
        "bad",
        r#"["whatzme.messages.fail"]"#,
        &bad.url(),
        // Each attempt whose retry copy the alarm holds is made again, so
        // the bad route can fail five times in a row and open its breaker,
        // which would hold the event unattempted for good (the receiver
        // hangs): the breaker is not what this test reads.
        &format!("{timeout}\n[routes.breaker]\nenabled = false"),
    );
    let config = env.config(&routes);
    let good_queue = env.topology().route_queue("good");

    let worker = RunningWorker::start(config.clone()).await;
    let gateway = RunningGateway::start(config).await;
    let client = reqwest::Client::new();
    let failing = format!("{}-fail", env.prefix);
    let body = upsert_body(&failing).replace("messages.upsert", "messages.fail");
    assert_eq!(
        post_signed(&client, &gateway.url("whatzme"), &body).await.0,
        200
    );
    for n in 0..GOOD {
        let body = upsert_body(&format!("{}-good-{n}", env.prefix));
        assert_eq!(
            post_signed(&client, &gateway.url("whatzme"), &body).await.0,
            200
        );
    }
    gateway.stop().await;

    rabbit.memory_alarm(true).await;
    let delivered_before = good.delivered_ids().len();
    // The bad event's copy is held by the alarm, and with it the publishing
    // connection; the good route's deliveries must still be acknowledged.
    let drained = eventually(Duration::from_secs(30), || async {
        let (ready, unacked) = ready_and_unacked(&rabbit, &good_queue).await;
        good.delivered_ids().len() == GOOD && ready + unacked == 0
    })
    .await;
    let last = ready_and_unacked(&rabbit, &good_queue).await;
    assert!(
        drained,
        "during the alarm the good route's backlog is delivered and acked: {} delivered \
         ({delivered_before} before the alarm), (ready, unacked) = {last:?}",
        good.delivered_ids().len()
    );
    assert!(
        delivered_before < GOOD,
        "a backlog was left for the alarm ({delivered_before} delivered before it)"
    );
    assert!(bad.attempts(&failing) >= 1, "the failing event was tried");
    let broker = Broker::connect(&rabbit.url()).await;

    rabbit.memory_alarm(false).await;
    let dead = env.topology().dead_queue();
    let settled = eventually(Duration::from_secs(60), || async {
        broker.count(&dead).await == 1
    })
    .await;
    let opened = metric(
        &client,
        worker.admin_addr,
        r#"sluice_worker_route_breaker_opened_total{route="bad"}"#,
    )
    .await;
    assert!(
        settled,
        "after the alarm the failing event goes its way, to the dead queue: {} attempts, \
         the bad route's breaker opened {opened:?} times",
        bad.attempts(&failing)
    );
    worker.stop().await;
    let taken = broker.drain(&dead).await;
    assert_eq!(taken.len(), 1);
    assert_eq!(good.delivered_ids().len(), GOOD, "each good event once");
    env.assert_queues_empty_and_delete().await;
    rabbit.stop().await;
}
