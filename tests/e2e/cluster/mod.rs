//! Sluice on broker clusters built from private nodes on loopback, each
//! losing a node under load: a RabbitMQ node, the Redis primary under
//! Sentinel, a Redis Cluster primary; and a Redis Cluster taking batches.
//! Each test takes a minute or more, so they are `#[ignore]`d and run by
//! `make cluster`; docs/reliability.md holds the figures they print.

mod rabbitmq;
mod redis_cluster;
mod redis_cluster_failover;
mod sentinel;

use sluice_shared::config::Config;

use std::time::{Duration, Instant};

use sluice_testkit::ledger::Book;
use sluice_testkit::{RunningGateway, RunningWorker, TestEnv};

/// The promise every node loss is held to: every event answered 200 is
/// delivered or dead (`settled`, nothing `lost`), every event was accepted
/// in the end, and acceptance resumed within 30 s of the kill (and did
/// resume). Prints the refusals and each gateway's figures first.
pub fn assert_nothing_lost_and_resumed(
    book: &Book,
    killed_at: Instant,
    ended: Instant,
    settled: bool,
    lost: &[String],
) {
    println!("refusals: {:?}", book.refusals_by_count());
    println!(
        "per gateway after the kill: {:?}",
        book.per_gateway(killed_at, ended)
    );
    assert!(settled && lost.is_empty(), "accepted but lost: {lost:?}");
    assert!(
        book.unacked.is_empty(),
        "events never accepted: {:?}",
        book.unacked
    );
    let resumed = book.longest_silence(killed_at, ended);
    assert!(
        resumed < Duration::from_secs(30),
        "acceptance resumed after {resumed:?}"
    );
    assert!(
        book.acked_since(killed_at + resumed) > 0,
        "no event was accepted after the longest silence"
    );
}

/// How long the providers go on retrying the events they hold once a
/// test ends its load; an event still refused then fails the test.
pub const GIVE_UP: Duration = Duration::from_secs(60);

/// Two gateways and two workers, as a deployment of several machines runs.
pub struct Fleet {
    pub gateways: Vec<RunningGateway>,
    pub workers: Vec<RunningWorker>,
}

impl Fleet {
    pub async fn start(config: &impl Fn() -> Config) -> Self {
        let gateways = vec![
            RunningGateway::start(config()).await,
            RunningGateway::start(config()).await,
        ];
        let workers = vec![
            RunningWorker::start(config()).await,
            RunningWorker::start(config()).await,
        ];
        Self { gateways, workers }
    }

    pub async fn stop(self) {
        for gateway in self.gateways {
            gateway.stop().await;
        }
        for worker in self.workers {
            worker.stop().await;
        }
    }
}

/// `env`'s config (with `extra` appended) on other brokers: `amqp` lists
/// the RabbitMQ nodes (else `env`'s one URL stays); `redis` replaces the
/// `[redis] url` line with a mode's keys. Goes through the real loader.
fn cluster_config(
    env: &TestEnv,
    extra: &str,
    amqp: Option<&[String]>,
    redis: Option<&str>,
) -> Config {
    let mut toml = env.config_toml(extra);
    if let Some(urls) = amqp {
        let list: Vec<String> = urls.iter().map(|u| format!("\"{u}\"")).collect();
        let line = format!("url = \"{}\"", env.amqp_url);
        toml = toml.replacen(&line, &format!("urls = [{}]", list.join(", ")), 1);
    }
    if let Some(keys) = redis {
        let line = format!("url = \"{}\"", env.redis_url);
        toml = toml.replacen(&line, keys, 1);
    }
    Config::from_toml(&toml).expect("the cluster test config is valid")
}

/// A TOML array of quoted strings.
fn toml_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|i| format!("\"{i}\"")).collect();
    format!("[{}]", quoted.join(", "))
}
