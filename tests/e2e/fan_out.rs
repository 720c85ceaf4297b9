//! A request's fan-out is bounded: more events than
//! `gateway.max_events_per_request`, or messages adding up to more than four
//! times the body limit (a large shared context times many items), is
//! answered 413 at once and publishes nothing; Meta's largest batch, 1,000
//! messages, goes through with the defaults.

use std::time::{Duration, Instant};

use sluice_gateway::signature::hex_hmac_sha256;

use sluice_testkit::broker::Broker;
use sluice_testkit::providers::{WA_SECRET, send, sources_toml};
use sluice_testkit::{RunningGateway, TestEnv, post_signed};

/// A WhatzMeAPI status update with `items` statuses and a shared `pad` of `context` bytes.
fn statuses(env: &TestEnv, items: usize, context: usize) -> String {
    let statuses: Vec<String> = (0..items)
        .map(|n| format!(r#"{{"id":"{}-{n}","status":"read"}}"#, env.prefix))
        .collect();
    format!(
        r#"{{"event":"messages.update","pad":"{}","statuses":[{}]}}"#,
        "x".repeat(context),
        statuses.join(",")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_event_cap_or_the_fan_out_bound_gets_413_and_publishes_nothing() {
    let env = TestEnv::new("fanout");
    let mut config = env.config("");
    config.gateway.max_events_per_request = 50;
    let gateway = RunningGateway::start(config).await;
    let client = reqwest::Client::new();
    let url = gateway.url("whatzme");

    let (status, answer) = post_signed(&client, &url, &statuses(&env, 51, 10)).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (413, Some("too_many_events")),
        "{answer}"
    );
    assert!(
        answer["message"]
            .as_str()
            .unwrap_or_default()
            .contains("50"),
        "the message names the limit: {answer}"
    );

    // 1 MB of context times 50 items: 50 MB of messages from a 1 MB body,
    // over 4 × the 4 MiB body limit. Building them first would take that
    // memory and time; the refusal comes before.
    let started = Instant::now();
    let (status, answer) = post_signed(&client, &url, &statuses(&env, 50, 1_000_000)).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (413, Some("fan_out_too_large")),
        "{answer}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );

    let (status, answer) = post_signed(&client, &url, &statuses(&env, 50, 10)).await;
    assert_eq!(
        (status, answer["accepted"].as_u64()),
        (200, Some(50)),
        "{answer}"
    );
    gateway.stop().await;

    let broker = Broker::connect(&env.amqp_url).await;
    let topology = env.topology();
    assert_eq!(
        broker.count(&topology.work_queue()).await,
        50,
        "only the request within both limits was published"
    );
    assert_eq!(broker.count(&topology.dead_queue()).await, 0);
    broker.delete(&topology).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_meta_batch_of_1000_messages_goes_through_with_the_default_limits() {
    let env = TestEnv::new("metabatch");
    let gateway = RunningGateway::start(env.config(&sources_toml(&env))).await;
    let messages: Vec<String> = (0..1000)
        .map(|n| format!(r#"{{"from":"5215500000001","id":"wamid.{}-{n}","timestamp":"1763700001","type":"text","text":{{"body":"hola {n}"}}}}"#, env.prefix))
        .collect();
    let body = format!(
        r#"{{"object":"whatsapp_business_account","entry":[{{"id":"1","changes":[{{"field":"messages","value":{{"messaging_product":"whatsapp","metadata":{{"display_phone_number":"15550001111","phone_number_id":"1"}},"contacts":[{{"profile":{{"name":"A"}},"wa_id":"5215500000001"}}],"messages":[{}]}}}}]}}]}}"#,
        messages.join(",")
    );
    let signature = format!("sha256={}", hex_hmac_sha256(WA_SECRET, body.as_bytes()));
    let headers = [("X-Hub-Signature-256", signature)];
    let (status, answer) = send(&gateway.url("whatsapp"), &headers, body.as_bytes()).await;
    assert_eq!(status, 200, "{answer}");
    let answer: serde_json::Value = serde_json::from_str(&answer).expect("JSON");
    assert_eq!(answer["accepted"], 1000, "{answer}");
    gateway.stop().await;

    let broker = Broker::connect(&env.amqp_url).await;
    let topology = env.topology();
    let published = broker.drain(&topology.work_queue()).await;
    assert_eq!(published.len(), 1000);
    let first = published[0].json();
    assert_eq!(
        first["data"]["value"]["messages"].as_array().map(Vec::len),
        Some(1)
    );
    assert_eq!(
        first["data"]["value"]["contacts"][0]["wa_id"],
        "5215500000001"
    );
    broker.delete(&topology).await;
}
