//! The worker killed with SIGKILL mid-delivery loses nothing: after a restart
//! every event is delivered at least once.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::StreamExt;

use sluice_testkit::downstream::{Downstream, Plan};
use sluice_testkit::{RunningGateway, TestEnv, eventually, post_signed, upsert_body};

const EVENTS: usize = 300;

fn spawn_worker(config: &std::path::Path, log: &std::path::Path) -> Child {
    let log = std::fs::File::create(log).expect("log file");
    Command::new(env!("CARGO_BIN_EXE_sluice-worker"))
        .arg("--config")
        .arg(config)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("the worker binary starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_delivery_loses_nothing_after_a_restart() {
    let env = TestEnv::new("sigkill");
    let downstream = Downstream::start(Plan::Slow(Duration::from_millis(40))).await;
    // Few deliveries at a time, so that the kill finds work in flight and work queued.
    let toml = env
        .config_toml(&env.http_route(&downstream.url()))
        .replace("[worker]\n", "[worker]\nconcurrency = 8\nprefetch = 16\n");
    let config_path = env.dir.path().join("sluice.toml");
    std::fs::write(&config_path, &toml).expect("config file");
    let config = sluice_shared::config::Config::from_toml(&toml).expect("valid");
    let gateway = RunningGateway::start(config).await;
    let client = reqwest::Client::new();
    let url = gateway.url("whatzme");
    let ids: Vec<String> = (0..EVENTS).map(|i| format!("{}-{i}", env.prefix)).collect();
    let answers: Vec<_> = futures_util::stream::iter(ids.clone())
        .map(|id| {
            let (client, url) = (client.clone(), url.clone());
            async move { post_signed(&client, &url, &upsert_body(&id)).await.0 }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    assert!(
        answers.iter().all(|s| *s == 200),
        "all {EVENTS} events acknowledged"
    );

    let mut first = spawn_worker(&config_path, &env.dir.path().join("worker1.log"));
    let started = eventually(Duration::from_secs(30), || async {
        downstream.delivered_ids().len() >= 40
    })
    .await;
    assert!(started, "the first worker delivers");
    first.kill().expect("SIGKILL");
    let _ = first.wait();
    let at_kill = downstream.delivered_ids().len();
    assert!(
        at_kill < EVENTS,
        "the worker was killed with work left ({at_kill} of {EVENTS} delivered)"
    );

    let mut second = spawn_worker(&config_path, &env.dir.path().join("worker2.log"));
    let all = eventually(Duration::from_secs(60), || async {
        downstream.delivered_ids().len() == EVENTS
    })
    .await;
    let expected: std::collections::HashSet<String> = ids.into_iter().collect();
    assert!(
        all,
        "{} of {EVENTS} delivered after the restart",
        downstream.delivered_ids().len()
    );
    assert_eq!(downstream.delivered_ids(), expected);
    let duplicates = downstream.deliveries().len() - EVENTS;
    eprintln!(
        "SIGKILL after {at_kill} deliveries: {duplicates} event(s) delivered twice (at-least-once)"
    );

    let term = Command::new("kill")
        .arg("-TERM")
        .arg(second.id().to_string())
        .status()
        .expect("kill runs");
    assert!(term.success());
    let exit = second.wait().expect("the worker exits");
    assert!(exit.success(), "SIGTERM ends the worker cleanly: {exit:?}");
    gateway.stop().await;

    env.assert_queues_empty_and_delete().await;
}
