//! A RabbitMQ node dies under load: no event answered 200 is lost.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use super::cluster_config;
use sluice_shared::config::Config;

use super::{Fleet, GIVE_UP, assert_nothing_lost_and_resumed};
use sluice_testkit::broker::Broker;
use sluice_testkit::cluster::RabbitCluster;
use sluice_testkit::downstream::{Downstream, Plan};
use sluice_testkit::ledger::{Ledger, LoadProfile};
use sluice_testkit::{RunningGateway, RunningWorker, SHARED_REDIS, TestEnv, eventually, metric};

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
    let work = env.topology().work_queue();
    let (fleet, leader) = gather_on_the_leader(&cluster, &config, &work).await;
    let gateways = &fleet.gateways;
    assert_eq!(members(&cluster, &work).await, 3, "a copy on every node");

    let gateway_urls: Vec<String> = gateways.iter().map(|g| g.url("whatzme")).collect();
    let load = Ledger::start(&gateway_urls, &env.prefix, LoadProfile::REDELIVERING);
    tokio::time::sleep(BEFORE).await;
    assert_eq!(
        cluster.leader_of(&work, 0).await,
        leader,
        "the leader stayed"
    );
    let killed_at = cluster.nodes[leader].kill().await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let new_leader = cluster.leader_of(&work, (leader + 1) % 3).await;
    println!("10 s after the kill the work queue's leader is node {new_leader}");
    tokio::time::sleep(AFTER - Duration::from_secs(10)).await;
    let ended = Instant::now();
    let book = load.finish(GIVE_UP).await;
    let http = reqwest::Client::new();
    for gateway in gateways {
        let connected = metric(&http, gateway.admin_addr, "sluice_gateway_broker_connected").await;
        println!("gateway {}: broker connected {connected:?}", gateway.addr);
    }
    let resumed = book.longest_silence(killed_at, ended);

    let survivor = &cluster.nodes[(leader + 1) % 3];
    let broker = Broker::connect(&survivor.url()).await;
    let accepted: HashSet<String> = book.acked.keys().cloned().collect();
    let dead_queue = env.topology().dead_queue();
    let (settled, lost, dead) = settle(&accepted, &downstream, &broker, &dead_queue).await;
    let (duplicates, published_twice) = downstream.extra_copies();
    println!(
        "rabbitmq leader kill: gateways on the killed node {}, accepted {} ({} after the kill), \
         redeliveries accepted {}, refused-and-retried {}, never accepted {}, lost {}, dead {}, \
         duplicate deliveries {duplicates} (published twice by a gateway {published_twice}), \
         longest time without a new event accepted on a gateway after the kill {resumed:?}",
        gateways.len(),
        accepted.len(),
        book.acked_since(killed_at),
        book.resent,
        book.refused(),
        book.unacked.len(),
        lost.len(),
        dead.len(),
    );
    assert_nothing_lost_and_resumed(&book, killed_at, ended, settled, &lost);
    fleet.stop().await;
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

/// Starts two gateways and two workers with `amqp.urls` listing every
/// node, each process in its own shuffled order, and starts a process
/// again until both gateways and a worker's consuming connection are on
/// the node that leads `queue` (which the first gateway's declaration
/// placed): the kill must cut them all, the hard case where every
/// gateway reconnects at once. The second worker lands where it lands.
/// Returns them and the leader's index.
async fn gather_on_the_leader(
    cluster: &RabbitCluster,
    config: &impl Fn() -> Config,
    queue: &str,
) -> (Fleet, usize) {
    let first = RunningGateway::start(config()).await;
    let leader = cluster.leader_of(queue, 0).await;
    let mut gateways = Vec::new();
    let mut pending = Some(first);
    let is_gateway = |name: &str| name.starts_with("sluice-gateway@");
    // The consuming connection, not the publishing or queue-depth ones.
    let is_consumer = |name: &str| {
        name.starts_with("sluice-worker-")
            && !name.contains("-depth@")
            && !name.contains("-publish@")
    };
    for _ in 0..STARTS {
        let gateway = match pending.take() {
            Some(gateway) => gateway,
            None => RunningGateway::start(config()).await,
        };
        let on_leader = count_on(cluster, leader, is_gateway).await;
        if on_leader > gateways.len() {
            gateways.push(gateway);
            if gateways.len() == 2 {
                break;
            }
        } else {
            gateway.stop().await;
        }
    }
    assert_eq!(
        gateways.len(),
        2,
        "{STARTS} gateway starts never put both gateways on the leader"
    );
    let mut workers = Vec::new();
    for _ in 0..STARTS {
        let worker = RunningWorker::start(config()).await;
        if count_on(cluster, leader, is_consumer).await > 0 {
            workers.push(worker);
            break;
        }
        worker.stop().await;
    }
    assert_eq!(
        workers.len(),
        1,
        "{STARTS} worker starts never put a worker on the leader"
    );
    workers.push(RunningWorker::start(config()).await);
    println!(
        "connections on the leader to be killed: {:?}",
        connections_on(cluster, leader).await
    );
    (Fleet { gateways, workers }, leader)
}

/// How often a process is started at most to land on a given node (each
/// start has one chance in three).
const STARTS: usize = 30;

/// How many of node `index`'s Sluice connections have a name `wanted`.
async fn count_on(cluster: &RabbitCluster, index: usize, wanted: impl Fn(&str) -> bool) -> usize {
    let names = connections_on(cluster, index).await;
    names.iter().filter(|name| wanted(name)).count()
}

/// The names of the Sluice connections node `index` holds.
async fn connections_on(cluster: &RabbitCluster, index: usize) -> Vec<String> {
    let listing = cluster.nodes[index]
        .ctl(&[
            "list_connections",
            "client_properties",
            "port",
            "--formatter",
            "json",
        ])
        .await;
    let connections: Vec<serde_json::Value> = serde_json::from_str(&listing).expect("json");
    connections
        .iter()
        // The server port a connection came in on tells the node.
        .filter(|c| c["port"] == cluster.nodes[index].port)
        .filter_map(|c| {
            // The name we gave sits among the client properties.
            let properties = c["client_properties"].to_string();
            let start = properties.find("sluice-")?;
            let name = &properties[start..];
            Some(name[..name.find('"').unwrap_or(name.len())].to_owned())
        })
        .collect()
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
