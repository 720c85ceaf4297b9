//! A RabbitMQ node dies under load: no event answered 200 is lost.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use super::cluster_config;
use super::load::{Load, copies};
use crate::support::broker::Broker;
use crate::support::cluster::RabbitCluster;
use crate::support::downstream::{Downstream, Plan};
use crate::support::{RunningGateway, RunningWorker, SHARED_REDIS, TestEnv, eventually};

/// Steady load before the kill, and after it.
const BEFORE: Duration = Duration::from_secs(8);
const AFTER: Duration = Duration::from_secs(25);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "builds a three-node RabbitMQ cluster and kills a node (about 2 minutes): make cluster"]
async fn killing_the_node_that_leads_the_work_queue_loses_no_accepted_event() {
    let cluster = RabbitCluster::start().await;
    let urls = cluster.urls();
    let env = TestEnv::with_brokers("rmq-cluster", &urls[0], SHARED_REDIS);
    let downstream = Downstream::start(Plan::Succeed).await;
    let route = env.http_route(&downstream.url());
    let config = || cluster_config(&env, &route, Some(&urls), None);
    let gateways = vec![
        RunningGateway::start(config()).await,
        RunningGateway::start(config()).await,
    ];
    let workers = vec![
        RunningWorker::start(config()).await,
        RunningWorker::start(config()).await,
    ];
    let work = env.topology().work_queue();
    assert_eq!(members(&cluster, &work).await, 3, "a copy on every node");

    let gateway_urls = gateways.iter().map(|g| g.url("whatzme")).collect();
    let load = Load::start(12, gateway_urls, &env.prefix);
    tokio::time::sleep(BEFORE).await;
    let leader = cluster.leader_of(&work, 0).await;
    let killed_at = Instant::now();
    cluster.nodes[leader].kill().await;
    tokio::time::sleep(AFTER).await;
    let ledger = load.finish().await;
    let resumed = ledger.longest_silence(killed_at, Instant::now(), gateways.len());

    let survivor = &cluster.nodes[(leader + 1) % 3];
    let broker = Broker::connect(&survivor.url()).await;
    let accepted: HashSet<String> = ledger.ids().into_iter().collect();
    let dead_queue = env.topology().dead_queue();
    let (settled, lost, dead) = settle(&accepted, &downstream, &broker, &dead_queue).await;
    let copies = copies(&downstream.deliveries());
    let duplicates: usize = copies.values().map(|n| n - 1).sum();
    println!(
        "rabbitmq leader kill: accepted {} ({} after the kill), refused-and-retried {}, \
         lost {}, dead {}, duplicate deliveries {duplicates}, longest time without a 200 \
         on a gateway after the kill {resumed:?}",
        accepted.len(),
        ledger.accepted_after(killed_at),
        ledger.refused.load(std::sync::atomic::Ordering::Relaxed),
        lost.len(),
        dead.len(),
    );
    assert!(settled && lost.is_empty(), "accepted but lost: {lost:?}");
    assert!(
        resumed < Duration::from_secs(30),
        "acceptance resumed after {resumed:?}"
    );
    assert!(ledger.accepted_after(killed_at + resumed) > 0);
    for gateway in gateways {
        gateway.stop().await;
    }
    for worker in workers {
        worker.stop().await;
    }
}

/// Waits until every accepted id was delivered or is in the dead queue;
/// returns whether that happened, the ids neither, and the dead ones.
pub async fn settle(
    accepted: &HashSet<String>,
    downstream: &Downstream,
    broker: &Broker,
    dead_queue: &str,
) -> (bool, Vec<String>, HashSet<String>) {
    let dead = std::sync::Mutex::new(HashSet::new());
    let unsettled = || {
        let delivered = downstream.delivered_ids();
        let dead = dead.lock().expect("lock");
        let open: Vec<String> = accepted
            .iter()
            .filter(|id| !delivered.contains(*id) && !dead.contains(*id))
            .cloned()
            .collect();
        open
    };
    let settled = eventually(Duration::from_secs(120), || async {
        for message in broker.drain(dead_queue).await {
            let id = message.json()["id"].as_str().unwrap_or_default().to_owned();
            dead.lock().expect("lock").insert(id);
        }
        unsettled().is_empty()
    })
    .await;
    let lost = unsettled();
    (settled, lost, dead.into_inner().expect("lock"))
}

/// How many nodes hold a copy of `queue`.
async fn members(cluster: &RabbitCluster, queue: &str) -> usize {
    let listing = cluster.nodes[0]
        .ctl(&["list_queues", "name", "members", "--formatter", "json"])
        .await;
    let queues: Vec<serde_json::Value> = serde_json::from_str(&listing).expect("json");
    queues
        .iter()
        .find(|q| q["name"] == queue)
        .and_then(|q| q["members"].as_array())
        .map_or(0, Vec::len)
}
