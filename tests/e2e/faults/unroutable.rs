//! A binding deleted under load: what found no queue is kept in the
//! unroutable queue, put back once the gateway re-declared the topology, and
//! nothing answered 200 is lost or published twice.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use lapin::types::FieldTable;
use tokio_util::sync::CancellationToken;

use sluice_testkit::broker::Broker;
use sluice_testkit::{RunningGateway, TestEnv, eventually, metric, post_signed, upsert_body};

/// Sends events one after another until `stop`, each retried with the same
/// body while the answer is not 200 (as providers do); returns the ids
/// answered 200.
async fn provider(url: String, prefix: String, stop: CancellationToken) -> Vec<String> {
    let client = reqwest::Client::new();
    let mut accepted = Vec::new();
    for n in 0.. {
        if stop.is_cancelled() {
            break;
        }
        let id = format!("{prefix}-{n}");
        let body = upsert_body(&id);
        // A retry outlives the stop: an event is sent until it is accepted.
        for _ in 0..200 {
            let (status, _) = post_signed(&client, &url, &body).await;
            if status == 200 {
                accepted.push(id.clone());
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    accepted
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binding_deleted_under_load_loses_and_duplicates_nothing_and_is_repaired() {
    let env = TestEnv::new("unroutable");
    let gateway = RunningGateway::start(env.config("")).await;
    let topology = env.topology();
    let broker = Broker::connect(&env.amqp_url).await;
    let client = reqwest::Client::new();

    let stop = CancellationToken::new();
    let providers: Vec<_> = (0..8)
        .map(|p| {
            let prefix = format!("{}-p{p}", env.prefix);
            tokio::spawn(provider(gateway.url("whatzme"), prefix, stop.clone()))
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;

    broker.unbind_work_queue(&topology).await;
    let readyz = format!("http://{}/readyz", gateway.admin_addr);
    let noticed = eventually(Duration::from_secs(10), || async {
        let status = client
            .get(&readyz)
            .send()
            .await
            .map(|r| r.status().as_u16());
        status.is_ok_and(|s| s == 503)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.cancel();
    let mut accepted = Vec::new();
    for provider in providers {
        accepted.extend(provider.await.expect("a provider task"));
    }
    assert!(noticed, "/readyz turned 503 while routing was broken");

    let put_back = metric(
        &client,
        gateway.admin_addr,
        "sluice_gateway_rerouted_total{outcome=\"put_back\"}",
    )
    .await
    .unwrap_or(0.0);
    assert!(
        put_back > 0.0,
        "some events found no queue and were put back"
    );
    let settled = eventually(Duration::from_secs(30), || async {
        broker.count(&topology.unroutable()).await == 0
            && broker.count(&topology.work_queue()).await as usize >= accepted.len()
    })
    .await;
    assert!(settled, "the unroutable queue drains into the work queue");
    let ready = eventually(Duration::from_secs(15), || async {
        client
            .get(&readyz)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await;
    assert!(ready, "/readyz is 200 again once routing works");

    let mut copies: HashMap<String, usize> = HashMap::new();
    let mut rerouted = 0;
    for message in broker.drain(&topology.work_queue()).await {
        let id = message.json()["id"].as_str().expect("an id").to_owned();
        *copies.entry(id).or_default() += 1;
        rerouted += usize::from(message.headers().rerouted.is_some());
    }
    let accepted: HashSet<String> = accepted.into_iter().collect();
    let lost: Vec<_> = accepted
        .iter()
        .filter(|id| !copies.contains_key(*id))
        .collect();
    let twice: Vec<_> = copies.iter().filter(|(_, n)| **n > 1).collect();
    eprintln!(
        "binding deleted: {} accepted, {} put back ({rerouted} in the work queue), lost {}, published twice {}",
        accepted.len(),
        put_back,
        lost.len(),
        twice.len()
    );
    assert!(
        lost.is_empty(),
        "every event answered 200 is in the work queue: {lost:?}"
    );
    assert!(twice.is_empty(), "no event was published twice: {twice:?}");
    assert!(rerouted > 0, "the put-back events carry x-sluice-rerouted");
    gateway.stop().await;
    env.assert_queues_empty_and_delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exchange_from_before_the_alternate_exchange_returns_the_event_then_is_repaired() {
    let env = TestEnv::new("returned");
    let topology = env.topology();
    let broker = Broker::connect(&env.amqp_url).await;
    // As an earlier version declared it: no alternate exchange.
    let durable = lapin::options::ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    broker
        .channel()
        .exchange_declare(
            topology.events_exchange().as_str().into(),
            lapin::ExchangeKind::Topic,
            durable,
            FieldTable::default(),
        )
        .await
        .expect("the old exchange");
    let gateway = RunningGateway::start(env.config("")).await;
    let client = reqwest::Client::new();
    let url = gateway.url("whatzme");
    let before = format!("{}-before", env.prefix);
    assert_eq!(
        post_signed(&client, &url, &upsert_body(&before)).await.0,
        200
    );

    broker.unbind_work_queue(&topology).await;
    let during = format!("{}-during", env.prefix);
    let (status, answer) = post_signed(&client, &url, &upsert_body(&during)).await;
    assert_eq!(status, 503, "a returned event is never a 200: {answer}");
    let readyz = format!("http://{}/readyz", gateway.admin_addr);
    let status = client
        .get(&readyz)
        .send()
        .await
        .map(|r| r.status().as_u16());
    assert_eq!(status.ok(), Some(503), "not ready while routing is broken");
    let accepted = eventually(Duration::from_secs(10), || async {
        post_signed(&client, &url, &upsert_body(&during)).await.0 == 200
    })
    .await;
    assert!(
        accepted,
        "the gateway declared the binding again and the retry is accepted"
    );

    let ids: Vec<String> = broker
        .drain(&topology.work_queue())
        .await
        .iter()
        .map(|m| m.json()["id"].as_str().expect("an id").to_owned())
        .collect();
    assert_eq!(ids, [before, during], "each event once, none lost");
    gateway.stop().await;
    env.assert_queues_empty_and_delete().await;
}
