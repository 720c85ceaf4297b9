//! `POST /webhooks/{source}` (and other paths and methods) refused before
//! the brokers, and the two 503s of brokers that are not there.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::StatusCode;
use futures_util::stream::{self, StreamExt};
use serde_json::json;

use super::*;

/// A body of `items` events of `shop`, with a shared context of `context` bytes.
fn items(items: usize, context: usize) -> String {
    let items: Vec<_> = (0..items).map(|n| json!({"id": format!("i{n}")})).collect();
    let body = json!({"event": "order.updated", "context": "c".repeat(context), "items": items});
    body.to_string()
}

#[tokio::test]
async fn an_unknown_source_is_a_404_counted_under_unknown() {
    let (state, router) = offline("");
    let (status, _, body) = send(&router, post("/webhooks/nosuch", &[], "{}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(refusal(&body).0, "unknown_source");
    assert_eq!(counted(&state), once("unknown", "unknown_source"));
    assert_eq!(claims(&state), 0);
}

#[tokio::test]
async fn another_path_is_a_404_that_says_how_webhooks_are_sent_and_counts_no_request() {
    let (state, router) = offline("");
    let (status, _, body) = send(&router, post("/admin", &[], "{}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (code, message) = refusal(&body);
    assert_eq!(code, "not_found");
    assert!(message.contains("POST /webhooks/{source}"), "{message}");
    assert_eq!(counted(&state), [], "not a webhook request");
}

#[tokio::test]
async fn another_method_on_a_webhook_is_a_405_and_counts_no_request() {
    let (state, router) = offline("");
    let request = axum::http::Request::put("/webhooks/shop").body(Body::from("{}"));
    let (status, _, body) = send(&router, from_loopback(request.expect("a request"))).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    let (code, message) = refusal(&body);
    assert_eq!(code, "method_not_allowed");
    assert!(message.contains("POST /webhooks/{source}"), "{message}");
    assert_eq!(counted(&state), [], "not a webhook request");
}

#[tokio::test]
async fn a_missing_signature_is_a_401_naming_the_header() {
    let (state, router) = offline("");
    let (status, retry, body) = send(&router, post("/webhooks/shop", &[], items(1, 0))).await;
    assert_eq!((status, retry), (StatusCode::UNAUTHORIZED, None));
    let (code, message) = refusal(&body);
    assert_eq!(code, "invalid_signature");
    assert!(message.to_lowercase().contains("x-signature"), "{message}");
    assert_eq!(counted(&state), once("shop", "invalid_signature"));
    assert_eq!(claims(&state), 0);
}

#[tokio::test]
async fn a_body_signed_with_another_secret_is_a_401() {
    let (state, router) = offline("");
    let body = items(1, 0);
    let wrong = format!(
        "sha256={}",
        hex_hmac_sha256("not-the-secret", body.as_bytes())
    );
    let request = post("/webhooks/shop", &[("x-signature", &wrong)], body);
    let (status, _, body) = send(&router, request).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(refusal(&body).0, "invalid_signature");
    assert_eq!(counted(&state), once("shop", "invalid_signature"));
    assert_eq!(claims(&state), 0);
}

#[tokio::test]
async fn an_address_outside_allow_ips_is_a_403() {
    let (state, router) = offline("");
    let bearer = format!("Bearer {WALLED_TOKEN}");
    let request = post("/webhooks/walled", &[("authorization", &bearer)], "{}");
    let (status, _, body) = send(&router, request).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(refusal(&body).0, "forbidden_address");
    assert_eq!(counted(&state), once("walled", "forbidden"));
    assert_eq!(claims(&state), 0);
}

#[tokio::test]
async fn more_header_fields_than_max_headers_is_a_431() {
    let (state, router) = offline("");
    let mut request = signed(&items(1, 0));
    for n in 0..20 {
        let name = axum::http::HeaderName::try_from(format!("x-extra-{n}"));
        let value = axum::http::HeaderValue::from(n);
        request
            .headers_mut()
            .insert(name.expect("a header name"), value);
    }
    let (status, _, body) = send(&router, request).await;
    assert_eq!(status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert_eq!(refusal(&body).0, "headers_too_large");
    assert_eq!(counted(&state), once("shop", "headers_too_large"));
    assert_eq!(claims(&state), 0);
}

#[tokio::test]
async fn a_declared_length_over_body_limit_is_a_413_before_the_body_is_read() {
    let (state, router) = offline("");
    let mut request = signed(&items(1, 0));
    let declared = axum::http::HeaderValue::from(2048);
    request.headers_mut().insert("content-length", declared);
    let (status, _, body) = send(&router, request).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let (code, message) = refusal(&body);
    assert_eq!(code, "payload_too_large");
    assert!(message.contains("1024"), "{message}");
    assert_eq!(counted(&state), once("shop", "too_large"));
    assert_eq!(claims(&state), 0);
}

#[tokio::test]
async fn a_body_that_grows_past_body_limit_is_a_413() {
    let (state, router) = offline("");
    let signature = format!("sha256={}", hex_hmac_sha256(SHOP_SECRET, b"unused"));
    let chunks = (0..3).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![b' '; 512])));
    let body = Body::from_stream(stream::iter(chunks));
    let request = post("/webhooks/shop", &[("x-signature", &signature)], body);
    let (status, _, body) = send(&router, request).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(refusal(&body).0, "payload_too_large");
    assert_eq!(counted(&state), once("shop", "too_large"));
    assert_eq!(claims(&state), 0);
}

#[tokio::test]
async fn a_body_that_stops_arriving_is_a_408_at_body_read_timeout() {
    let (state, router) = offline("");
    let signature = format!("sha256={}", hex_hmac_sha256(SHOP_SECRET, b"unused"));
    let first = stream::once(async { Ok::<_, std::io::Error>(Bytes::from_static(b"{")) });
    let body = Body::from_stream(first.chain(stream::pending()));
    let request = post("/webhooks/shop", &[("x-signature", &signature)], body);
    let started = tokio::time::Instant::now();
    let (status, _, body) = send(&router, request).await;
    assert_eq!(status, StatusCode::REQUEST_TIMEOUT);
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(refusal(&body).0, "request_timeout");
    assert_eq!(counted(&state), once("shop", "timeout"));
    assert_eq!(claims(&state), 0);
}

#[tokio::test]
async fn a_body_that_cannot_be_read_is_a_400() {
    let (state, router) = offline("");
    let signature = format!("sha256={}", hex_hmac_sha256(SHOP_SECRET, b"unused"));
    let cut = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "cut");
    let body = Body::from_stream(stream::iter([Err::<Bytes, _>(cut)]));
    let request = post("/webhooks/shop", &[("x-signature", &signature)], body);
    let (status, _, body) = send(&router, request).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(refusal(&body).0, "bad_request");
    assert_eq!(counted(&state), once("shop", "bad_request"));
    assert_eq!(claims(&state), 0);
}

#[tokio::test]
async fn more_events_than_max_events_per_request_is_a_413() {
    let (state, router) = offline("max_events_per_request = 3");
    let (status, _, body) = send(&router, signed(&items(4, 0))).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let (code, message) = refusal(&body);
    assert_eq!(code, "too_many_events");
    assert!(message.contains("smaller batches"), "{message}");
    assert_eq!(counted(&state), once("shop", "too_many_events"));
    assert_eq!(claims(&state), 0);
}

#[tokio::test]
async fn messages_past_the_fan_out_cap_are_a_413() {
    // 10 items sharing a 700-byte context: about 7 KB of messages from a
    // body under 1 KB, past 4 × body_limit.
    let (state, router) = offline("");
    let (status, _, body) = send(&router, signed(&items(10, 700))).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(refusal(&body).0, "fan_out_too_large");
    assert_eq!(counted(&state), once("shop", "fan_out_too_large"));
    assert_eq!(claims(&state), 0);
}

#[tokio::test]
async fn a_body_past_the_shared_body_memory_is_shed_with_a_503() {
    let (state, router) = offline("limits.max_body_memory = 64");
    let (status, retry, body) = send(&router, signed(&items(1, 200))).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(retry.as_deref(), Some("1"));
    assert_eq!(refusal(&body).0, "overloaded");
    assert_eq!(counted(&state), once("shop", "overloaded"));
    let shed = state.metrics.shed.with_label_values(&["body_memory"]).get();
    assert_eq!(shed, 1);
    assert_eq!(claims(&state), 0);
}

#[tokio::test]
async fn an_empty_rate_limit_bucket_is_a_429_with_the_wait() {
    let (state, router) = offline("");
    let metered = state.sources.get("metered").expect("the metered source");
    let bucket = metered.rate_limit.as_ref().expect("its rate limit");
    assert_eq!(bucket.take(1), Ok(()), "the burst of one, used up");
    let bearer = format!("Bearer {METERED_TOKEN}");
    let request = post("/webhooks/metered", &[("authorization", &bearer)], "{}");
    let (status, retry, body) = send(&router, request).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    // One event at 0.01 a second: a wait of about 100 s.
    let retry: u64 = retry.expect("Retry-After").parse().expect("whole seconds");
    assert!((90..=100).contains(&retry), "{retry}");
    assert_eq!(refusal(&body).0, "rate_limited");
    assert_eq!(counted(&state), once("metered", "rate_limited"));
    assert_eq!(claims(&state), 0);
}

#[tokio::test]
async fn a_challenge_event_is_echoed_without_the_brokers() {
    let (state, router) = offline("");
    let challenge = json!({"event": "url.verify", "challenge": "c-123"}).to_string();
    let (status, _, body) = send(&router, signed(&challenge)).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "c-123"));
    assert_eq!(counted(&state), once("shop", "challenge"));
    assert_eq!(claims(&state), 0);
}

