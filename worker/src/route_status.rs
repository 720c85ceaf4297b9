//! `GET /routes` on the worker's admin port: each route's breaker state, its
//! unhealthy failures in a row, the wait until its next probe and its last
//! error (a short class such as `HTTP 503` or `timed out after 10s`, never
//! a body). What `sluice-worker routes` asks ([`crate::routes_cli`]).
//!
//! Read-only and free of event data, like `/metrics`, so it needs no token;
//! keep the admin port private all the same. The state is this worker's
//! own: every worker judges each route by its own attempts.

use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::route_gate::{RouteGate, RouteStatus};

/// The answer of `GET /routes`.
#[derive(Debug, Serialize, Deserialize)]
pub struct RoutesAnswer {
    pub routes: Vec<RouteStatusWire>,
}

/// One route as `/routes` writes it (and `sluice-worker routes` reads it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteStatusWire {
    pub route: String,
    /// `closed`, `open` or `half-open`.
    pub state: String,
    pub failures: u32,
    pub next_probe_in_ms: Option<u64>,
    pub last_error: Option<String>,
    pub last_error_at_ms: Option<i64>,
}

impl From<RouteStatus> for RouteStatusWire {
    fn from(status: RouteStatus) -> Self {
        Self {
            route: status.route,
            state: status.state.as_str().to_owned(),
            failures: status.failures,
            next_probe_in_ms: status.next_probe_in_ms,
            last_error_at_ms: status.last_error.as_ref().map(|last| last.at_ms),
            last_error: status.last_error.map(|last| last.error),
        }
    }
}

/// Every route's gate, in config order.
#[derive(Clone)]
pub struct RouteBoard {
    gates: Arc<Vec<Arc<RouteGate>>>,
}

impl RouteBoard {
    pub fn new(gates: Vec<Arc<RouteGate>>) -> Self {
        Self {
            gates: Arc::new(gates),
        }
    }

    pub fn answer(&self) -> RoutesAnswer {
        RoutesAnswer {
            routes: self.gates.iter().map(|gate| gate.status().into()).collect(),
        }
    }

    /// Adds `GET /routes` to the admin router.
    pub fn serve_on(self, router: Router) -> Router {
        router.merge(
            Router::new()
                .route("/routes", get(routes_route))
                .with_state(self),
        )
    }
}

async fn routes_route(State(board): State<RouteBoard>) -> Json<RoutesAnswer> {
    Json(board.answer())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::breaker::BreakerState;
    use crate::delivery_error::DeliveryError;
    use crate::metrics::WorkerMetrics;
    use sluice_shared::config::Config;

    #[tokio::test]
    async fn routes_answers_each_route_s_state_in_config_order_as_json() {
        let config = Config::from_toml(
            "[[routes]]\nname = \"crm\"\nmatch = [\"*\"]\nhandler = \"log\"\n\
             [routes.breaker]\nfailures = 1\n\
             [[routes]]\nname = \"audit\"\nmatch = [\"*\"]\nhandler = \"log\"\n",
        )
        .expect("valid");
        let metrics = WorkerMetrics::new(["crm", "audit"].into_iter()).expect("metrics");
        let gates: Vec<_> = config
            .routes
            .iter()
            .map(|route| Arc::new(RouteGate::new(route, metrics.clone())))
            .collect();
        gates[0].after_attempt(&Err(DeliveryError::Transient {
            status: Some(503),
            retry_after: None,
            error: "HTTP 503".into(),
        }));
        assert_eq!(gates[0].state(), BreakerState::Open);
        let json = serde_json::to_string(&RouteBoard::new(gates).answer()).expect("JSON");
        let answer: RoutesAnswer = serde_json::from_str(&json).expect("reads back");
        let seen: Vec<_> = answer
            .routes
            .iter()
            .map(|r| (r.route.as_str(), r.state.as_str(), r.last_error.as_deref()))
            .collect();
        assert_eq!(
            seen,
            [("crm", "open", Some("HTTP 503")), ("audit", "closed", None)]
        );
        assert!(answer.routes[0].next_probe_in_ms.is_some());
        assert!(answer.routes[1].next_probe_in_ms.is_none());
    }
}
