//! The `http` handler against a real local server on port 0.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap as AxumHeaders, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::post;
use sluice_shared::message::{EventId, EventType, SourceName};
use sluice_shared::secret::Secret;
use sluice_shared::standard_webhooks::SigningKey;

use super::*;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn key() -> SigningKey {
    SigningKey::from_secret(&Secret::new(SECRET)).unwrap()
}

fn event(id: &str) -> SluiceEvent {
    SluiceEvent {
        id: EventId::as_published(id),
        source: SourceName::as_published("demo"),
        event_type: EventType::as_published("thing"),
        failed_before: 0,
        request_id: Some("req-42".into()),
        copy: None,
        route: None,
        trace: sluice_shared::trace::TraceContext::parse(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ),
        received_at_ms: None,
    }
}

async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

fn target(addr: SocketAddr, timeout: Duration) -> HttpTarget {
    let url = Url::parse(&format!("http://{addr}/hook")).unwrap();
    HttpTarget::new(url, key(), timeout)
}

async fn deliver_to(router: Router, timeout: Duration) -> Result<(), DeliveryError> {
    let addr = serve(router).await;
    target(addr, timeout)
        .deliver(&client().unwrap(), &event("evt-1"), b"{\"a\":1}")
        .await
}

fn answering(response: impl IntoResponse + Clone + Send + Sync + 'static) -> Router {
    Router::new().route(
        "/hook",
        post(move || {
            let response = response.clone();
            async move { response }
        }),
    )
}

#[tokio::test]
async fn a_delivery_carries_the_body_and_a_verifiable_signature() {
    let seen: Arc<Mutex<Vec<(AxumHeaders, Bytes)>>> = Arc::default();
    let record = seen.clone();
    let router = Router::new().route(
        "/hook",
        post(move |headers: AxumHeaders, body: Bytes| {
            record.lock().unwrap().push((headers, body));
            async { StatusCode::NO_CONTENT }
        }),
    );
    assert_eq!(deliver_to(router, Duration::from_secs(5)).await, Ok(()));

    let (headers, body) = seen.lock().unwrap().pop().unwrap();
    assert_eq!(&body[..], b"{\"a\":1}");
    let get = |name: &str| headers.get(name).unwrap().to_str().unwrap().to_owned();
    assert_eq!(get("content-type"), "application/cloudevents+json");
    assert_eq!(get("webhook-id"), "evt-1");
    assert_eq!(get("x-request-id"), "req-42");
    let traceparent = get("traceparent");
    assert!(
        traceparent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-")
            && traceparent.ends_with("-01")
            && !traceparent.contains("00f067aa0ba902b7"),
        "the gateway's trace, with a span of the attempt's own: {traceparent}"
    );
    let timestamp: i64 = get("webhook-timestamp").parse().unwrap();
    assert!((timestamp - unix_seconds(SystemTime::now())).abs() < 5);
    assert!(key().verify("evt-1", timestamp, &body, &get("webhook-signature")));
}

#[tokio::test]
async fn a_503_with_retry_after_is_transient_and_keeps_the_wait() {
    let answer = (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, "7")],
    );
    let err = deliver_to(answering(answer), Duration::from_secs(5))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        DeliveryError::Transient {
            status: Some(503),
            retry_after: Some(Duration::from_secs(7)),
            error: "HTTP 503".into()
        }
    );
}

#[tokio::test]
async fn a_redirect_is_not_followed_and_is_permanent() {
    let answer = (
        StatusCode::FOUND,
        [(header::LOCATION, "http://example.com/")],
    );
    let err = deliver_to(answering(answer), Duration::from_secs(5))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        DeliveryError::Permanent {
            status: Some(302),
            error: "HTTP 302".into()
        }
    );
}

#[tokio::test]
async fn a_slow_receiver_times_out_transiently() {
    let router = Router::new().route(
        "/hook",
        post(|| async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            StatusCode::OK
        }),
    );
    let err = deliver_to(router, Duration::from_millis(200))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        DeliveryError::Transient {
            status: None,
            retry_after: None,
            error: "timed out after 200ms".into()
        }
    );
}

#[tokio::test]
async fn a_closed_port_is_a_refused_connection() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let err = target(addr, Duration::from_secs(5))
        .deliver(&client().unwrap(), &event("evt-1"), b"{}")
        .await
        .unwrap_err();
    assert_eq!(
        err,
        DeliveryError::Transient {
            status: None,
            retry_after: None,
            error: "connection refused".into()
        }
    );
}

#[test]
fn an_id_that_cannot_be_a_header_is_a_permanent_failure() {
    let target = target(([127, 0, 0, 1], 9).into(), Duration::from_secs(1));
    let err = target
        .headers(&event("bad\nid"), b"{}", 1_614_265_330)
        .unwrap_err();
    assert!(matches!(err, DeliveryError::Permanent { status: None, .. }));
}

#[test]
fn the_signature_matches_the_standard_webhooks_vector() {
    let target = target(([127, 0, 0, 1], 9).into(), Duration::from_secs(1));
    let headers = target
        .headers(
            &event("msg_p5jXN8AQM9LWM0D4loKWxJek"),
            br#"{"test": 2432232314}"#,
            1_614_265_330,
        )
        .unwrap();
    assert_eq!(
        headers["webhook-signature"],
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    );
    assert_eq!(headers["webhook-timestamp"], "1614265330");
}

#[test]
fn debug_never_shows_the_key() {
    let target = target(([127, 0, 0, 1], 9).into(), Duration::from_secs(1));
    let text = format!("{target:?}");
    assert!(
        text.contains("[redacted]") && !text.contains("MfKQ"),
        "{text}"
    );
}
