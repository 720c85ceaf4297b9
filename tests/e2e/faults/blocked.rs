//! RabbitMQ blocks publishers under a memory or disk alarm: it stops reading
//! their connections. A gateway that kept publishing would pile every
//! request's frames up in memory for as long as the alarm lasts (each such
//! publish waits unconfirmed, so `sluice_gateway_unconfirmed_publishes`
//! counts them). Once RabbitMQ says `connection.blocked`, the gateway is not
//! ready, answers 503 at once and sends nothing, so its memory stays flat;
//! when the alarm lifts it is ready again.

use std::time::Duration;

use futures_util::StreamExt;

use sluice_testkit::broker::Broker;
use sluice_testkit::private::PrivateRabbit;
use sluice_testkit::{
    RunningGateway, SHARED_REDIS, TestEnv, eventually, metric, post_signed, upsert_body,
};

/// Requests sent during the alarm, and the text each carries.
const DURING: usize = 600;
const TEXT_BYTES: usize = 128 * 1024;

/// The resident memory of this process (gateway and test), in bytes.
fn rss() -> u64 {
    sluice_testkit::resident_bytes("self").expect("VmRSS")
}

/// A `messages.upsert` whose text is `TEXT_BYTES` long.
fn large_body(id: &str) -> String {
    upsert_body(id).replace("hola", &"a".repeat(TEXT_BYTES))
}

/// `DURING` large requests, 40 at a time: whether each was refused (503),
/// and the slowest answer.
async fn burst(client: &reqwest::Client, url: &str, prefix: &str) -> (bool, Duration) {
    let answers: Vec<(bool, Duration)> = futures_util::stream::iter(0..DURING)
        .map(|n| {
            let body = large_body(&format!("{prefix}-{n}"));
            async move {
                let started = std::time::Instant::now();
                let (status, _) = post_signed(client, url, &body).await;
                (status == 503, started.elapsed())
            }
        })
        .buffer_unordered(40)
        .collect()
        .await;
    let slowest = answers.iter().map(|(_, took)| *took).max();
    (
        answers.iter().all(|(refused, _)| *refused),
        slowest.unwrap_or_default(),
    )
}

async fn readyz(client: &reqwest::Client, gateway: &RunningGateway) -> (u16, serde_json::Value) {
    let response = client
        .get(format!("http://{}/readyz", gateway.admin_addr))
        .send()
        .await
        .expect("the admin port answers");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_connection_makes_the_gateway_unready_and_fail_fast_with_flat_memory() {
    let rabbit = PrivateRabbit::start().await;
    let env = TestEnv::with_brokers("blocked", &rabbit.url(), SHARED_REDIS);
    let mut config = env.config("");
    config.gateway.ack_budget = Duration::from_secs(1);
    let gateway = RunningGateway::start(config).await;
    let client = reqwest::Client::new();
    let url = gateway.url("whatzme");

    // The first publish under the alarm is sent before RabbitMQ blocks the
    // connection, and stays unconfirmed; RabbitMQ then says it blocked it.
    rabbit.memory_alarm(true).await;
    let first = format!("{}-first", env.prefix);
    let (status, _) = post_signed(&client, &url, &upsert_body(&first)).await;
    assert_eq!(status, 503);
    let unready = eventually(Duration::from_secs(10), || async {
        let (status, body) = readyz(&client, &gateway).await;
        status == 503
            && body["checks"]["rabbitmq"]
                .as_str()
                .is_some_and(|why| why.contains("blocks publishing"))
    })
    .await;
    assert!(unready, "blocked: not ready, and /readyz says why");
    let blocked = metric(&client, gateway.admin_addr, "sluice_gateway_broker_blocked").await;
    assert_eq!(blocked, Some(1.0));
    let fast = std::time::Instant::now();
    let (status, answer) = post_signed(&client, &url, &upsert_body(&format!("{first}-2"))).await;
    assert_eq!(status, 503, "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .is_some_and(|m| m.contains("blocked publishing")),
        "the answer says why: {answer}"
    );
    assert!(
        fast.elapsed() < Duration::from_secs(1),
        "at once, not at the budget"
    );

    // Many large requests during the alarm: each refused at once, none
    // sent, so none holds its frames in memory. The resident size is printed
    // for the record; other tests share this process, so it is no assertion.
    let (warm_refused, _) = burst(&client, &url, &format!("{}-warm", env.prefix)).await;
    let before = rss();
    let (refused, slowest) = burst(&client, &url, &format!("{}-during", env.prefix)).await;
    let grown = rss().saturating_sub(before);
    assert!(
        warm_refused && refused,
        "every request refused: RabbitMQ blocks publishing"
    );
    println!(
        "{DURING} requests of {} KiB under the alarm: slowest answer {slowest:?}, RSS grew {} MiB",
        TEXT_BYTES / 1024,
        grown / (1024 * 1024)
    );
    let unconfirmed = metric(
        &client,
        gateway.admin_addr,
        "sluice_gateway_unconfirmed_publishes",
    )
    .await;
    assert_eq!(
        unconfirmed,
        Some(1.0),
        "nothing but the first was sent: nothing else waits in memory"
    );

    // The alarm lifts: ready again, the first publish confirmed, new ones accepted.
    rabbit.memory_alarm(false).await;
    let ready = eventually(Duration::from_secs(10), || async {
        readyz(&client, &gateway).await.0 == 200
    })
    .await;
    assert!(ready, "ready again once unblocked");
    let after = format!("{}-after", env.prefix);
    let (status, answer) = post_signed(&client, &url, &upsert_body(&after)).await;
    assert_eq!(status, 200, "{answer}");
    gateway.stop().await;

    let broker = Broker::connect(&rabbit.url()).await;
    let mut ids: Vec<String> = broker
        .drain(&env.topology().work_queue())
        .await
        .iter()
        .map(|m| m.json()["id"].as_str().unwrap_or_default().to_owned())
        .collect();
    ids.sort();
    assert_eq!(
        ids,
        [after, first],
        "only the first and the last were published"
    );
    rabbit.stop().await;
}
