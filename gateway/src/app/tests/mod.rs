//! The public router called with `oneshot`, on a state with no broker
//! behind it: Redis and RabbitMQ point at a closed port and the publisher
//! never connects. Every refusal is checked for its status, its JSON code
//! and the one request it counts, and for not having touched Redis.

mod get;
mod post;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, Response, StatusCode};
use prometheus::core::Collector;
use sluice_shared::config::Config;
use tower::ServiceExt;

use crate::dedup::DedupStore;
use crate::metrics::GatewayMetrics;
use crate::publisher::ConfirmedPublisher;
use crate::signature::hex_hmac_sha256;
use crate::source::Sources;
use crate::state::AppState;

const SHOP_SECRET: &str = "shop-secret";
const METERED_TOKEN: &str = "metered-token";
const WALLED_TOKEN: &str = "walled-token";
const META_SECRET: &str = "meta-secret";
const META_VERIFY: &str = "meta-verify-token";

/// A gateway with four sources and no broker: `shop` (HMAC, one event per
/// item of `/items`, a challenge event), `metered` (a token and a rate
/// limit of one event), `walled` (a token, 10.0.0.0/8 only) and `meta`
/// (Meta, with its GET handshake). `gateway` adds lines to `[gateway]`.
fn offline(gateway: &str) -> (Arc<AppState>, Router) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let secret = |name: &str, value: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, value).expect("a secret file");
        format!("file:{}", path.display())
    };
    let toml = format!(
        r#"
        [gateway]
        body_limit = 1024
        body_read_timeout = "200ms"
        limits.max_headers = 16
        limits.max_header_bytes = 1024
        {gateway}

        [redis]
        url = "redis://127.0.0.1:1"

        [amqp]
        url = "amqp://guest:guest@127.0.0.1:1/%2f"

        [sources.shop]
        scheme = "hmac-sha256"
        secrets = ["{shop}"]
        prefix = "sha256="
        items_pointer = "/items"
        item_id_pointer = "/id"
        type_pointer = "/event"
        challenge_type = "url.verify"
        challenge_pointer = "/challenge"

        [sources.metered]
        scheme = "token"
        tokens = ["{metered}"]
        rate_limit = {{ per_second = 0.01, burst = 1 }}

        [sources.walled]
        scheme = "token"
        tokens = ["{walled}"]
        allow_ips = ["10.0.0.0/8"]

        [sources.meta]
        scheme = "whatsapp-cloud"
        secrets = ["{meta}"]
        verify_token = "{verify}"
        "#,
        shop = secret("shop", SHOP_SECRET),
        metered = secret("metered", METERED_TOKEN),
        walled = secret("walled", WALLED_TOKEN),
        meta = secret("meta", META_SECRET),
        verify = secret("verify", META_VERIFY),
    );
    let config = Config::from_toml(&toml).expect("the test config");
    let sources = Sources::from_config(&config.gateway, &config.sources).expect("the sources");
    let metrics = GatewayMetrics::new().expect("a registry");
    metrics.register_sources(config.sources.keys().map(String::as_str));
    let dedup = DedupStore::new(&config.redis)
        .expect("a lazy Redis client")
        .with_metrics(metrics.clone());
    let channels = config.gateway.publisher_channels;
    let publisher =
        ConfirmedPublisher::unconnected(&config.amqp, &config.routes, channels, metrics.clone());
    let state = AppState::new(config.gateway, sources, dedup, publisher, metrics);
    let state = Arc::new(state);
    (state.clone(), super::router(state))
}

/// A request from 127.0.0.1, as the listener hands it to the router.
fn from_loopback(mut request: Request<Body>) -> Request<Body> {
    let peer = SocketAddr::from(([127, 0, 0, 1], 40_000));
    request.extensions_mut().insert(ConnectInfo(peer));
    request
}

/// A POST of `body` to `path` with these headers.
fn post(path: &str, headers: &[(&str, &str)], body: impl Into<Body>) -> Request<Body> {
    let mut request = Request::post(path);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    from_loopback(request.body(body.into()).expect("a request"))
}

/// A POST of `body` to `shop`, signed with its secret.
fn signed(body: &str) -> Request<Body> {
    let signature = format!("sha256={}", hex_hmac_sha256(SHOP_SECRET, body.as_bytes()));
    let headers = [
        ("x-signature", signature.as_str()),
        ("content-type", "application/json"),
    ];
    post("/webhooks/shop", &headers, body.to_owned())
}

/// A GET of `path_and_query`.
fn get(path_and_query: &str) -> Request<Body> {
    let request = Request::get(path_and_query).body(Body::empty());
    from_loopback(request.expect("a request"))
}

/// The answer of `router` to `request`: status, `Retry-After`, body.
async fn send(router: &Router, request: Request<Body>) -> (StatusCode, Option<String>, String) {
    let response: Response<Body> = router
        .clone()
        .oneshot(request)
        .await
        .unwrap_or_else(|never| match never {});
    let status = response.status();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = axum::body::to_bytes(response.into_body(), 64 * 1024)
        .await
        .expect("the whole answer");
    let body = String::from_utf8(body.to_vec()).expect("a UTF-8 answer");
    (status, retry_after, body)
}

/// A JSON refusal's code and message; fails on any other body.
fn refusal(body: &str) -> (String, String) {
    let json: serde_json::Value = serde_json::from_str(body).expect("a JSON error body");
    let field = |name: &str| json[name].as_str().expect(name).to_owned();
    (field("error"), field("message"))
}

/// Every `sluice_gateway_requests_total` series above zero, as (source, outcome, count).
fn counted(state: &AppState) -> Vec<(String, String, u64)> {
    let mut counted = Vec::new();
    for family in state.metrics.requests.collect() {
        for metric in family.get_metric() {
            let label = |name: &str| {
                let pair = metric.get_label().iter().find(|l| l.name() == name);
                pair.map(|l| l.value().to_owned()).unwrap_or_default()
            };
            let value = metric.get_counter().get_value() as u64;
            if value > 0 {
                counted.push((label("source"), label("outcome"), value));
            }
        }
    }
    counted.sort();
    counted
}

/// Exactly one request counted, under `source` and `outcome`.
fn once(source: &str, outcome: &str) -> Vec<(String, String, u64)> {
    vec![(source.to_owned(), outcome.to_owned(), 1)]
}

/// How many claims were sent to Redis (every one fails: nothing listens).
fn claims(state: &AppState) -> u64 {
    let claim = state.metrics.redis_seconds.with_label_values(&["claim"]);
    claim.get_sample_count()
}
