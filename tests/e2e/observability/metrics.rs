//! Known traffic in, exact counters out: n accepted and delivered, m
//! duplicates, k bad signatures, j events a downstream refuses into the dead
//! queue. Both scrapes must also pass `promtool check metrics`.

use std::time::Duration;

use futures_util::StreamExt;

use super::scrape::{Scrape, promtool_check_metrics};
use sluice_testkit::broker::Broker;
use sluice_testkit::downstream::{Downstream, Plan};
use sluice_testkit::{
    RunningGateway, RunningWorker, TestEnv, eventually, post_signed, upsert_body,
};

const ACCEPTED: usize = 12;
const DUPLICATES: usize = 5;
const BAD_SIGNATURES: usize = 3;
const DEAD: usize = 4;

/// Routes: `messages.upsert` to a healthy service, `messages.reject` to one
/// that answers 400 (dead at once, reason `rejected`).
fn routes(env: &TestEnv, ok: &Downstream, refusing: &Downstream) -> String {
    let secret = env.secret_path("route.secret");
    let route = |name: &str, pattern: &str, url: String| {
        format!(
            "[[routes]]\nname = \"{name}\"\nmatch = [\"{pattern}\"]\nhandler = \"http\"\nurl = \"{url}\"\nsecret = \"file:{}\"\ntimeout = \"2s\"\n",
            secret.display()
        )
    };
    route("crm", "whatzme.messages.upsert", ok.url())
        + &route("legacy", "whatzme.messages.reject", refusing.url())
}

