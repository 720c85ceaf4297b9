//! Fan-out to routes: an event goes to every route that matches it, each
//! route with its own attempts, retry tiers and dead record, so one route
//! failing never delivers again to another; an `exclusive` route ends the
//! search; `dlq --route` finds a route's dead records and a replay goes back
//! to that route alone.

use std::time::Duration;

use sluice_shared::message::DeadReason;

use sluice_testkit::broker::Broker;
use sluice_testkit::downstream::{Downstream, Plan};
use sluice_testkit::{
    RunningGateway, RunningWorker, TestEnv, eventually, metric, post_signed, upsert_body,
};

/// An `http` route named `name` over `patterns` (TOML array) to `downstream`,
/// with a 2 s timeout.
fn route(
    env: &TestEnv,
    name: &str,
    patterns: &str,
    downstream: &Downstream,
    extra: &str,
) -> String {
    let extra = format!("timeout = \"2s\"\n{extra}");
    env.route(name, patterns, &downstream.url(), &extra)
}

/// Sends one `whatzme.messages.upsert` event; returns its id.
async fn send_one(env: &TestEnv, gateway: &RunningGateway) -> String {
    let id = format!("{}-event", env.prefix);
    let (status, answer) = post_signed(
        &reqwest::Client::new(),
        &gateway.url("whatzme"),
        &upsert_body(&id),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["accepted"], 1, "{answer}");
    id
}

/// Longer than every retry delay of the test config (200, 400, 800 ms)
/// added up: a second copy anywhere would have arrived by then.
const SETTLE: Duration = Duration::from_secs(3);

