//! One event followed from ingest to delivery: the caller's `traceparent`
//! and `X-Request-Id` travel through RabbitMQ and reach the downstream
//! service as a `traceparent` of the same trace and the same `x-request-id`.

use std::time::Duration;

use sluice_testkit::downstream::{Delivered, Downstream, Plan};
use sluice_testkit::{RunningGateway, RunningWorker, TestEnv, eventually, signature, upsert_body};

const PARENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

/// POSTs one event with `headers`; returns the gateway's `x-request-id`.
async fn post(gateway: &RunningGateway, id: &str, headers: &[(&str, String)]) -> String {
    let body = upsert_body(id);
    let mut request = reqwest::Client::new()
        .post(gateway.url("whatzme"))
        .header("X-Signature", signature(body.as_bytes()))
        .body(body);
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let response = request.send().await.expect("the gateway answers");
    assert_eq!(response.status(), 200);
    response
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .expect("the answer names the request id")
        .to_owned()
}

async fn delivered(downstream: &Downstream, id: &str) -> Delivered {
    let arrived = eventually(Duration::from_secs(10), || async {
        downstream.delivered_ids().contains(id)
    })
    .await;
    assert!(arrived, "{id} is delivered");
    downstream
        .deliveries()
        .into_iter()
        .find(|d| d.id == id)
        .expect("the delivery")
}

/// The trace id of a valid `traceparent`.
fn trace_id(traceparent: &str) -> &str {
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "{traceparent}");
    assert_eq!((parts[0], parts[2].len(), parts[3].len()), ("00", 16, 2));
    parts[1]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_id_and_trace_travel_from_the_provider_to_the_downstream_service() {
    let env = TestEnv::new("trace");
    let downstream = Downstream::start(Plan::Succeed).await;
    let config = env.config(&env.http_route(&downstream.url()));
    let gateway = RunningGateway::start(config.clone()).await;
    let worker = RunningWorker::start(config).await;

    let first = format!("{}-given", env.prefix);
    let parent = format!("00-{PARENT_TRACE}-00f067aa0ba902b7-01");
    let headers = [
        ("traceparent", parent.clone()),
        ("x-request-id", "req-obs-1".to_owned()),
    ];
    assert_eq!(post(&gateway, &first, &headers).await, "req-obs-1");
    let delivery = delivered(&downstream, &first).await;
    let traceparent = delivery.traceparent.expect("a traceparent downstream");
    assert_eq!(trace_id(&traceparent), PARENT_TRACE, "the caller's trace");
    assert!(traceparent.ends_with("-01"), "the caller's flags");
    assert_ne!(traceparent, parent, "a span of Sluice's own");
    assert_eq!(delivery.request_id.as_deref(), Some("req-obs-1"));

    let second = format!("{}-none", env.prefix);
    let request_id = post(&gateway, &second, &[]).await;
    let delivery = delivered(&downstream, &second).await;
    assert_eq!(delivery.request_id.as_deref(), Some(request_id.as_str()));
    let traceparent = delivery.traceparent.expect("a traceparent downstream");
    assert_eq!(
        trace_id(&traceparent),
        request_id,
        "without headers the request id is the trace id Sluice started"
    );

    worker.stop().await;
    gateway.stop().await;
    env.assert_queues_empty_and_delete().await;
}
