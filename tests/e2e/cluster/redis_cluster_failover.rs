//! A Redis Cluster primary dies under load: its replica takes over its
//! slots, dedup goes on there, and no event answered 200 is lost.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use super::rabbitmq::settle;
use super::{Fleet, GIVE_UP, assert_nothing_lost_and_resumed, cluster_config, toml_list};
use sluice_testkit::broker::Broker;
use sluice_testkit::cluster::{RedisClusterSet, cli};
use sluice_testkit::downstream::{Downstream, Plan};
use sluice_testkit::ledger::{Ledger, LoadProfile};
use sluice_testkit::{SHARED_AMQP, SHARED_REDIS, TestEnv, eventually, post_signed, upsert_body};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "builds a six-node Redis Cluster and kills a primary (about a minute): make cluster"]
async fn dedup_goes_on_after_a_redis_cluster_replica_takes_over_a_dead_primary() {
    let set = RedisClusterSet::start_with_replicas(1).await;
    let env = TestEnv::with_brokers("rcluster-failover", SHARED_AMQP, SHARED_REDIS);
    let downstream = Downstream::start(Plan::Succeed).await;
    let route = env.http_route(&downstream.url());
    // Every node as a seed, as a deployment lists them.
    let redis = format!("mode = \"cluster\"\nnodes = {}", toml_list(&set.urls()));
    let config = || cluster_config(&env, &route, None, Some(&redis));
    let fleet = Fleet::start(&config).await;
    let gateways = &fleet.gateways;

    let gateway_urls: Vec<String> = gateways.iter().map(|g| g.url("whatzme")).collect();
    let load = Ledger::start(&gateway_urls, &env.prefix, LoadProfile::REDELIVERING);
    tokio::time::sleep(Duration::from_secs(8)).await;
    let witness = set.nodes[0].port;
    let primaries = set.primaries(witness);
    // A primary other than the witness, so the witness outlives the kill.
    let doomed = *primaries
        .iter()
        .find(|&&port| port != witness)
        .expect("three primaries");
    let heir = set.replicas_of(doomed, witness);
    assert_eq!(heir.len(), 1, "one replica of {doomed}: {heir:?}");
    let heir = heir[0];
    let killed_at = Instant::now();
    set.node(doomed).kill();
    let promoted = eventually(Duration::from_secs(30), || async {
        set.primaries(witness).contains(&heir)
            && cli(witness, &["cluster", "info"]).contains("cluster_state:ok")
    })
    .await;
    let failover = killed_at.elapsed();
    assert!(promoted, "the replica {heir} of {doomed} was not promoted");
    tokio::time::sleep(Duration::from_secs(20)).await;
    let ended = Instant::now();
    let book = load.finish(GIVE_UP).await;
    let resumed = book.longest_silence(killed_at, ended);

    // After the failover, dedup holds: an event sent twice is delivered once.
    let client = reqwest::Client::new();
    let probe = format!("{}-after-failover", env.prefix);
    for _ in 0..2 {
        let (status, answer) =
            post_signed(&client, &gateways[0].url("whatzme"), &upsert_body(&probe)).await;
        assert_eq!(status, 200, "{answer}");
    }
    let keys = cli(heir, &["--scan", "--pattern", &format!("{}*", env.prefix)]);
    let on_heir = keys.lines().count();

    let broker = Broker::connect(SHARED_AMQP).await;
    let mut accepted: HashSet<String> = book.acked.keys().cloned().collect();
    accepted.insert(probe.clone());
    let dead_queue = env.topology().dead_queue();
    let (settled, lost, dead) = settle(&accepted, &downstream, &broker, &dead_queue).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let copies = downstream.copies();
    let (duplicates, published_twice) = downstream.extra_copies();
    println!(
        "redis cluster primary kill: accepted {} ({} after the kill), redeliveries accepted {}, \
         refused-and-retried {}, never accepted {}, lost {}, dead {}, duplicate deliveries \
         {duplicates} (published twice by a gateway: duplicates let through {published_twice}), \
         replica promoted after {failover:?}, keys on it {on_heir}, longest time without a new \
         event accepted on a gateway after the kill {resumed:?}",
        accepted.len(),
        book.acked_since(killed_at),
        book.resent,
        book.refused(),
        book.unacked.len(),
        lost.len(),
        dead.len(),
    );
    assert_nothing_lost_and_resumed(&book, killed_at, ended, settled, &lost);
    assert_eq!(
        copies.get(&probe),
        Some(&1),
        "dedup works after the failover"
    );
    assert!(on_heir > 0, "the promoted replica holds the test's keys");
    fleet.stop().await;
    env.delete_topology().await;
}