async fn route_metric(worker: &RunningWorker, series: &str) -> Option<f64> {
    metric(&reqwest::Client::new(), worker.admin_addr, series).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_matching_routes_one_rejecting_each_good_route_gets_one_copy_and_the_bad_one_one_dead_record()
 {
    let env = TestEnv::new("fanout-three");
    let crm = Downstream::start(Plan::Succeed).await;
    let broken = Downstream::start(Plan::Always(400)).await;
    let audit = Downstream::start(Plan::Succeed).await;
    let routes = [
        route(&env, "crm", r#"["whatzme.*"]"#, &crm, ""),
        route(&env, "broken", r#"["*"]"#, &broken, ""),
        route(&env, "audit", r#"["*.messages.*"]"#, &audit, ""),
    ]
    .concat();
    let config = env.config(&routes);
    let gateway = RunningGateway::start(config.clone()).await;
    let worker = RunningWorker::start(config).await;
    let id = send_one(&env, &gateway).await;

    let broker = Broker::connect(&env.amqp_url).await;
    let topology = env.topology();
    let settled = eventually(Duration::from_secs(20), || async {
        crm.delivered_ids().contains(&id)
            && audit.delivered_ids().contains(&id)
            && broker.count(&topology.dead_queue()).await == 1
    })
    .await;
    assert!(settled, "both good routes delivered and one dead record");
    tokio::time::sleep(SETTLE).await;

    // What went in: one event. What came out: one delivery per good route,
    // one attempt at the bad one, one dead record, and nothing anywhere else.
    assert_eq!(crm.attempts(&id), 1, "crm gets exactly one copy");
    assert_eq!(audit.attempts(&id), 1, "audit gets exactly one copy");
    assert_eq!(crm.deliveries().len(), 1);
    assert_eq!(audit.deliveries().len(), 1);
    assert!(crm.deliveries().iter().all(|d| d.signature_ok));
    assert_eq!(broken.attempts(&id), 1, "a 400 is never retried");
    assert!(broken.delivered_ids().is_empty());
    for (route, copies) in [("crm", 1.0), ("broken", 1.0), ("audit", 1.0)] {
        assert_eq!(
            route_metric(
                &worker,
                &format!("sluice_worker_route_copies_total{{route=\"{route}\"}}")
            )
            .await,
            Some(copies),
            "{route}"
        );
    }
    assert_eq!(
        route_metric(
            &worker,
            r#"sluice_worker_deliveries_total{outcome="delivered",route="crm"}"#
        )
        .await,
        Some(1.0)
    );
    assert_eq!(
        route_metric(
            &worker,
            r#"sluice_worker_deliveries_total{outcome="dead",route="broken"}"#
        )
        .await,
        Some(1.0)
    );
    worker.stop().await;
    gateway.stop().await;

    let dead = broker.drain(&topology.dead_queue()).await;
    assert_eq!(dead.len(), 1, "one dead record, for the failing route only");
    let headers = dead[0].headers();
    assert_eq!(headers.route.as_deref(), Some("broken"));
    assert_eq!(headers.reason, Some(DeadReason::Rejected));
    assert_eq!(headers.last_status, Some(400));
    assert_eq!(headers.attempts, Some(1));
    assert_eq!(dead[0].routing_key, "whatzme.messages.upsert");
    assert_eq!(dead[0].json()["id"], id.as_str(), "the envelope, as it was");
    assert_eq!(broker.total(&topology).await, 0, "nothing left anywhere");
    broker.delete(&topology).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_failure_on_one_route_retries_that_route_only() {
    let env = TestEnv::new("fanout-retry");
    let first = Downstream::start(Plan::Succeed).await;
    let flaky = Downstream::start(Plan::FailFirst(2, 503)).await;
    let third = Downstream::start(Plan::Succeed).await;
    let routes = [
        route(&env, "first", r#"["*"]"#, &first, ""),
        route(&env, "flaky", r#"["*"]"#, &flaky, ""),
        route(&env, "third", r#"["*"]"#, &third, ""),
    ]
    .concat();
    let config = env.config(&routes);
    let gateway = RunningGateway::start(config.clone()).await;
    let worker = RunningWorker::start(config).await;
    let id = send_one(&env, &gateway).await;

    let arrived = eventually(Duration::from_secs(20), || async {
        [&first, &flaky, &third]
            .iter()
            .all(|d| d.delivered_ids().contains(&id))
    })
    .await;
    assert!(arrived, "every route delivers in the end");
    tokio::time::sleep(SETTLE).await;
    assert_eq!(flaky.attempts(&id), 3, "two failures, then the success");
    assert_eq!(first.attempts(&id), 1, "the retries are flaky's alone");
    assert_eq!(third.attempts(&id), 1, "the retries are flaky's alone");
    assert_eq!(
        route_metric(
            &worker,
            r#"sluice_worker_deliveries_total{outcome="retried",route="flaky"}"#
        )
        .await,
        Some(2.0)
    );
    assert_eq!(
        route_metric(
            &worker,
            r#"sluice_worker_deliveries_total{outcome="retried",route="first"}"#
        )
        .await,
        Some(0.0)
    );
    worker.stop().await;
    gateway.stop().await;
    env.assert_queues_empty_and_delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exclusive_route_takes_the_event_from_the_routes_after_it_only() {
    let env = TestEnv::new("fanout-exclusive");
    let audit = Downstream::start(Plan::Succeed).await;
    let chat = Downstream::start(Plan::Succeed).await;
    let rest = Downstream::start(Plan::Succeed).await;
    let routes = [
        route(&env, "audit", r#"["*"]"#, &audit, ""),
        route(&env, "chat", r#"["whatzme.*"]"#, &chat, "exclusive = true"),
        route(&env, "rest", r#"["*"]"#, &rest, ""),
    ]
    .concat();
    let config = env.config(&routes);
    let gateway = RunningGateway::start(config.clone()).await;
    let worker = RunningWorker::start(config).await;
    let id = send_one(&env, &gateway).await;

    let arrived = eventually(Duration::from_secs(20), || async {
        audit.delivered_ids().contains(&id) && chat.delivered_ids().contains(&id)
    })
    .await;
    assert!(
        arrived,
        "the route before the exclusive one and the exclusive one deliver"
    );
    tokio::time::sleep(SETTLE).await;
    assert_eq!((audit.attempts(&id), chat.attempts(&id)), (1, 1));
    assert_eq!(
        rest.attempts(&id),
        0,
        "a route after the exclusive match never sees it"
    );
    worker.stop().await;
    gateway.stop().await;
    env.assert_queues_empty_and_delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_matching_route_is_attempted_straight_from_the_work_queue_and_the_other_route_never() {
    let env = TestEnv::new("fanout-one");
    let only = Downstream::start(Plan::Succeed).await;
    let other = Downstream::start(Plan::Succeed).await;
    let routes = [
        route(&env, "only", r#"["whatzme.*"]"#, &only, ""),
        route(&env, "other", r#"["stripe.*"]"#, &other, ""),
    ]
    .concat();
    let config = env.config(&routes);
    let gateway = RunningGateway::start(config.clone()).await;
    let worker = RunningWorker::start(config).await;
    let id = send_one(&env, &gateway).await;
    let arrived = eventually(Duration::from_secs(20), || async {
        only.delivered_ids().contains(&id)
    })
    .await;
    assert!(arrived);
    // An event one idle route takes is attempted by the router itself: no
    // copy into the route's queue (route_limits shows a busy route's queue).
    for (metric, route, expected) in [
        ("direct_attempts", "only", 1.0),
        ("route_copies", "only", 0.0),
        ("direct_attempts", "other", 0.0),
        ("route_copies", "other", 0.0),
    ] {
        let series = format!("sluice_worker_{metric}_total{{route=\"{route}\"}}");
        assert_eq!(
            route_metric(&worker, &series).await,
            Some(expected),
            "{series}"
        );
    }
    assert_eq!(only.attempts(&id), 1);
    assert_eq!(other.attempts(&id), 0);
    worker.stop().await;
    gateway.stop().await;
    env.assert_queues_empty_and_delete().await;
}

/// `sluice-worker --config <config> dlq <args>`: exit code and stdout.
async fn dlq(config: &std::path::Path, args: &[&str]) -> (Option<i32>, String, String) {
    let output = crate::dlq::dlq_command(config, args)
        .output()
        .await
        .expect("the binary runs");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_filters_by_route_and_a_replay_reaches_only_its_route() {
    let env = TestEnv::new("fanout-dlq");
    let good = Downstream::start(Plan::Succeed).await;
    let billing = Downstream::start(Plan::Always(400)).await;
    let crm = Downstream::start(Plan::Always(400)).await;
    let routes = [
        route(&env, "good", r#"["*"]"#, &good, ""),
        route(&env, "billing", r#"["*"]"#, &billing, ""),
        route(&env, "crm", r#"["*"]"#, &crm, ""),
    ]
    .concat();
    let config_path = env.dir.path().join("sluice.toml");
    std::fs::write(&config_path, env.config_toml(&routes)).expect("config file");
    let config = env.config(&routes);
    let gateway = RunningGateway::start(config.clone()).await;
    let worker = RunningWorker::start(config.clone()).await;
    let id = send_one(&env, &gateway).await;

    let broker = Broker::connect(&env.amqp_url).await;
    let topology = env.topology();
    let dead = eventually(Duration::from_secs(20), || async {
        broker.count(&topology.dead_queue()).await == 2 && good.delivered_ids().contains(&id)
    })
    .await;
    assert!(dead, "one dead record per failing route");

    let (code, out, err) = dlq(&config_path, &["peek", "--route", "billing", "--json"]).await;
    assert_eq!(code, Some(0), "{err}");
    let peeked: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    let text = peeked.to_string();
    assert!(text.contains(r#""route":"billing""#), "{text}");
    assert!(!text.contains(r#""route":"crm""#), "{text}");

    let (code, out, err) = dlq(&config_path, &["stats", "--json"]).await;
    assert_eq!(code, Some(0), "{err}");
    let stats: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(
        stats["by_route"],
        serde_json::json!({"billing": 1, "crm": 1}),
        "{stats}"
    );

    billing.set_plan(Plan::Succeed);
    crm.set_plan(Plan::Succeed);
    let (code, out, err) = dlq(&config_path, &["replay", "--route", "billing", "--json"]).await;
    assert_eq!(code, Some(0), "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(report["matched"], 1, "{report}");
    assert_eq!(report["replayed"], 1, "{report}");
    assert_eq!(report["left_in_queue"], 1, "{report}");

    let replayed = eventually(Duration::from_secs(20), || async {
        billing.delivered_ids().contains(&id)
    })
    .await;
    assert!(replayed, "the replayed copy reaches billing");
    tokio::time::sleep(SETTLE).await;
    assert_eq!(billing.attempts(&id), 2, "the 400, then the replay");
    assert_eq!(
        good.attempts(&id),
        1,
        "the replay does not reach good again"
    );
    assert_eq!(crm.attempts(&id), 1, "nor crm, whose record stays dead");
    worker.stop().await;
    gateway.stop().await;

    let left = broker.drain(&topology.dead_queue()).await;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].headers().route.as_deref(), Some("crm"));
    assert_eq!(broker.total(&topology).await, 0);
    broker.delete(&topology).await;
}

/// A message as a route copy of event `id` for `route` looks.
fn route_copy(id: &str, route: &str) -> (Vec<u8>, lapin::BasicProperties) {
    use sluice_shared::message::{EventId, EventType, MessageHeaders, SourceName};
    let headers = MessageHeaders {
        source: Some(SourceName::from_config_name("whatzme")),
        event_type: Some(EventType::normalise("messages.upsert")),
        attempt: Some(0),
        copy: Some(format!("copy-{id}")),
        route: Some(route.to_owned()),
        ..MessageHeaders::default()
    };
    let body = format!(
        r#"{{"specversion":"1.0","id":"{id}","source":"sluice/whatzme","type":"messages.upsert","data":{{}}}}"#
    );
    let properties = sluice_shared::message::event_properties(
        &EventId::from_provider(id),
        std::time::SystemTime::now(),
        headers,
    );
    (body.into_bytes(), properties)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_naming_a_route_goes_to_it_alone_and_one_naming_a_gone_route_is_dead_as_no_route()
{
    let env = TestEnv::new("fanout-named");
    let named = Downstream::start(Plan::Succeed).await;
    let other = Downstream::start(Plan::Succeed).await;
    let routes = [
        route(&env, "named", r#"["*"]"#, &named, ""),
        route(&env, "other", r#"["*"]"#, &other, ""),
    ]
    .concat();
    let worker = RunningWorker::start(env.config(&routes)).await;
    let broker = Broker::connect(&env.amqp_url).await;
    let topology = env.topology();
    let for_named = format!("{}-named", env.prefix);
    let for_gone = format!("{}-gone", env.prefix);
    for (id, route) in [(&for_named, "named"), (&for_gone, "gone")] {
        let (body, properties) = route_copy(id, route);
        broker
            .channel()
            .basic_publish(
                "".into(),
                topology.work_queue().as_str().into(),
                lapin::options::BasicPublishOptions::default(),
                &body,
                properties,
            )
            .await
            .expect("publish")
            .await
            .expect("sent");
    }
    let settled = eventually(Duration::from_secs(20), || async {
        named.delivered_ids().contains(&for_named)
            && broker.count(&topology.dead_queue()).await == 1
    })
    .await;
    assert!(settled, "one delivered to its route, one dead");
    tokio::time::sleep(SETTLE).await;
    assert_eq!(named.attempts(&for_named), 1);
    assert_eq!(
        other.attempts(&for_named),
        0,
        "a named route's copy is not fanned out"
    );
    assert_eq!(
        (named.attempts(&for_gone), other.attempts(&for_gone)),
        (0, 0)
    );
    worker.stop().await;

    let dead = broker.drain(&topology.dead_queue()).await;
    assert_eq!(dead.len(), 1);
    let headers = dead[0].headers();
    assert_eq!(headers.reason, Some(DeadReason::NoRoute));
    assert_eq!(
        headers.route.as_deref(),
        Some("gone"),
        "kept, to replay once restored"
    );
    let error = headers.last_error.unwrap_or_default();
    assert!(
        error.contains("`gone`") && error.contains("restore"),
        "{error}"
    );
    assert_eq!(broker.total(&topology).await, 0);
    broker.delete(&topology).await;
}
