//! Redis fails under load: cut off by the network, or turned read-only by
//! a failover. The gateway runs the default `on_redis_error = "publish"`,
//! so it accepts on through the fault, without deduplication; the
//! providers' retries of a 503 must still not be published twice.

use std::time::{Duration, Instant};

use sluice_testkit::eventually;
use sluice_testkit::private::PrivateRedis;
use sluice_testkit::proxy::Proxy;
use sluice_testkit::under_load::{Setup, UnderLoad};

fn through(proxy: &Proxy, name: &'static str) -> Setup {
    Setup {
        redis: format!("redis://127.0.0.1:{}", proxy.port),
        ..Setup::new(name)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cut_off_under_load_loses_nothing_and_publishes_nothing_twice() {
    let redis = PrivateRedis::start().await;
    let proxy = Proxy::start(([127, 0, 0, 1], redis.port).into()).await;
    let stage = UnderLoad::start(through(&proxy, "redisgone")).await;
    stage.run_for(Duration::from_secs(2)).await;
    proxy.blackhole();
    tokio::time::sleep(Duration::from_secs(8)).await;
    proxy.restore();
    let report = stage.finish(Instant::now()).await;
    println!("Redis blackholed for 8 s: {report}");
    report.assert_promises();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_turned_read_only_by_a_failover_under_load_loses_nothing_and_publishes_nothing_twice()
{
    let primary = PrivateRedis::start().await;
    let replica = PrivateRedis::start().await;
    replica.replica_of(primary.port).await;
    let synced = eventually(Duration::from_secs(10), || replica.in_sync()).await;
    assert!(synced, "the replica follows the primary");
    let proxy = Proxy::start(([127, 0, 0, 1], primary.port).into()).await;
    let stage = UnderLoad::start(through(&proxy, "redisro")).await;
    stage.run_for(Duration::from_secs(3)).await;

    // The failover: the replica, holding the keys, is promoted; the address
    // leads to it; the old primary, where open connections still go, is
    // demoted and answers writes READONLY.
    replica.promote().await;
    proxy.redirect(([127, 0, 0, 1], replica.port).into());
    primary.replica_of(replica.port).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let report = stage.finish(Instant::now()).await;
    println!("Redis failover (old primary READONLY): {report}");
    report.assert_promises();
}
