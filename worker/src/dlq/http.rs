//! The dead-letter operations over HTTP, on the worker's admin port, when
//! `dlq.http.enabled` is set:
//!
//! | route | what | answer |
//! |---|---|---|
//! | `GET /dlq/stats?<filters>` | `dlq stats` | the stats JSON |
//! | `GET /dlq/peek?limit=10&show_data=false&<filters>` | `dlq peek` | the peek JSON |
//! | `GET /dlq/export?limit=1000&<filters>` | `dlq export`, streamed, never removes ([`export`]) | JSON lines, the last one `{"end": ...}` |
//! | `POST /dlq/replay` `{<filters>, "limit", "rate", "dry_run"}` | `dlq replay` | the summary; 503 if it did not move everything it picked |
//! | `POST /dlq/purge` `{<filters> or "all": true, "yes", "confirm"}` | `dlq purge` in two requests ([`purge`]) | a preview and its token (400), then what went |
//!
//! Filters have the CLI flags' names (`source`, `type`, `reason`, `status`,
//! `since`, `until`, `id`), several values comma-separated (or, in JSON, a
//! list); a JSON body with a field no route reads is refused. Every request
//! needs `Authorization: Bearer <dlq.http.token>`; tokens are compared as
//! SHA-256 digests in constant time, so neither the token nor its length
//! leaks through timing. A command already running (here or from the CLI)
//! answers 409. Every refusal is JSON `{"error", "message"}` ([`answer`]).

mod answer;
mod export;
mod purge;

use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use sluice_shared::config::{AmqpConfig, Config, ConfigError};
use sluice_shared::envelope::unix_millis;
use subtle::ConstantTimeEq;

use self::answer::{ApiError, JsonBody, QueryArgs, UnknownFields, refuse_unknown};
use super::error::DlqError;
use super::filter::{Filter, FilterArgs};
use super::queue::DeadQueue;
use super::rate::Rate;
use super::replay::ReplayOptions;
use super::{peek, replay, stats};

/// The `/dlq` routes and what they need.
#[derive(Clone)]
pub struct DlqApi {
    amqp: Arc<AmqpConfig>,
    /// `dlq.scan_batch`.
    scan_batch: u16,
    /// SHA-256 of the bearer token.
    token: [u8; 32],
}

impl DlqApi {
    /// `None` unless `dlq.http.enabled`; resolves the token (a config error if it cannot).
    pub fn from_config(config: &Config) -> Result<Option<Self>, ConfigError> {
        let Some(http) = &config.dlq.http else {
            return Ok(None);
        };
        let token = http.token.resolve()?;
        Ok(Some(Self {
            amqp: Arc::new(config.amqp.clone()),
            scan_batch: config.dlq.scan_batch,
            token: Sha256::digest(token.expose().as_bytes()).into(),
        }))
    }

    /// The routes, each behind the bearer token.
    pub fn router(self) -> Router {
        Router::new()
            .route("/dlq/stats", get(stats_route))
            .route("/dlq/peek", get(peek_route))
            .route("/dlq/export", get(export::export_route))
            .route("/dlq/replay", post(replay_route))
            .route("/dlq/purge", post(purge::purge_route))
            .route_layer(middleware::from_fn_with_state(self.clone(), authorize))
            .with_state(self)
    }

    fn allows(&self, headers: &HeaderMap) -> bool {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .unwrap_or_default();
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        !presented.is_empty() && bool::from(digest.ct_eq(&self.token))
    }

    /// Opens the dead queue, runs `operation`, closes it whatever happened.
    async fn with_queue<T>(
        &self,
        operation: impl AsyncFnOnce(&DeadQueue) -> Result<T, DlqError>,
    ) -> Result<T, ApiError> {
        let queue = DeadQueue::open(&self.amqp, self.scan_batch).await?;
        let result = operation(&queue).await;
        queue.close().await;
        Ok(result?)
    }
}

/// Adds the `/dlq` routes to the admin router when the API is on.
pub fn with_dlq(router: Router, api: Option<DlqApi>) -> Router {
    match api {
        Some(api) => router.merge(api.router()),
        None => router,
    }
}

async fn authorize(State(api): State<DlqApi>, request: Request, next: Next) -> Response {
    if api.allows(request.headers()) {
        return next.run(request).await;
    }
    let message = "send Authorization: Bearer <dlq.http.token>";
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message).into_response()
}

fn parse(filter: &FilterArgs) -> Result<Filter, ApiError> {
    Ok(Filter::parse(filter, unix_millis(SystemTime::now())).map_err(DlqError::from)?)
}

async fn stats_route(
    State(api): State<DlqApi>,
    QueryArgs(args): QueryArgs<FilterArgs>,
) -> Result<Response, ApiError> {
    let filter = parse(&args)?;
    let stats = api
        .with_queue(async |q| stats::collect(q, &filter).await)
        .await?;
    Ok(Json(stats).into_response())
}

/// `GET /dlq/peek` options besides the filters.
#[derive(Debug, Deserialize)]
struct PeekQuery {
    limit: Option<usize>,
    show_data: Option<bool>,
}

async fn peek_route(
    State(api): State<DlqApi>,
    QueryArgs(args): QueryArgs<FilterArgs>,
    QueryArgs(options): QueryArgs<PeekQuery>,
) -> Result<Response, ApiError> {
    let filter = parse(&args)?;
    let limit = options.limit.unwrap_or(10);
    if limit == 0 {
        return Err(DlqError::Usage("limit must be at least 1".into()).into());
    }
    let show_data = options.show_data.unwrap_or(false);
    let peeked = api
        .with_queue(async |q| peek::peek(q, &filter, limit, show_data).await)
        .await?;
    Ok(Json(peeked.json()).into_response())
}

/// `POST /dlq/replay` body.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ReplayRequest {
    #[serde(flatten)]
    filter: FilterArgs,
    limit: Option<usize>,
    /// Events per second, checked by [`Rate::new`] like the CLI's `--rate`.
    rate: Option<f64>,
    dry_run: bool,
    #[serde(flatten)]
    unknown: UnknownFields,
}

async fn replay_route(
    State(api): State<DlqApi>,
    JsonBody(request): JsonBody<ReplayRequest>,
) -> Result<Response, ApiError> {
    refuse_unknown(&request.unknown)?;
    let filter = parse(&request.filter)?;
    let options = ReplayOptions {
        limit: request.limit,
        rate: request.rate.map(Rate::new).transpose()?,
        dry_run: request.dry_run,
    };
    let replayed = api
        .with_queue(async |q| replay::replay(q, &filter, &options, false).await)
        .await?;
    let status = match replayed.incomplete() {
        true => StatusCode::SERVICE_UNAVAILABLE,
        false => StatusCode::OK,
    };
    Ok((status, Json(replayed)).into_response())
}