#[tokio::test]
async fn redis_unreachable_under_reject_is_a_503_with_retry_after() {
    let (state, router) = offline(r#"on_redis_error = "reject""#);
    let (status, retry, body) = send(&router, signed(&items(2, 0))).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(retry.as_deref(), Some("5"), "gateway.retry_after");
    let (code, message) = refusal(&body);
    assert_eq!(code, "unavailable");
    assert!(message.contains("on_redis_error = reject"), "{message}");
    assert_eq!(counted(&state), once("shop", "unavailable"));
    assert_eq!(claims(&state), 1, "one claim for the request, refused");
}

#[tokio::test]
async fn redis_unreachable_under_publish_bypasses_dedup_and_no_rabbitmq_is_a_503() {
    let (state, router) = offline(r#"on_redis_error = "publish""#);
    let (status, retry, body) = send(&router, signed(&items(2, 0))).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(retry.as_deref(), Some("5"), "gateway.retry_after");
    let (code, message) = refusal(&body);
    assert_eq!(code, "unavailable");
    assert!(message.contains("not connected to RabbitMQ"), "{message}");
    assert_eq!(counted(&state), once("shop", "unavailable"));
    let bypassed = state
        .metrics
        .dedup_bypass
        .with_label_values(&["shop"])
        .get();
    assert_eq!(bypassed, 2, "both events went without dedup");
    let published = state
        .metrics
        .events
        .with_label_values(&["shop", "published"]);
    assert_eq!(published.get(), 0);
}
