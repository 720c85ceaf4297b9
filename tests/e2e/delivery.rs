//! The backbone: what goes in comes out once, signed, and nothing stays behind.

use std::collections::HashSet;
use std::time::Duration;

use futures_util::StreamExt;

use sluice_testkit::downstream::{Downstream, Plan};
use sluice_testkit::{
    RunningGateway, RunningWorker, TestEnv, eventually, post_signed, upsert_body,
};

const UNIQUE: usize = 1000;
const REPEATED: usize = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_events_and_two_hundred_repeats_arrive_exactly_once_each() {
    let env = TestEnv::new("thousand");
    let downstream = Downstream::start(Plan::Succeed).await;
    let config = env.config(&env.http_route(&downstream.url()));
    let gateway = RunningGateway::start(config.clone()).await;
    let worker = RunningWorker::start(config).await;
    let client = reqwest::Client::new();
    let url = gateway.url("whatzme");

    let ids: Vec<String> = (0..UNIQUE).map(|i| format!("{}-{i}", env.prefix)).collect();
    let send = |id: String| {
        let (client, url) = (client.clone(), url.clone());
        async move { post_signed(&client, &url, &upsert_body(&id)).await }
    };
    let first: Vec<_> = futures_util::stream::iter(ids.clone())
        .map(send)
        .buffer_unordered(64)
        .collect()
        .await;
    for (status, answer) in &first {
        assert_eq!(*status, 200, "every unique event is accepted: {answer}");
        assert_eq!(answer["accepted"], 1, "{answer}");
    }
    let repeats: Vec<_> = futures_util::stream::iter(ids[..REPEATED].to_vec())
        .map(send)
        .buffer_unordered(64)
        .collect()
        .await;
    for (status, answer) in &repeats {
        assert_eq!(*status, 200, "a repeat is still answered 2xx: {answer}");
        assert_eq!(
            (answer["accepted"].as_u64(), answer["duplicates"].as_u64()),
            (Some(0), Some(1))
        );
    }

    let all_arrived = eventually(Duration::from_secs(60), || async {
        downstream.delivered_ids().len() == UNIQUE
    })
    .await;
    let expected: HashSet<String> = ids.iter().cloned().collect();
    assert!(
        all_arrived,
        "{} of {UNIQUE} arrived",
        downstream.delivered_ids().len()
    );
    assert_eq!(downstream.delivered_ids(), expected);
    let deliveries = downstream.deliveries();
    assert_eq!(
        deliveries.len(),
        UNIQUE,
        "no event was delivered twice in a healthy run"
    );
    assert!(
        deliveries.iter().all(|d| d.signature_ok),
        "every delivery carries a valid Standard Webhooks signature"
    );
    let sample = &deliveries[0].envelope;
    assert_eq!(sample["specversion"], "1.0");
    assert_eq!(sample["source"], "sluice/whatzme");
    assert_eq!(sample["type"], "messages.upsert");
    assert_eq!(
        sample["id"], deliveries[0].id,
        "the envelope id is the stable event id"
    );

    let metrics = client
        .get(format!("http://{}/metrics", worker.admin_addr))
        .send()
        .await
        .expect("worker metrics")
        .text()
        .await
        .expect("text");
    let delivered = metrics
        .lines()
        .find(|l| {
            l.starts_with("sluice_worker_deliveries_total{") && l.contains("outcome=\"delivered\"")
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok());
    assert_eq!(
        delivered,
        Some(UNIQUE as f64),
        "the worker counts what it delivered"
    );

    worker.stop().await;
    gateway.stop().await;
    env.assert_queues_empty_and_delete().await;
}
