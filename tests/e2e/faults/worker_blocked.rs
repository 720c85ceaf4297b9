//! Under a memory alarm RabbitMQ blocks a connection as soon as it
//! publishes, and stops reading from it: acks sent on it wait too. The
//! worker publishes its retry and dead copies on a connection of its own,
//! so a copy held by the alarm does not hold the acks of the deliveries that
//! succeed: the backlog that raised the alarm still drains.

use std::time::Duration;

use sluice_testkit::broker::Broker;
use sluice_testkit::downstream::{Downstream, Plan};
use sluice_testkit::private::PrivateRabbit;
use sluice_testkit::{
    RunningGateway, RunningWorker, SHARED_REDIS, TestEnv, eventually, post_signed, upsert_body,
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

fn route(name: &str, pattern: &str, url: &str, env: &TestEnv) -> String {
    format!(
        "[[routes]]\nname = \"{name}\"\nmatch = [\"{pattern}\"]\nhandler = \"http\"\nurl = \"{url}\"\n\
         secret = \"file:{}\"\ntimeout = \"2s\"\n",
        env.secret_path("route.secret").display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_a_memory_alarm_the_worker_still_acks_what_it_delivers() {
    let rabbit = PrivateRabbit::start().await;
    let env = TestEnv::with_brokers("alarmacks", &rabbit.url(), SHARED_REDIS);
    let good = Downstream::start(Plan::Succeed).await;
    let bad = Downstream::start(Plan::Always(500)).await;
    let routes = route("good", "whatzme.messages.upsert", &good.url(), &env)
        + &route("bad", "whatzme.messages.fail", &bad.url(), &env);
    let config = env.config(&routes);
    let work = env.topology().work_queue();

    // The backlog, accepted before the alarm and before any worker runs.
    let gateway = RunningGateway::start(config.clone()).await;
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
    let broker = Broker::connect(&rabbit.url()).await;
    assert_eq!(broker.count(&work).await, GOOD as u32 + 1);

    rabbit.memory_alarm(true).await;
    let worker = RunningWorker::start(config).await;
    // The failing event's retry copy is held by the alarm, and with it its
    // connection; the other deliveries must still be acknowledged.
    let drained = eventually(Duration::from_secs(30), || async {
        let (ready, unacked) = ready_and_unacked(&rabbit, &work).await;
        good.delivered_ids().len() == GOOD && ready + unacked == 1
    })
    .await;
    let last = ready_and_unacked(&rabbit, &work).await;
    assert!(
        drained,
        "during the alarm every good event is delivered and acked, only the failing one is \
         held: {} delivered, (ready, unacked) = {last:?}",
        good.delivered_ids().len()
    );
    assert!(bad.attempts(&failing) >= 1, "the failing event was tried");

    rabbit.memory_alarm(false).await;
    let dead = env.topology().dead_queue();
    let settled = eventually(Duration::from_secs(60), || async {
        broker.count(&dead).await == 1
    })
    .await;
    assert!(
        settled,
        "after the alarm the failing event goes its way, to the dead queue"
    );
    worker.stop().await;
    let taken = broker.drain(&dead).await;
    assert_eq!(taken.len(), 1);
    assert_eq!(good.delivered_ids().len(), GOOD, "each good event once");
    env.assert_queues_empty_and_delete().await;
    rabbit.stop().await;
}
