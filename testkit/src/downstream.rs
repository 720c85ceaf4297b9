//! The business's service, as a small real HTTP server: it verifies the
//! Standard Webhooks signature of every delivery, answers as its plan says
//! (a plan a fault test may change while it runs), and records what it
//! accepted and when each attempt came.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
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
    /// Never answers: holds every request until the worker gives up on it.
    Hang,
    /// Down and up by turns, this long each, starting down: 503, then 200.
    Flap(Duration),
    /// 429 Too Many Requests with `Retry-After: <seconds>`.
    TooMany(u64),
    /// 500 for about `percent` % of attempts, 200 for the rest: which ones
    /// is a hash of the event id and its attempt number, so a run is the
    /// same every time and an event that failed may pass its next attempt.
    Flaky(u32),
    /// `status` every time for events whose id holds the text, 200 for the others.
    FailMatching(&'static str, u16),
}

/// One attempt as it reached the downstream.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub id: String,
    pub at: Instant,
    /// What it was answered; 0 for a request held unanswered ([`Plan::Hang`]).
    pub status: u16,
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
    /// When it was accepted.
    pub at: Instant,
}

struct Inner {
    /// The plan, and when it was set (a flap's phases count from then).
    plan: Mutex<(Plan, Instant)>,
    key: SigningKey,
    attempts: Mutex<HashMap<String, u32>>,
    log: Mutex<Vec<Attempt>>,
    delivered: Mutex<Vec<Delivered>>,
}

#[derive(Clone)]
pub struct Downstream {
    pub addr: SocketAddr,
    inner: Arc<Inner>,
}

impl Downstream {
    pub async fn start(plan: Plan) -> Self {
        let key = SigningKey::from_secret(&Secret::new(ROUTE_SECRET)).expect("a whsec_ secret");
        let inner = Arc::new(Inner {
            plan: Mutex::new((plan, Instant::now())),
            key,
            attempts: Mutex::default(),
            log: Mutex::default(),
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

    /// Event id → how many times it was accepted.
    pub fn copies(&self) -> HashMap<String, usize> {
        let mut copies = HashMap::new();
        for delivery in self.inner.delivered.lock().expect("lock").iter() {
            *copies.entry(delivery.id.clone()).or_insert(0) += 1;
        }
        copies
    }

    /// Deliveries beyond the first of each event, and of those the ones
    /// the gateway published again (a request id not delivered before: a
    /// second publish, which dedup should have stopped) rather than the
    /// worker delivering one message again (at-least-once).
    pub fn extra_copies(&self) -> (usize, usize) {
        let mut requests: HashMap<String, HashSet<Option<String>>> = HashMap::new();
        let delivered = self.inner.delivered.lock().expect("lock");
        for delivery in delivered.iter() {
            let ids = requests.entry(delivery.id.clone()).or_default();
            ids.insert(delivery.request_id.clone());
        }
        let published: usize = requests.values().map(|ids| ids.len() - 1).sum();
        (delivered.len() - requests.len(), published)
    }

    /// Answers as `plan` says from now on.
    pub fn set_plan(&self, plan: Plan) {
        *self.inner.plan.lock().expect("lock") = (plan, Instant::now());
    }

    /// Every attempt so far, in the order they came.
    pub fn attempt_log(&self) -> Vec<Attempt> {
        self.inner.log.lock().expect("lock").clone()
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

async fn receive(State(inner): State<Arc<Inner>>, headers: HeaderMap, body: Bytes) -> Response {
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
    let (plan, since) = *inner.plan.lock().expect("lock");
    let status = match plan {
        Plan::Succeed | Plan::Slow(_) => 200,
        Plan::FailFirst(n, status) if attempt <= n => status,
        Plan::FailFirst(..) => 200,
        Plan::Always(status) => status,
        Plan::Hang => 0,
        Plan::Flap(phase) => {
            let phases = since.elapsed().as_millis() / phase.as_millis().max(1);
            if phases % 2 == 0 { 503 } else { 200 }
        }
        Plan::TooMany(_) => 429,
        Plan::Flaky(percent) => {
            let mut hasher = std::hash::DefaultHasher::new();
            std::hash::Hash::hash(&(&id, attempt), &mut hasher);
            let draw = std::hash::Hasher::finish(&hasher) % 100;
            if draw < u64::from(percent) { 500 } else { 200 }
        }
        Plan::FailMatching(text, status) if id.contains(text) => status,
        Plan::FailMatching(..) => 200,
    };
    inner.log.lock().expect("lock").push(Attempt {
        id: id.clone(),
        at: Instant::now(),
        status,
    });
    match plan {
        Plan::Slow(delay) => tokio::time::sleep(delay).await,
        Plan::Hang => std::future::pending().await,
        _ => {}
    }
    if status == 200 {
        let envelope = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
        let optional = |name: &str| Some(header(name)).filter(|v| !v.is_empty());
        inner.delivered.lock().expect("lock").push(Delivered {
            id,
            signature_ok,
            envelope,
            traceparent: optional("traceparent"),
            request_id: optional("x-request-id"),
            at: Instant::now(),
        });
    }
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    match plan {
        Plan::TooMany(seconds) => (status, [("retry-after", seconds.to_string())]).into_response(),
        _ => status.into_response(),
    }
}
