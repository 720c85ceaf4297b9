//! The broker goes away: the gateway answers 503 within the budget, and the
//! provider's retry after the broker is back is accepted, not a duplicate.
//! What was acknowledged before the outage is still there after it.

use std::time::{Duration, Instant};

use sluice_testkit::broker::Broker;
use sluice_testkit::private::PrivateRabbit;
use sluice_testkit::{RunningGateway, SHARED_REDIS, TestEnv, eventually, post_signed, upsert_body};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_gives_503_in_budget_and_the_retry_is_accepted_afterwards() {
    let rabbit = PrivateRabbit::start().await;
    let env = TestEnv::with_brokers("outage", &rabbit.url(), SHARED_REDIS);
    let gateway = RunningGateway::start(env.config("")).await;
    let client = reqwest::Client::new();
    let url = gateway.url("whatzme");
    let before = upsert_body(&format!("{}-before", env.prefix));
    let during = upsert_body(&format!("{}-during", env.prefix));

    let (status, answer) = post_signed(&client, &url, &before).await;
    assert_eq!(
        (status, answer["accepted"].as_u64()),
        (200, Some(1)),
        "{answer}"
    );

    rabbit.stop().await;
    let started = Instant::now();
    let response = client
        .post(&url)
        .header("X-Signature", sluice_testkit::signature(during.as_bytes()))
        .body(during.clone())
        .send()
        .await
        .expect("the gateway answers while the broker is down");
    let elapsed = started.elapsed();
    assert_eq!(response.status().as_u16(), 503);
    assert!(
        response.headers().contains_key("retry-after"),
        "503 says when to retry"
    );
    assert!(
        elapsed < Duration::from_secs(2),
        "answered within the hard budget, took {elapsed:?}"
    );
    let answer: serde_json::Value = response.json().await.expect("JSON");
    assert_eq!(answer["error"], "unavailable");

    rabbit.boot().await;
    let admin = format!("http://{}/readyz", gateway.admin_addr);
    let ready = eventually(Duration::from_secs(30), || async {
        client
            .get(&admin)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await;
    assert!(ready, "the gateway reconnects when the broker is back");

    let (status, answer) = post_signed(&client, &url, &during).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        (answer["accepted"].as_u64(), answer["duplicates"].as_u64()),
        (Some(1), Some(0)),
        "the retry is not a false duplicate"
    );
    gateway.stop().await;

    let broker = Broker::connect(&rabbit.url()).await;
    let work = broker.drain(&env.topology().work_queue()).await;
    let mut ids: Vec<String> = work
        .iter()
        .map(|m| m.json()["id"].as_str().unwrap_or_default().to_owned())
        .collect();
    ids.sort();
    let mut expected = vec![
        format!("{}-before", env.prefix),
        format!("{}-during", env.prefix),
    ];
    expected.sort();
    assert_eq!(
        ids, expected,
        "the event acknowledged before the restart survived it, and the retry was published once"
    );
    rabbit.stop().await;
}
