//! A broker that goes silent without closing anything (a dropped route, a
//! frozen host) is noticed through the AMQP heartbeat (`amqp.heartbeat`,
//! 10 s): both binaries turn not ready within 30 s, and come back once the
//! network does.

use std::time::{Duration, Instant};

use sluice_testkit::proxy::Proxy;
use sluice_testkit::{RunningGateway, RunningWorker, TestEnv, eventually, ready};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_broker_is_noticed_within_thirty_seconds_by_both_binaries() {
    let proxy = Proxy::start(([127, 0, 0, 1], 5672).into()).await;
    let url = format!("amqp://guest:guest@127.0.0.1:{}/%2f", proxy.port);
    let env = TestEnv::with_brokers("heartbeat", &url, sluice_testkit::SHARED_REDIS);
    let config = env.config("");
    let gateway = RunningGateway::start(config.clone()).await;
    let worker = RunningWorker::start(config).await;
    let client = reqwest::Client::new();
    let both_ready = eventually(Duration::from_secs(15), || async {
        ready(&client, gateway.admin_addr).await && ready(&client, worker.admin_addr).await
    })
    .await;
    assert!(both_ready, "both binaries are ready through the proxy");

    proxy.blackhole();
    let cut = Instant::now();
    let noticed = eventually(Duration::from_secs(30), || async {
        !ready(&client, gateway.admin_addr).await && !ready(&client, worker.admin_addr).await
    })
    .await;
    let took = cut.elapsed();
    assert!(noticed, "a silent broker is noticed within 30 s");
    println!("silent broker noticed by both binaries after {took:?}");

    proxy.restore();
    let back = eventually(Duration::from_secs(30), || async {
        ready(&client, gateway.admin_addr).await && ready(&client, worker.admin_addr).await
    })
    .await;
    assert!(back, "both reconnect once the network is back");
    gateway.stop().await;
    worker.stop().await;
    drop(proxy);
    let mut shared = TestEnv::new("heartbeat");
    shared.prefix = env.prefix.clone();
    shared.delete_topology().await;
}
