//! The admin port both binaries serve: `/healthz`, `/readyz`, `/metrics`.
//!
//! Kept apart from the gateway's public port so that metrics and readiness are
//! never exposed to providers. `/readyz` answers 200 or 503 with a JSON body
//! naming every check and what is wrong with each one that fails; a
//! dependency the process can do without is reported `degraded: <why>` and
//! leaves it ready.

use std::collections::BTreeMap;
use std::future::Future;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus::{Encoder, IntGaugeVec, Opts, Registry, TextEncoder};

/// The state of one dependency, as `/readyz` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// Working.
    Ok,
    /// Failing, but the process still does its job without it (the
    /// gateway's Redis under `on_redis_error = "publish"`): reported as
    /// `degraded: <why>`, and the process stays ready. Taking every replica
    /// out of the load balancer for it would turn a policy of availability
    /// into an outage.
    Degraded(String),
    /// Failing, and the process cannot do its job: not ready, with why.
    Down(String),
}

impl From<Result<(), String>> for Check {
    fn from(result: Result<(), String>) -> Self {
        match result {
            Ok(()) => Self::Ok,
            Err(why) => Self::Down(why),
        }
    }
}

/// What a binary depends on, checked on every `/readyz`.
pub trait Readiness: Clone + Send + Sync + 'static {
    /// One entry per dependency.
    fn check(&self) -> impl Future<Output = BTreeMap<&'static str, Check>> + Send;
}

/// The git commit the binary was built from, when the build set `SLUICE_GIT_COMMIT`.
const COMMIT: &str = match option_env!("SLUICE_GIT_COMMIT") {
    Some(commit) => commit,
    None => "unknown",
};

/// Registers `sluice_<binary>_build_info{version, commit} 1`, so a dashboard
/// shows which build runs where (and a deploy shows as a change of labels).
pub fn register_build_info(registry: &Registry, binary: &str) -> Result<(), prometheus::Error> {
    let info = IntGaugeVec::new(
        Opts::new(
            format!("sluice_{binary}_build_info"),
            "Always 1; the labels say which build is running.",
        ),
        &["version", "commit"],
    )?;
    info.with_label_values(&[env!("CARGO_PKG_VERSION"), COMMIT])
        .set(1);
    registry.register(Box::new(info))
}

#[derive(Clone)]
struct AdminState<R> {
    registry: Registry,
    readiness: R,
}

/// The admin router; serve it on the admin address.
pub fn router<R: Readiness>(registry: Registry, readiness: R) -> Router {
    Router::new()
        .route(
            "/healthz",
            get(|| async { Json(serde_json::json!({"ok": true})) }),
        )
        .route("/readyz", get(readyz::<R>))
        .route("/metrics", get(metrics::<R>))
        .with_state(AdminState {
            registry,
            readiness,
        })
}

async fn readyz<R: Readiness>(State(state): State<AdminState<R>>) -> impl IntoResponse {
    let checks = state.readiness.check().await;
    let ready = !checks.values().any(|c| matches!(c, Check::Down(_)));
    let body: BTreeMap<_, _> = checks
        .into_iter()
        .map(|(name, check)| {
            let text = match check {
                Check::Ok => "ok".to_owned(),
                Check::Degraded(why) => format!("degraded: {why}"),
                Check::Down(why) => why,
            };
            (name, text)
        })
        .collect();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(serde_json::json!({"ready": ready, "checks": body})),
    )
}

async fn metrics<R: Readiness>(State(state): State<AdminState<R>>) -> impl IntoResponse {
    let mut buffer = Vec::new();
    let families = state.registry.gather();
    match TextEncoder::new().encode(&families, &mut buffer) {
        Ok(()) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)],
            buffer,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}
