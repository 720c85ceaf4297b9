//! Ordered routes: events of one key reach the route in the order the
//! gateway accepted them, through a flaky receiver and two workers (one of
//! them stopped half-way, so the other takes its partitions over); a key
//! whose event keeps failing holds back its own later events only.
//!
//! The check, per key: take the receiver's successful deliveries in the
//! order they came, drop every delivery of an event already delivered (an
//! at-least-once redelivery: counted, allowed), and the events left must be
//! in acceptance order (each key's events are sent one request after the
//! other, each after the previous was answered 200). Every event accepted
//! must be delivered or have a dead record of the route, and nothing else.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use sluice_shared::config::Config;
use sluice_shared::topology::Topology;

use sluice_testkit::broker::Broker;
use sluice_testkit::downstream::{Downstream, Plan};
use sluice_testkit::{RunningGateway, RunningWorker, TestEnv, eventually, post_signed};

/// An ordered `http` route over every `whatzme` event, keyed by `/contact`.
fn ordered_route(env: &TestEnv, downstream: &Downstream, partitions: u16) -> String {
    format!(
        "[[routes]]\nname = \"ordered\"\nmatch = [\"whatzme.*\"]\nhandler = \"http\"\nurl = \"{}\"\n\
         secret = \"file:{}\"\ntimeout = \"2s\"\nordered_by = \"/contact\"\npartitions = {partitions}\n",
        downstream.url(),
        env.secret_path("route.secret").display()
    )
}

fn config(env: &TestEnv, retry_delays: &str, routes: &str) -> Config {
    let toml = env.config_toml_retrying(retry_delays, routes);
    Config::from_toml(&toml).expect("the test config is valid")
}

fn topology(config: &Config) -> Topology {
    Topology::new(&config.amqp).with_routes(&config.routes)
}

/// The id of event `seq` of `key`.
fn event_id(prefix: &str, key: usize, seq: usize) -> String {
    format!("{prefix}-k{key}-{seq:05}")
}

/// A `messages.upsert` body of contact `key` whose message is `id`.
fn body(key: &str, seq: usize, id: &str) -> String {
    format!(
        r#"{{"event":"messages.upsert","contact":"{key}","seq":{seq},"messages":[{{"key":{{"id":"{id}","fromMe":false}}}}]}}"#
    )
}