fn reject_body(id: &str) -> String {
    format!(r#"{{"event":"messages.reject","messages":[{{"key":{{"id":"{id}"}}}}]}}"#)
}

/// Sends `bodies` signed, 8 at a time; returns the statuses.
async fn send_all(client: &reqwest::Client, url: &str, bodies: Vec<String>) -> Vec<u16> {
    futures_util::stream::iter(bodies)
        .map(|body| async move { post_signed(client, url, &body).await.0 })
        .buffer_unordered(8)
        .collect()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scraped_counters_equal_the_traffic_sent_and_promtool_accepts_both_pages() {
    let env = TestEnv::new("metrics");
    let ok = Downstream::start(Plan::Succeed).await;
    let refusing = Downstream::start(Plan::Always(400)).await;
    let mut config = env.config(&routes(&env, &ok, &refusing));
    config.worker.queue_depth_interval = Duration::from_millis(200);
    let gateway = RunningGateway::start(config.clone()).await;
    let worker = RunningWorker::start(config).await;
    let client = reqwest::Client::new();
    let url = gateway.url("whatzme");

    let ids: Vec<String> = (0..ACCEPTED)
        .map(|i| format!("{}-ok-{i}", env.prefix))
        .collect();
    let fresh: Vec<String> = ids.iter().map(|id| upsert_body(id)).collect();
    let refused = (0..DEAD).map(|i| reject_body(&format!("{}-dead-{i}", env.prefix)));
    let statuses = send_all(
        &client,
        &url,
        fresh.iter().cloned().chain(refused).collect(),
    )
    .await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let statuses = send_all(&client, &url, fresh[..DUPLICATES].to_vec()).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    for i in 0..BAD_SIGNATURES {
        let status = client
            .post(&url)
            .header("X-Signature", format!("sha256={}", "0".repeat(64)))
            .body(upsert_body(&format!("{}-forged-{i}", env.prefix)))
            .send()
            .await
            .expect("the gateway answers")
            .status();
        assert_eq!(status, 401);
    }

    let settled = eventually(Duration::from_secs(20), || async {
        let scrape = Scrape::fetch(worker.admin_addr).await;
        let delivered = scrape.value(
            "sluice_worker_deliveries_total",
            &[("route", "crm"), ("outcome", "delivered")],
        );
        let depth = scrape.value("sluice_worker_queue_depth", &[("queue", "dead")]);
        delivered == Some(ACCEPTED as f64) && depth == Some(DEAD as f64)
    })
    .await;
    assert!(
        settled,
        "every event settled and the dead queue depth was polled"
    );

    let g = Scrape::fetch(gateway.admin_addr).await;
    let requests = |outcome| {
        g.get(
            "sluice_gateway_requests_total",
            &[("source", "whatzme"), ("outcome", outcome)],
        )
    };
    assert_eq!(requests("accepted"), (ACCEPTED + DEAD) as f64);
    assert_eq!(requests("duplicate"), DUPLICATES as f64);
    assert_eq!(requests("invalid_signature"), BAD_SIGNATURES as f64);
    assert_eq!(requests("unavailable"), 0.0);
    let events = |outcome| {
        g.get(
            "sluice_gateway_events_total",
            &[("source", "whatzme"), ("outcome", outcome)],
        )
    };
    assert_eq!(events("published"), (ACCEPTED + DEAD) as f64);
    assert_eq!(events("duplicate"), DUPLICATES as f64);
    let by_type = |event_type| {
        g.get(
            "sluice_gateway_events_published_total",
            &[("source", "whatzme"), ("type", event_type)],
        )
    };
    assert_eq!(by_type("messages.upsert"), ACCEPTED as f64);
    assert_eq!(by_type("messages.reject"), DEAD as f64);
    let source = [("source", "whatzme")];
    assert_eq!(
        g.get("sluice_gateway_dedup_hits_total", &source),
        DUPLICATES as f64
    );
    assert_eq!(g.get("sluice_gateway_dedup_bypass_total", &source), 0.0);
    assert_eq!(
        g.get("sluice_gateway_ack_duration_seconds_count", &source),
        (ACCEPTED + DEAD + DUPLICATES + BAD_SIGNATURES) as f64
    );
    assert_eq!(
        g.get("sluice_gateway_publish_confirm_duration_seconds_count", &[]),
        (ACCEPTED + DEAD) as f64,
        "one confirm wait per request that published"
    );
    assert_eq!(g.get("sluice_gateway_redis_up", &[]), 1.0);
    assert_eq!(g.get("sluice_gateway_broker_connected", &[]), 1.0);
    assert_eq!(g.get("sluice_gateway_in_flight_requests", &[]), 0.0);

    let w = Scrape::fetch(worker.admin_addr).await;
    let deliveries = |route, outcome| {
        w.get(
            "sluice_worker_deliveries_total",
            &[("route", route), ("outcome", outcome)],
        )
    };
    assert_eq!(deliveries("crm", "delivered"), ACCEPTED as f64);
    assert_eq!(deliveries("crm", "retried"), 0.0);
    assert_eq!(deliveries("crm", "dead"), 0.0);
    assert_eq!(deliveries("legacy", "dead"), DEAD as f64);
    assert_eq!(deliveries("legacy", "delivered"), 0.0);
    assert_eq!(deliveries("none", "dead"), 0.0);
    assert_eq!(
        w.get(
            "sluice_worker_dead_lettered_total",
            &[("reason", "rejected")]
        ),
        DEAD as f64
    );
    assert_eq!(
        w.get("sluice_worker_delivery_attempts_count", &[]),
        ACCEPTED as f64
    );
    assert_eq!(
        w.get("sluice_worker_delivery_attempts_sum", &[]),
        ACCEPTED as f64,
        "each took one attempt"
    );
    assert_eq!(
        w.get(
            "sluice_worker_end_to_end_duration_seconds_count",
            &[("route", "crm")]
        ),
        ACCEPTED as f64
    );
    assert_eq!(
        w.get(
            "sluice_worker_delivery_duration_seconds_count",
            &[("route", "legacy")]
        ),
        DEAD as f64
    );
    assert_eq!(
        w.get("sluice_worker_queue_depth", &[("queue", "work")]),
        0.0
    );
    assert_eq!(w.get("sluice_worker_in_flight", &[]), 0.0);
    assert_eq!(w.get("sluice_worker_broker_connected", &[]), 1.0);

    for (binary, page) in [("gateway", &g.text), ("worker", &w.text)] {
        match promtool_check_metrics(page) {
            Some((passed, said)) => assert!(passed, "promtool check metrics ({binary}): {said}"),
            None => eprintln!("promtool is not installed: `promtool check metrics` skipped"),
        }
    }

    worker.stop().await;
    gateway.stop().await;
    let broker = Broker::connect(&env.amqp_url).await;
    let topology = env.topology();
    assert_eq!(broker.drain(&topology.dead_queue()).await.len(), DEAD);
    assert_eq!(broker.total(&topology).await, 0);
    broker.delete(&topology).await;
}
