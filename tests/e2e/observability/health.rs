//! `/healthz` says the process lives; `/readyz` names every dependency and
//! what is wrong with each one that is not ready, and follows the Redis
//! policy: Redis down makes the gateway unready only under `reject`.

use std::time::Duration;

use serde_json::Value;
use sluice_shared::config::RedisErrorPolicy;

use super::scrape::Scrape;
use sluice_testkit::{RunningGateway, RunningWorker, TestEnv, eventually};

async fn get(url: String) -> (u16, Value) {
    let response = reqwest::get(url).await.expect("the admin port answers");
    let status = response.status().as_u16();
    (status, response.json().await.expect("a JSON body"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_names_what_is_not_ready_while_healthz_stays_up() {
    let env = TestEnv::new("readyz");
    let mut config = env.config("");
    let worker = RunningWorker::start(config.clone()).await;
    // Nothing listens on port 1: Redis is down for these gateways from the start.
    config.redis.url = "redis://127.0.0.1:1".into();
    let mut rejecting = config.clone();
    rejecting.gateway.on_redis_error = RedisErrorPolicy::Reject;
    let rejecting = RunningGateway::start(rejecting).await;
    let gateway = RunningGateway::start(config).await;

    let (status, body) = get(format!("http://{}/healthz", gateway.admin_addr)).await;
    assert_eq!((status, &body["ok"]), (200, &Value::Bool(true)));
    // on_redis_error = publish (the default) accepts without Redis: the
    // gateway stays ready, and says Redis is degraded.
    let (status, body) = get(format!("http://{}/readyz", gateway.admin_addr)).await;
    assert_eq!(
        (status, &body["ready"]),
        (200, &Value::Bool(true)),
        "{body}"
    );
    let checks = &body["checks"];
    assert_eq!(
        (&checks["rabbitmq"], &checks["topology"]),
        (&"ok".into(), &"ok".into()),
        "{body}"
    );
    assert!(
        checks["redis"]
            .as_str()
            .is_some_and(|why| why.starts_with("degraded: ") && why.contains("Redis")),
        "the Redis check says degraded, and why: {body}"
    );
    // on_redis_error = reject answers 503 without Redis: not ready.
    let (status, body) = get(format!("http://{}/readyz", rejecting.admin_addr)).await;
    assert_eq!(
        (status, &body["ready"]),
        (503, &Value::Bool(false)),
        "{body}"
    );
    assert!(
        body["checks"]["redis"]
            .as_str()
            .is_some_and(|why| !why.starts_with("degraded") && why.contains("Redis")),
        "the Redis check says why: {body}"
    );
    rejecting.stop().await;
    let redis_down = eventually(Duration::from_secs(5), || async {
        Scrape::fetch(gateway.admin_addr)
            .await
            .value("sluice_gateway_redis_up", &[])
            == Some(0.0)
    })
    .await;
    assert!(redis_down, "the probe marks Redis down without any request");

    let ready = eventually(Duration::from_secs(10), || async {
        reqwest::get(format!("http://{}/readyz", worker.admin_addr))
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await;
    assert!(ready, "the worker is ready");
    let (_, body) = get(format!("http://{}/readyz", worker.admin_addr)).await;
    assert_eq!(body["checks"]["topology"], "ok", "{body}");

    gateway.stop().await;
    worker.stop().await;
    env.assert_queues_empty_and_delete().await;
}
