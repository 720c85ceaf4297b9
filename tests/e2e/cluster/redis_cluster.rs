//! Dedup on a three-primary Redis Cluster: keys of one request lie in many
//! hash slots, and a 1,000-message Meta batch still claims as one request.

use std::collections::HashSet;
use std::time::Duration;

use sluice_gateway::dedup::DedupKey;
use sluice_gateway::signature::hex_hmac_sha256;

use super::rabbitmq::settle;
use super::{cluster_config, toml_list};
use sluice_testkit::broker::Broker;
use sluice_testkit::cluster::RedisClusterSet;
use sluice_testkit::downstream::{Downstream, Plan};
use sluice_testkit::providers::{WA_SECRET, fixture, send, sources_toml};
use sluice_testkit::{
    RunningGateway, RunningWorker, SHARED_AMQP, SHARED_REDIS, TestEnv, post_signed, upsert_body,
};

/// Meta's limit of messages in one request.
const BATCH: usize = 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "builds a three-node Redis Cluster (about 20 seconds): make cluster"]
async fn dedup_and_a_thousand_message_batch_work_on_a_redis_cluster() {
    let set = RedisClusterSet::start().await;
    let env = TestEnv::with_brokers("rcluster", SHARED_AMQP, SHARED_REDIS);
    let downstream = Downstream::start(Plan::Succeed).await;
    let extra = format!(
        "{}{}",
        env.http_route(&downstream.url()),
        sources_toml(&env)
    );
    let redis = format!("mode = \"cluster\"\nnodes = {}", toml_list(&set.urls()));
    let config = cluster_config(&env, &extra, None, Some(&redis));
    let gateway = RunningGateway::start(config.clone()).await;
    let worker = RunningWorker::start(config).await;

    let url = gateway.url("whatsapp");
    let ids = ids_over_every_tag(&env.prefix);
    let batch = meta_batch(&ids);
    let counts = |text: &str| {
        let answer: serde_json::Value = serde_json::from_str(text).expect("JSON");
        (answer["accepted"].as_u64(), answer["duplicates"].as_u64())
    };
    let (status, answer) = send(&url, &meta_signature(&batch), &batch).await;
    assert_eq!(
        (status, counts(&answer)),
        (200, (Some(1000), Some(0))),
        "{answer}"
    );
    let per_node = set.keys_per_node(&env.prefix);
    assert!(
        per_node.iter().all(|&n| n > 0),
        "keys on every primary: {per_node:?}"
    );
    assert_eq!(per_node.iter().sum::<usize>(), BATCH, "one key per message");
    let (status, answer) = send(&url, &meta_signature(&batch), &batch).await;
    assert_eq!(
        (status, counts(&answer)),
        (200, (Some(0), Some(1000))),
        "all seen: {answer}"
    );

    // Half seen, half new, in one request: the split by slot keeps each
    // message's own answer.
    let mixed_ids: Vec<String> = ids[BATCH / 2..]
        .iter()
        .cloned()
        .chain((0..BATCH / 2).map(|n| format!("wamid.{}-new-{n}", env.prefix)))
        .collect();
    let mixed = meta_batch(&mixed_ids);
    let (status, answer) = send(&url, &meta_signature(&mixed), &mixed).await;
    assert_eq!(
        (status, counts(&answer)),
        (200, (Some(500), Some(500))),
        "{answer}"
    );

    // The single-event path too.
    let client = reqwest::Client::new();
    let single = format!("{}-single", env.prefix);
    for _ in 0..2 {
        let (status, _) =
            post_signed(&client, &gateway.url("whatzme"), &upsert_body(&single)).await;
        assert_eq!(status, 200);
    }

    let mut accepted: HashSet<String> = ids.iter().cloned().chain(mixed_ids).collect();
    accepted.insert(single);
    let broker = Broker::connect(SHARED_AMQP).await;
    let dead_queue = env.topology().dead_queue();
    let (settled, lost, _) = settle(&accepted, &downstream, &broker, &dead_queue).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let copies = downstream.copies();
    let slots: HashSet<_> = ids
        .iter()
        .map(|id| DedupKey::slot_tagged(&env.prefix, "whatsapp", id))
        .map(|key| redis::cluster_routing::Slot::for_key(key.as_str()))
        .collect();
    println!(
        "redis cluster: {} events, the 1,000-message batch's keys in {} hash slots, keys per primary {per_node:?}, \
         delivered {}, lost {}, copies above one {}",
        accepted.len(),
        slots.len(),
        copies.len(),
        lost.len(),
        copies.values().filter(|&&n| n > 1).count(),
    );
    assert!(settled && lost.is_empty(), "accepted but lost: {lost:?}");
    assert!(
        copies.values().all(|&n| n == 1),
        "each event delivered once"
    );
    gateway.stop().await;
    worker.stop().await;
    env.delete_topology().await;
}

/// 1,000 message ids whose keys use every one of the 256 hash tags (so
/// every slot Sluice's keys can fall in): ids are drawn in order, each
/// taken while its tag is still missing or the rest has room.
fn ids_over_every_tag(prefix: &str) -> Vec<String> {
    let mut tags = HashSet::new();
    let mut ids = Vec::new();
    for n in 0.. {
        let id = format!("wamid.{prefix}-{n}");
        let key = DedupKey::slot_tagged(prefix, "whatsapp", &id);
        let tag = redis::cluster_routing::Slot::for_key(key.as_str());
        let room = BATCH - ids.len() > 256 - tags.len();
        if tags.insert(tag) || room {
            ids.push(id);
        }
        if ids.len() == BATCH {
            break;
        }
    }
    assert_eq!(tags.len(), 256);
    ids
}

/// A Meta (WhatsApp Cloud) request carrying one text message per id, in
/// the shape of tests/fixtures/whatsapp-cloud-batch.json.
fn meta_batch(ids: &[String]) -> Vec<u8> {
    let mut batch: serde_json::Value =
        serde_json::from_slice(&fixture("whatsapp-cloud-batch.json")).expect("JSON");
    let template = batch["entry"][0]["changes"][0]["value"]["messages"][0].clone();
    let messages: Vec<serde_json::Value> = ids
        .iter()
        .map(|id| {
            let mut message = template.clone();
            message["id"] = serde_json::json!(id);
            message
        })
        .collect();
    batch["entry"][0]["changes"][0]["value"]["messages"] = serde_json::json!(messages);
    batch["entry"].as_array_mut().expect("entries").truncate(1);
    serde_json::to_vec(&batch).expect("JSON")
}

fn meta_signature(body: &[u8]) -> Vec<(&'static str, String)> {
    vec![(
        "X-Hub-Signature-256",
        format!("sha256={}", hex_hmac_sha256(WA_SECRET, body)),
    )]
}
