//! A publish RabbitMQ has not confirmed when the ack budget runs out: the
//! gateway answers 503, but its outcome is unknown, so the provider's retry
//! must not publish a second copy. It finds the event in flight until the
//! confirm arrives, then a duplicate.

use std::time::Duration;

use sluice_testkit::broker::Broker;
use sluice_testkit::private::PrivateRabbit;
use sluice_testkit::{
    RunningGateway, SHARED_REDIS, TestEnv, eventually, metric, post_signed, upsert_body,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_unconfirmed_at_the_budget_stays_in_flight_and_is_published_once() {
    let rabbit = PrivateRabbit::start().await;
    let env = TestEnv::with_brokers("unconfirmed", &rabbit.url(), SHARED_REDIS);
    let mut config = env.config("");
    config.gateway.ack_budget = Duration::from_millis(500);
    // Short, so the retries below outlive it: the key must be renewed.
    config.redis.pending_ttl = Duration::from_secs(1);
    let gateway = RunningGateway::start(config).await;
    let client = reqwest::Client::new();
    let url = gateway.url("whatzme");
    let id = format!("{}-blocked", env.prefix);
    let body = upsert_body(&id);

    // The broker stops reading the gateway's connection: the publish is
    // sent, but no confirm comes back.
    rabbit.memory_alarm(true).await;
    let (status, answer) = post_signed(&client, &url, &body).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (503, Some("unavailable")),
        "no confirm within the budget: {answer}"
    );
    let waiting = metric(
        &client,
        gateway.admin_addr,
        "sluice_gateway_unconfirmed_publishes",
    )
    .await;
    assert_eq!(waiting, Some(1.0), "the publish is still awaited");

    // The provider's retry, while the outcome is unknown: in flight, not a
    // second publish, even past pending_ttl (the key is renewed).
    for _ in 0..3 {
        let response = client
            .post(&url)
            .header("X-Signature", sluice_testkit::signature(body.as_bytes()))
            .body(body.clone())
            .send()
            .await
            .expect("the gateway answers");
        assert_eq!(response.status().as_u16(), 503);
        assert_eq!(
            response.headers().get("retry-after").map(|v| v.as_bytes()),
            Some(&b"1"[..]),
            "an event in flight is retried in a second"
        );
        let answer: serde_json::Value = response.json().await.expect("JSON");
        assert_eq!(answer["error"], "in_flight", "{answer}");
        tokio::time::sleep(Duration::from_millis(600)).await;
    }

    // The alarm clears, the broker reads the publish and confirms it: the
    // keys turn done and the next retry is a duplicate.
    rabbit.memory_alarm(false).await;
    let duplicate = eventually(Duration::from_secs(20), || async {
        let (status, answer) = post_signed(&client, &url, &body).await;
        status == 200 && answer["duplicates"].as_u64() == Some(1)
    })
    .await;
    assert!(duplicate, "once confirmed, the retry is a duplicate");
    let confirmed = metric(
        &client,
        gateway.admin_addr,
        "sluice_gateway_late_confirms_total{outcome=\"confirmed\"}",
    )
    .await;
    assert_eq!(confirmed, Some(1.0));
    gateway.stop().await;

    let broker = Broker::connect(&rabbit.url()).await;
    let work = broker.drain(&env.topology().work_queue()).await;
    let copies = work
        .iter()
        .filter(|m| m.json()["id"] == id.as_str())
        .count();
    assert_eq!(copies, 1, "exactly one copy was published");
    rabbit.stop().await;
}
