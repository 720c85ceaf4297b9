//! The business's service, as a small real HTTP server: it verifies the
//! Standard Webhooks signature of every delivery, answers as its plan says,
//! and records what it accepted.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use sluice_shared::secret::Secret;
use sluice_shared::standard_webhooks::SigningKey;

use super::ROUTE_SECRET;

/// How the downstream answers.
#[derive(Debug, Clone, Copy)]
pub enum Plan {
    /// 200 every time.
    Succeed,
    /// `status` for the first `n` attempts of each event, then 200.
    FailFirst(u32, u16),
    /// `status` every time.
    Always(u16),
    /// 200, after holding the request this long.
    Slow(Duration),
}

/// One accepted delivery.
#[derive(Debug, Clone)]
pub struct Delivered {
    pub id: String,
    pub signature_ok: bool,
    pub envelope: serde_json::Value,
    /// The `traceparent` and `x-request-id` the worker sent, if any.
    pub traceparent: Option<String>,
    pub request_id: Option<String>,
}

struct Inner {
    plan: Plan,
    key: SigningKey,
    attempts: Mutex<HashMap<String, u32>>,
    delivered: Mutex<Vec<Delivered>>,
}

pub struct Downstream {
    pub addr: SocketAddr,
    inner: Arc<Inner>,
}

impl Downstream {
    pub async fn start(plan: Plan) -> Self {
        let key = SigningKey::from_secret(&Secret::new(ROUTE_SECRET)).expect("a whsec_ secret");
        let inner = Arc::new(Inner {
            plan,
            key,
            attempts: Mutex::default(),
            delivered: Mutex::default(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("an address");
        let app = Router::new()
            .route("/hook", post(receive))
            .with_state(inner.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { addr, inner }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Ids of every event accepted at least once.
    pub fn delivered_ids(&self) -> HashSet<String> {
        self.deliveries().into_iter().map(|d| d.id).collect()
    }

    pub fn deliveries(&self) -> Vec<Delivered> {
        self.inner.delivered.lock().expect("lock").clone()
    }

    /// Attempts seen for one event id, successful or not.
    pub fn attempts(&self, id: &str) -> u32 {
        self.inner
            .attempts
            .lock()
            .expect("lock")
            .get(id)
            .copied()
            .unwrap_or(0)
    }
}

async fn receive(State(inner): State<Arc<Inner>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let id = header("webhook-id");
    let timestamp: i64 = header("webhook-timestamp").parse().unwrap_or(0);
    let signature_ok = inner
        .key
        .verify(&id, timestamp, &body, &header("webhook-signature"));
    let attempt = {
        let mut attempts = inner.attempts.lock().expect("lock");
        let n = attempts.entry(id.clone()).or_insert(0);
        *n += 1;
        *n
    };
    let status = match inner.plan {
        Plan::Succeed => 200,
        Plan::FailFirst(n, status) if attempt <= n => status,
        Plan::FailFirst(..) => 200,
        Plan::Always(status) => status,
        Plan::Slow(delay) => {
            tokio::time::sleep(delay).await;
            200
        }
    };
    if status == 200 {
        let envelope = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
        let optional = |name: &str| Some(header(name)).filter(|v| !v.is_empty());
        inner.delivered.lock().expect("lock").push(Delivered {
            id,
            signature_ok,
            envelope,
            traceparent: optional("traceparent"),
            request_id: optional("x-request-id"),
        });
    }
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}
