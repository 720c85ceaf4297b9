//! Per-route limits and the circuit breaker: every route has its own queue,
//! consumer, concurrency and rate, so a slow route never slows another; a
//! dead route's breaker opens and holds its events (no attempt counted,
//! nothing dead-lettered) and delivers them all once the receiver is back;
//! `sluice-worker routes` shows it.

use std::collections::HashMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use sluice_testkit::broker::Broker;
use sluice_testkit::downstream::{Downstream, Plan};
use sluice_testkit::{
    RunningGateway, RunningWorker, TestEnv, eventually, metric, post_signed, upsert_body,
};

/// An `http` route named `name` matching everything, to `downstream`, with
/// `extra` TOML (its limits, its `[routes.breaker]`).
fn route(env: &TestEnv, name: &str, downstream: &Downstream, extra: &str) -> String {
    env.route(name, r#"["*"]"#, &downstream.url(), extra)
}

/// Sends `count` events, one request each; returns their ids and when each was accepted.
async fn send(env: &TestEnv, gateway: &RunningGateway, count: usize) -> Vec<(String, Instant)> {
    let client = reqwest::Client::new();
    let mut sent = Vec::new();
    for n in 0..count {
        let id = format!("{}-{n:03}", env.prefix);
        let (status, answer) =
            post_signed(&client, &gateway.url("whatzme"), &upsert_body(&id)).await;
        assert_eq!(status, 200, "{answer}");
        sent.push((id, Instant::now()));
    }
    sent
}

async fn worker_metric(worker: &RunningWorker, series: &str) -> f64 {
    metric(&reqwest::Client::new(), worker.admin_addr, series)
        .await
        .unwrap_or_else(|| panic!("no series {series}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_at_ten_seconds_a_delivery_does_not_slow_another_route() {
    let env = TestEnv::new("limits-slow");
    let slow = Downstream::start(Plan::Slow(Duration::from_secs(10))).await;
    let fast = Downstream::start(Plan::Succeed).await;
    let routes = [
        route(&env, "slow", &slow, "timeout = \"30s\"\nconcurrency = 2"),
        route(&env, "fast", &fast, "timeout = \"5s\"\nconcurrency = 4"),
    ]
    .concat();
    let config = env.config(&routes);
    let gateway = RunningGateway::start(config.clone()).await;
    let worker = RunningWorker::start(config).await;
    let sent = send(&env, &gateway, 20).await;

    let all_fast = eventually(Duration::from_secs(8), || async {
        fast.delivered_ids().len() == 20
    })
    .await;
    assert!(
        all_fast,
        "the fast route got all 20 while the slow one held its two"
    );
    // The slow route's concurrency is exhausted: two requests reached it,
    // none has been answered (each takes 10 s), the rest wait in its queue.
    assert_eq!(
        slow.attempt_log().len(),
        2,
        "the slow route's concurrency (2) is honoured"
    );
    assert!(slow.deliveries().is_empty(), "no slow delivery is done yet");

    let sent_at: HashMap<_, _> = sent.into_iter().collect();
    let mut latencies: Vec<Duration> = fast
        .deliveries()
        .iter()
        .map(|d| d.at.duration_since(sent_at[&d.id]))
        .collect();
    latencies.sort();
    let worst = latencies[latencies.len() - 1];
    assert!(
        worst < Duration::from_secs(3),
        "the fast route's slowest delivery took {worst:?}, far below the slow route's 10 s"
    );
    let backlog = Broker::connect(&env.amqp_url)
        .await
        .count(&env.topology().route_queue("slow"))
        .await;
    assert!(
        backlog >= 16,
        "the slow route's backlog waits in its own queue: {backlog}"
    );
    let reported = eventually(Duration::from_secs(8), || async {
        metric(
            &reqwest::Client::new(),
            worker.admin_addr,
            r#"sluice_worker_queue_depth{queue="route.slow"}"#,
        )
        .await
        .is_some_and(|depth| depth >= 16.0)
    })
    .await;
    assert!(reported, "the worker reports the route's backlog");
    worker.stop().await;
    gateway.stop().await;
    env.delete_topology().await;
}

/// The router attempts an event one route takes itself, in one of the
/// route's slots, but never lets a slow route hold more than half of what it
/// prefetched: the rest goes to the route's queue and the work queue drains.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_route_s_direct_attempts_keep_to_its_concurrency_and_half_the_router_s_prefetch() {
    let env = TestEnv::new("limits-direct");
    // Slower than the test: no attempt ends, so no share or slot comes back.
    let slow = Downstream::start(Plan::Slow(Duration::from_secs(30))).await;
    let routes = route(&env, "slow", &slow, "timeout = \"60s\"\nconcurrency = 2");
    let mut config = env.config(&routes);
    // Four direct shares: two attempts in the route's slots, two waiting.
    config.worker.prefetch = Some(8);
    let gateway = RunningGateway::start(config.clone()).await;
    let worker = RunningWorker::start(config).await;
    send(&env, &gateway, 20).await;

    let topology = env.topology();
    let broker = Broker::connect(&env.amqp_url).await;
    let queued = eventually(Duration::from_secs(8), || async {
        broker.count(&topology.work_queue()).await == 0
            && broker.count(&topology.route_queue("slow")).await >= 14
    })
    .await;
    let (work, route_queue) = (
        broker.count(&topology.work_queue()).await,
        broker.count(&topology.route_queue("slow")).await,
    );
    assert!(
        queued,
        "the router routes past its four direct shares: {work} left in the work queue, \
         {route_queue} in the route's queue"
    );
    assert_eq!(
        slow.attempt_log().len(),
        2,
        "direct attempts and the route's consumer share its two slots"
    );
    let direct = worker_metric(
        &worker,
        r#"sluice_worker_direct_attempts_total{route="slow"}"#,
    )
    .await;
    let copies = worker_metric(&worker, r#"sluice_worker_route_copies_total{route="slow"}"#).await;
    // The first event found a slot free; three more took the other shares
    // and wait for a slot (counted once attempted); the 16 after them found
    // no share and were routed.
    assert!(
        (1.0..=2.0).contains(&direct),
        "{direct} attempted directly in the route's two slots"
    );
    assert_eq!(
        copies, 16.0,
        "everything past the router's four direct shares goes to the route's queue"
    );
    worker.stop().await;
    gateway.stop().await;
    env.delete_topology().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_route_opens_its_breaker_holds_its_events_unattempted_then_delivers_them_all() {
    let env = TestEnv::new("limits-breaker");
    let dead = Downstream::start(Plan::Always(503)).await;
    let healthy = Downstream::start(Plan::Succeed).await;
    let breaker = "timeout = \"2s\"\nconcurrency = 1\n[routes.breaker]\nfailures = 3\nprobe_after = \"500ms\"\nprobe_max = \"1s\"";
    let routes = [
        route(&env, "dead", &dead, breaker),
        route(&env, "healthy", &healthy, ""),
    ]
    .concat();
    let config = env.config(&routes);
    let config_path = env.dir.path().join("worker.toml");
    std::fs::write(&config_path, env.config_toml(&routes)).expect("config file");
    let gateway = RunningGateway::start(config.clone()).await;
    let worker = RunningWorker::start(config).await;
    let sent = send(&env, &gateway, 12).await;

    let opened = eventually(Duration::from_secs(10), || async {
        worker_metric(
            &worker,
            r#"sluice_worker_route_breaker_opened_total{route="dead"}"#,
        )
        .await
            >= 1.0
    })
    .await;
    assert!(opened, "three 503s in a row open the dead route's breaker");
    assert!(
        eventually(Duration::from_secs(10), || async {
            healthy.delivered_ids().len() == 12
        })
        .await,
        "the healthy route is not held back"
    );
    let broker = Broker::connect(&env.amqp_url).await;
    let topology = env.topology();
    let dead_queue = topology.route_queue("dead");
    // Longer than every retry delay (200, 400, 800 ms) added up: the two
    // events retried before the breaker opened are back in the route's
    // queue, and probes (every 500 ms, then every second) have run.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let probes_seen = dead.attempt_log().len();
    assert_eq!(
        broker.count(&topology.dead_queue()).await,
        0,
        "nothing is dead-lettered"
    );
    // Twelve, or eleven while a probe holds one.
    let waiting = eventually(Duration::from_secs(3), || async {
        broker.count(&dead_queue).await == 12
    })
    .await;
    assert!(waiting, "all twelve wait in the route's queue");
    assert_eq!(
        worker_metric(
            &worker,
            r#"sluice_worker_deliveries_total{outcome="retried",route="dead"}"#
        )
        .await,
        2.0,
        "only the two failures before the one that opened it counted an attempt"
    );
    assert_eq!(
        worker_metric(
            &worker,
            r#"sluice_worker_deliveries_total{outcome="dead",route="dead"}"#
        )
        .await,
        0.0
    );
    assert!(
        probes_seen > 3,
        "probes reached the receiver: {probes_seen}"
    );
    assert!(
        probes_seen < 12,
        "but one at a time, not the backlog: {probes_seen}"
    );

    let (code, stdout, stderr) = routes_command(&config_path, worker.admin_addr, true).await;
    assert_eq!(code, Some(0), "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    let by_route: HashMap<String, serde_json::Value> = report["routes"]
        .as_array()
        .expect("routes")
        .iter()
        .map(|r| (r["route"].as_str().expect("a name").to_owned(), r.clone()))
        .collect();
    let held = &by_route["dead"];
    assert!(
        held["state"] == "open" || held["state"] == "half-open",
        "{held}"
    );
    let backlog = held["backlog"].as_u64().expect("a backlog");
    assert!(backlog == 12 || backlog == 11, "{held}");
    assert_eq!(held["last_error"], "HTTP 503", "{held}");
    assert_eq!(by_route["healthy"]["state"], "closed");
    assert_eq!(by_route["healthy"]["backlog"], 0);
    assert!(by_route["healthy"]["last_error"].is_null());

    dead.set_plan(Plan::Succeed);
    let recovered = eventually(Duration::from_secs(15), || async {
        dead.delivered_ids().len() == 12
    })
    .await;
    assert!(
        recovered,
        "the receiver is back: everything held is delivered"
    );
    assert!(
        eventually(Duration::from_secs(5), || async {
            worker_metric(
                &worker,
                r#"sluice_worker_route_breaker_state{route="dead"}"#,
            )
            .await
                == 0.0
        })
        .await,
        "and the breaker closed"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let copies = dead.copies();
    let ids: Vec<&String> = sent.iter().map(|(id, _)| id).collect();
    assert!(
        ids.iter().all(|id| copies.get(*id) == Some(&1)),
        "each once: {copies:?}"
    );
    // Held events kept their attempt count: the 24 deliveries (12 per
    // route) took 26 attempts, the two retries before the breaker opened
    // being the only failures counted; failed probes and holds add none.
    assert_eq!(
        worker_metric(&worker, "sluice_worker_delivery_attempts_count").await,
        24.0
    );
    assert_eq!(
        worker_metric(&worker, "sluice_worker_delivery_attempts_sum").await,
        26.0,
        "24 first attempts and 2 retries"
    );
    assert!(worker_metric(&worker, r#"sluice_worker_route_held_total{route="dead"}"#).await >= 1.0);
    worker.stop().await;
    gateway.stop().await;
    env.assert_queues_empty_and_delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_s_rate_limit_spaces_its_deliveries() {
    let env = TestEnv::new("limits-rate");
    let limited = Downstream::start(Plan::Succeed).await;
    let free = Downstream::start(Plan::Succeed).await;
    let routes = [
        route(
            &env,
            "limited",
            &limited,
            "rate = { per_second = 5, burst = 1 }",
        ),
        route(&env, "free", &free, ""),
    ]
    .concat();
    let config = env.config(&routes);
    let gateway = RunningGateway::start(config.clone()).await;
    let worker = RunningWorker::start(config).await;
    send(&env, &gateway, 20).await;

    let all = eventually(Duration::from_secs(20), || async {
        limited.delivered_ids().len() == 20 && free.delivered_ids().len() == 20
    })
    .await;
    assert!(all, "both routes get all twenty");
    let mut times: Vec<Instant> = limited.deliveries().iter().map(|d| d.at).collect();
    times.sort();
    let span = times[19].duration_since(times[0]);
    // 19 deliveries after the first at 5 a second: 3.8 s; unlimited, they
    // all come within a fraction of a second (the free route's do).
    assert!(
        span >= Duration::from_secs(3),
        "twenty at 5/s took {span:?}"
    );
    for (n, start) in times.iter().enumerate() {
        let in_a_second = times[n..]
            .iter()
            .take_while(|t| t.duration_since(*start) < Duration::from_secs(1))
            .count();
        assert!(
            in_a_second <= 8,
            "{in_a_second} deliveries within one second"
        );
    }
    assert!(
        worker_metric(
            &worker,
            r#"sluice_worker_route_rate_limited_total{route="limited"}"#
        )
        .await
            >= 10.0
    );
    assert_eq!(
        worker_metric(
            &worker,
            r#"sluice_worker_route_rate_limited_total{route="free"}"#
        )
        .await,
        0.0
    );
    worker.stop().await;
    gateway.stop().await;
    env.assert_queues_empty_and_delete().await;
}

#[tokio::test]
async fn routes_without_a_worker_to_ask_says_so_and_exits_non_zero() {
    let env = TestEnv::new("limits-noworker");
    let path = env.dir.path().join("worker.toml");
    let toml = env.config_toml("[[routes]]\nname = \"crm\"\nmatch = [\"*\"]\nhandler = \"log\"\n");
    std::fs::write(&path, toml).expect("config file");
    // Nothing listens there (a port just bound and released).
    let nobody = sluice_testkit::raw_http::free_port();
    for json in [false, true] {
        let (code, stdout, stderr) = routes_command(&path, nobody, json).await;
        assert_eq!(code, Some(1), "{stderr}");
        assert!(stdout.is_empty(), "no partial table: {stdout}");
        assert!(stderr.contains("no worker answered"), "{stderr}");
        assert!(stderr.contains("--admin"), "says what to do: {stderr}");
    }
}

/// `sluice-worker --config <config> routes --admin <admin> [--json]`.
async fn routes_command(
    config: &std::path::Path,
    admin: std::net::SocketAddr,
    json: bool,
) -> (Option<i32>, String, String) {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_sluice-worker"));
    command
        .arg("--config")
        .arg(config)
        .arg("routes")
        .arg("--admin")
        .arg(admin.to_string())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    if json {
        command.arg("--json");
    }
    let output = command.output().await.expect("the binary runs");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}
