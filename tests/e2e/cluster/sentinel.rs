//! The Redis primary dies under Sentinel: dedup goes on with the promoted
//! replica, and no event answered 200 is lost.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use super::rabbitmq::settle;
use super::{Fleet, GIVE_UP, assert_nothing_lost_and_resumed};
use super::{cluster_config, toml_list};
use sluice_testkit::broker::Broker;
use sluice_testkit::cluster::{SENTINEL_MASTER, SentinelSet, cli};
use sluice_testkit::downstream::{Downstream, Plan};
use sluice_testkit::ledger::{Ledger, LoadProfile};
use sluice_testkit::{SHARED_AMQP, SHARED_REDIS, TestEnv, eventually, post_signed, upsert_body};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "builds a Redis Sentinel set and kills its primary (about a minute): make cluster"]
async fn dedup_goes_on_after_the_sentinels_promote_a_replica() {
    let set = SentinelSet::start().await;
    let env = TestEnv::with_brokers("sentinel", SHARED_AMQP, SHARED_REDIS);
    let downstream = Downstream::start(Plan::Succeed).await;
    let route = env.http_route(&downstream.url());
    let redis = format!(
        "mode = \"sentinel\"\nmaster_name = \"{SENTINEL_MASTER}\"\nsentinels = {}",
        toml_list(&set.sentinel_urls())
    );
    let config = || cluster_config(&env, &route, None, Some(&redis));
    let fleet = Fleet::start(&config).await;
    let gateways = &fleet.gateways;

    let gateway_urls: Vec<String> = gateways.iter().map(|g| g.url("whatzme")).collect();
    let load = Ledger::start(&gateway_urls, &env.prefix, LoadProfile::REDELIVERING);
    tokio::time::sleep(Duration::from_secs(8)).await;
    let old = set.primary_port();
    let killed_at = Instant::now();
    set.server(old).kill();
    let promoted = eventually(Duration::from_secs(30), || async {
        set.primary_port() != old
    })
    .await;
    let failover = killed_at.elapsed();
    tokio::time::sleep(Duration::from_secs(20)).await;
    let ended = Instant::now();
    let book = load.finish(GIVE_UP).await;
    let resumed = book.longest_silence(killed_at, ended);
    assert!(promoted, "no replica was promoted");
    let new = set.primary_port();

    // After the failover, dedup holds: an event sent twice is delivered once.
    let client = reqwest::Client::new();
    let probe = format!("{}-after-failover", env.prefix);
    for _ in 0..2 {
        let (status, answer) =
            post_signed(&client, &gateways[0].url("whatzme"), &upsert_body(&probe)).await;
        assert_eq!(status, 200, "{answer}");
    }
    let keys = cli(new, &["--scan", "--pattern", &format!("{}*", env.prefix)]);
    assert!(
        keys.lines().count() > 0,
        "the dedup keys live on the new primary"
    );

    let broker = Broker::connect(SHARED_AMQP).await;
    let mut accepted: HashSet<String> = book.acked.keys().cloned().collect();
    accepted.insert(probe.clone());
    let dead_queue = env.topology().dead_queue();
    let (settled, lost, dead) = settle(&accepted, &downstream, &broker, &dead_queue).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let copies = downstream.copies();
    let (duplicates, published_twice) = downstream.extra_copies();
    println!(
        "sentinel primary kill: accepted {} ({} after the kill), redeliveries accepted {}, \
         refused-and-retried {}, never accepted {}, lost {}, dead {}, duplicate deliveries \
         {duplicates} (published twice by a gateway: duplicates let through {published_twice}), \
         failover seen after {failover:?}, longest time without a new event accepted on a \
         gateway after the kill {resumed:?}",
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
    fleet.stop().await;
    env.delete_topology().await;
}