/// Sends `per_key` events for each of `keys` keys, all keys at once and
/// each key's events one after the other; returns every id sent.
async fn send_interleaved(
    gateway: &RunningGateway,
    prefix: &str,
    keys: usize,
    per_key: usize,
) -> Vec<String> {
    let client = reqwest::Client::new();
    let url = Arc::new(gateway.url("whatzme"));
    let senders = (0..keys).map(|key| {
        let (client, url, prefix) = (client.clone(), Arc::clone(&url), prefix.to_owned());
        async move {
            let mut sent = Vec::with_capacity(per_key);
            for seq in 0..per_key {
                let id = event_id(&prefix, key, seq);
                let body = body(&format!("contact-{key}"), seq, &id);
                loop {
                    let (status, answer) = post_signed(&client, &url, &body).await;
                    if status == 200 {
                        assert_eq!(answer["accepted"], 1, "{answer}");
                        break;
                    }
                    // A 503 leaves the event unaccepted: the key's next waits for it.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                sent.push(id);
            }
            sent
        }
    });
    let sent: Vec<Vec<String>> = futures_util::stream::iter(senders)
        .buffer_unordered(keys)
        .collect()
        .await;
    sent.concat()
}

/// What the per-key check found.
#[derive(Debug, Default)]
struct Audit {
    delivered: usize,
    redeliveries: usize,
    dead: usize,
    out_of_order: Vec<String>,
    lost: Vec<String>,
}

/// Checks the receiver's deliveries and the route's dead records against
/// the events sent (see the module's docs).
fn audit(sent: &[String], downstream: &Downstream, dead: &HashSet<String>) -> Audit {
    let mut audit = Audit::default();
    let mut first_seen: HashSet<String> = HashSet::new();
    // key → the last seq delivered for the first time.
    let mut last: HashMap<String, i64> = HashMap::new();
    for delivery in downstream.deliveries() {
        if !first_seen.insert(delivery.id.clone()) {
            audit.redeliveries += 1;
            continue;
        }
        let data = &delivery.envelope["data"];
        let key = data["contact"].as_str().unwrap_or_default().to_owned();
        let seq = data["seq"].as_i64().unwrap_or(-1);
        let previous = last.insert(key.clone(), seq).unwrap_or(-1);
        if seq <= previous {
            audit
                .out_of_order
                .push(format!("{key}: seq {seq} after {previous}"));
        }
    }
    audit.delivered = first_seen.len();
    audit.dead = dead.len();
    for id in sent {
        if !first_seen.contains(id) && !dead.contains(id) {
            audit.lost.push(id.clone());
        }
    }
    audit
}

/// Drains the dead queue: the ids of the route's dead records.
async fn dead_ids(broker: &Broker, topology: &Topology) -> HashSet<String> {
    let dead = broker.drain(&topology.dead_queue()).await;
    for record in &dead {
        assert_eq!(record.headers().route.as_deref(), Some("ordered"));
        assert!(
            record.headers().order_key.is_some(),
            "the key's digest stays"
        );
    }
    dead.iter()
        .map(|record| record.json()["id"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// `keys` × `per_key` interleaved events, a receiver failing `flaky` % of
/// attempts, two workers of which the first stops once a third of the
/// events are delivered.
async fn interleaved_through_a_flaky_receiver(name: &str, keys: usize, per_key: usize) {
    let env = TestEnv::new(name);
    let downstream = Downstream::start(Plan::Flaky(30)).await;
    let config = config(
        &env,
        r#"["50ms", "100ms", "200ms"]"#,
        &ordered_route(&env, &downstream, 16),
    );
    let topology = topology(&config);
    let gateway = RunningGateway::start(config.clone()).await;
    let first = RunningWorker::start(config.clone()).await;
    let second = RunningWorker::start(config).await;
    let total = keys * per_key;
    let started = Instant::now();

    let sending = send_interleaved(&gateway, &env.prefix, keys, per_key);
    let stopping = async {
        let third = eventually(Duration::from_secs(600), || async {
            downstream.delivered_ids().len() >= total / 3
        })
        .await;
        assert!(third, "a third of the events delivered");
        first.stop().await;
        eprintln!("first worker stopped after {:?}", started.elapsed());
    };
    let (sent, ()) = tokio::join!(sending, stopping);
    assert_eq!(sent.len(), total);
    eprintln!("{total} events accepted in {:?}", started.elapsed());

    let broker = Broker::connect(&env.amqp_url).await;
    let all_settled = eventually(Duration::from_secs(600), || async {
        let dead = broker.count(&topology.dead_queue()).await as usize;
        downstream.delivered_ids().len() + dead >= total
    })
    .await;
    assert!(all_settled, "every event delivered or dead");
    eprintln!("all settled after {:?}", started.elapsed());
    // Longer than an event's whole retry schedule: any late copy has come.
    tokio::time::sleep(Duration::from_secs(2)).await;
    second.stop().await;
    gateway.stop().await;

    let dead = dead_ids(&broker, &topology).await;
    let audit = audit(&sent, &downstream, &dead);
    eprintln!(
        "{keys} keys, {total} events: {} delivered, {} dead, {} redeliveries, {} attempts",
        audit.delivered,
        audit.dead,
        audit.redeliveries,
        downstream.attempt_log().len()
    );
    assert!(audit.out_of_order.is_empty(), "{:?}", audit.out_of_order);
    assert!(
        audit.lost.is_empty(),
        "neither delivered nor dead: {:?}",
        audit.lost
    );
    let sent_ids: HashSet<&String> = sent.iter().collect();
    assert!(
        dead.iter().all(|id| sent_ids.contains(id)),
        "only events sent die"
    );
    let delivered = downstream.delivered_ids();
    assert!(
        delivered.iter().all(|id| sent_ids.contains(id)),
        "only events sent arrive"
    );
    assert!(
        audit.dead > 0,
        "30 % failures over 4 attempts kill some (0.8 %)"
    );
    assert_eq!(broker.total(&topology).await, 0, "nothing left anywhere");
    broker.delete(&topology).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_interleaved_events_of_fifty_keys_arrive_in_order_per_key_through_a_flaky_receiver_and_two_workers()
 {
    interleaved_through_a_flaky_receiver("ordered-2k", 50, 40).await;
}

/// `make ordered`: the same at 10,000 events over 200 keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "about a minute; run with `make ordered`"]
async fn ten_thousand_interleaved_events_arrive_in_order_per_key() {
    interleaved_through_a_flaky_receiver("ordered-10k", 200, 50).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_key_holds_back_its_own_events_only() {
    let env = TestEnv::new("ordered-hold");
    let downstream = Downstream::start(Plan::FailMatching("-jammed-", 503)).await;
    // One partition: the stuck key and the others share it.
    let config = config(
        &env,
        r#"["400ms", "800ms", "1600ms"]"#,
        &ordered_route(&env, &downstream, 1),
    );
    let topology = topology(&config);
    let gateway = RunningGateway::start(config.clone()).await;
    let worker = RunningWorker::start(config).await;
    let client = reqwest::Client::new();
    let url = gateway.url("whatzme");
    let stuck: Vec<String> = (0..2)
        .map(|n| format!("{}-jammed-{n}", env.prefix))
        .collect();
    for (seq, id) in stuck.iter().enumerate() {
        let (status, answer) = post_signed(&client, &url, &body("jammed", seq, id)).await;
        assert_eq!(status, 200, "{answer}");
    }
    let mut others = Vec::new();
    for key in 0..5 {
        for seq in 0..4 {
            let id = event_id(&env.prefix, key, seq);
            let (status, answer) =
                post_signed(&client, &url, &body(&format!("contact-{key}"), seq, &id)).await;
            assert_eq!(status, 200, "{answer}");
            others.push(id);
        }
    }
    let broker = Broker::connect(&env.amqp_url).await;
    let flowed = eventually(Duration::from_secs(20), || async {
        let delivered = downstream.delivered_ids();
        others.iter().all(|id| delivered.contains(id))
    })
    .await;
    assert!(flowed, "the other keys' events are delivered");
    // The stuck key's first event retries for 2.8 s: it is not dead yet, and
    // its second was never tried.
    assert_eq!(broker.count(&topology.dead_queue()).await, 0);
    assert!(downstream.attempts(&stuck[0]) >= 1);
    assert_eq!(downstream.attempts(&stuck[1]), 0, "held behind the first");

    let both_dead = eventually(Duration::from_secs(30), || async {
        broker.count(&topology.dead_queue()).await == 2
    })
    .await;
    assert!(both_dead, "each stuck event dies after its attempts");
    worker.stop().await;
    gateway.stop().await;
    let log = downstream.attempt_log();
    let tries =
        |id: &str| -> Vec<Instant> { log.iter().filter(|a| a.id == id).map(|a| a.at).collect() };
    let (first, second) = (tries(&stuck[0]), tries(&stuck[1]));
    assert_eq!((first.len(), second.len()), (4, 4), "four attempts each");
    assert!(
        first.iter().max() < second.iter().min(),
        "the second was first tried after the first's last attempt"
    );
    let dead = broker.drain(&topology.dead_queue()).await;
    let ids: Vec<String> = dead
        .iter()
        .map(|record| record.json()["id"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        ids, stuck,
        "dead in order, the route named, four attempts each"
    );
    for record in &dead {
        let headers = record.headers();
        assert_eq!(headers.route.as_deref(), Some("ordered"));
        assert_eq!(headers.attempts, Some(4));
        assert_eq!(headers.last_status, Some(503));
    }
    assert_eq!(
        downstream.deliveries().len(),
        others.len(),
        "each other event once"
    );
    assert_eq!(broker.total(&topology).await, 0, "nothing left anywhere");
    broker.delete(&topology).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_dead_event_of_an_ordered_route_goes_back_to_its_keys_partition_and_is_delivered()
 {
    let env = TestEnv::new("ordered-replay");
    let downstream = Downstream::start(Plan::Always(400)).await;
    let routes = ordered_route(&env, &downstream, 4);
    let config = config(&env, r#"["200ms"]"#, &routes);
    let topology = topology(&config);
    let config_path = env.dir.path().join("sluice.toml");
    std::fs::write(
        &config_path,
        env.config_toml_retrying(r#"["200ms"]"#, &routes),
    )
    .expect("config file");
    let gateway = RunningGateway::start(config.clone()).await;
    let worker = RunningWorker::start(config).await;
    let id = event_id(&env.prefix, 7, 0);
    let client = reqwest::Client::new();
    let (status, answer) =
        post_signed(&client, &gateway.url("whatzme"), &body("contact-7", 0, &id)).await;
    assert_eq!(status, 200, "{answer}");
    let broker = Broker::connect(&env.amqp_url).await;
    let dead = eventually(Duration::from_secs(20), || async {
        broker.count(&topology.dead_queue()).await == 1
    })
    .await;
    assert!(dead, "a 400 kills the event at once");
    assert_eq!(downstream.attempts(&id), 1);

    downstream.set_plan(Plan::Succeed);
    let output = crate::dlq::dlq_command(&config_path, &["replay", "--route", "ordered"])
        .output()
        .await
        .expect("the binary runs");
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let delivered = eventually(Duration::from_secs(20), || async {
        downstream.delivered_ids().contains(&id)
    })
    .await;
    assert!(delivered, "the replayed event reaches its route");
    worker.stop().await;
    gateway.stop().await;
    assert_eq!(downstream.attempts(&id), 2, "once dead, once replayed");
    assert_eq!(downstream.deliveries().len(), 1);
    assert_eq!(broker.total(&topology).await, 0, "nothing left anywhere");
    broker.delete(&topology).await;
}
