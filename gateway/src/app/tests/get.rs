//! `GET /webhooks/{source}`: Meta's handshake, answered or refused, each
//! counted under its source.

use axum::http::StatusCode;

use super::*;

fn handshake(source: &str, token: &str) -> String {
    format!(
        "/webhooks/{source}?hub.mode=subscribe&hub.verify_token={token}&hub.challenge=1158201444"
    )
}

#[tokio::test]
async fn the_right_verify_token_has_its_challenge_echoed() {
    let (state, router) = offline("");
    let (status, _, body) = send(&router, get(&handshake("meta", META_VERIFY))).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "1158201444"));
    assert_eq!(counted(&state), once("meta", "handshake"));
    assert_eq!(claims(&state), 0);
}

#[tokio::test]
async fn a_wrong_verify_token_is_a_403_that_says_what_the_handshake_needs() {
    let (state, router) = offline("");
    let (status, _, body) = send(&router, get(&handshake("meta", "wrong"))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (code, message) = refusal(&body);
    assert_eq!(code, "forbidden");
    assert!(message.contains("hub.verify_token"), "{message}");
    assert!(
        message.contains("hub.mode=subscribe"),
        "what to send: {message}"
    );
    assert!(!message.contains(META_VERIFY), "never the token: {message}");
    assert_eq!(counted(&state), once("meta", "forbidden"));
}

#[tokio::test]
async fn a_query_that_does_not_decode_is_a_403() {
    let (state, router) = offline("");
    let (status, _, body) = send(
        &router,
        get("/webhooks/meta?hub.mode=%ZZ&hub.challenge=%FF"),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(refusal(&body).0, "forbidden");
    assert_eq!(counted(&state), once("meta", "forbidden"));
}

#[tokio::test]
async fn a_source_without_a_handshake_is_a_405_counted_as_method_not_allowed() {
    let (state, router) = offline("");
    let (status, _, body) = send(&router, get(&handshake("shop", "any"))).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    let (code, message) = refusal(&body);
    assert_eq!(code, "method_not_allowed");
    assert!(message.contains("POST /webhooks/{source}"), "{message}");
    // It used to be counted as `bad_request`, which a 405 is not.
    assert_eq!(counted(&state), once("shop", "method_not_allowed"));
}

#[tokio::test]
async fn a_handshake_to_an_unknown_source_is_a_404_counted_under_unknown() {
    let (state, router) = offline("");
    let (status, _, body) = send(&router, get(&handshake("nosuch", "any"))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(refusal(&body).0, "unknown_source");
    assert_eq!(counted(&state), once("unknown", "unknown_source"));
}

#[tokio::test]
async fn a_handshake_from_outside_allow_ips_is_a_403() {
    let (state, router) = offline("");
    let (status, _, body) = send(&router, get(&handshake("walled", "any"))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(refusal(&body).0, "forbidden_address");
    assert_eq!(counted(&state), once("walled", "forbidden"));
}
