//! The floor: the gateway's own ingest core ([`Ingestor`]) on one event at a
//! time, without HTTP: the dedup claim (one `EVAL`), a persistent mandatory
//! publish with confirm into the same quorum queue, `SET done XX EX`, the
//! metrics and the per-event log line, exactly as a request runs them. The
//! gateway can approach this rate, never beat it, so every report states
//! how close it came.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use axum::http::HeaderMap;
use serde_json::Value;
use sluice_gateway::correlation::Correlation;
use sluice_gateway::dedup::DedupStore;
use sluice_gateway::extract::{Event, EventData, EventId, EventType};
use sluice_gateway::ingest::{Ingestor, Policy, RequestContext};
use sluice_gateway::metrics::GatewayMetrics;
use sluice_gateway::ordered::OrderedRoutes;
use sluice_gateway::publisher::ConfirmedPublisher;
use sluice_gateway::source::{Source, Sources};
use sluice_shared::config::Config;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::requests::upsert;
use crate::stats::RunStats;

/// Where the closed loop's body carries the message id.
const ID_POINTER: &str = "/messages/0/key/id";

pub async fn run(
    config: &Config,
    source: &str,
    run_id: &str,
    concurrency: usize,
    limit: Duration,
    label: &str,
) -> anyhow::Result<RunStats> {
    // The gateway's sources (their secrets resolved, as at its start): the
    // core takes the source's name and dedup window from them.
    let sources = Sources::from_config(&config.gateway, &config.sources)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    anyhow::ensure!(
        sources.get(source).is_some(),
        "no source {source} in the config: pass one of its [sources.*] names with --source"
    );
    let metrics = GatewayMetrics::new().context("metrics")?;
    let dedup = DedupStore::new(&config.redis)
        .context("redis.url")?
        .with_metrics(metrics.clone());
    let stop = CancellationToken::new();
    let channels = config.gateway.publisher_channels;
    let publisher = ConfirmedPublisher::start(
        &config.amqp,
        &config.routes,
        channels,
        metrics.clone(),
        stop.clone(),
    )
    .await
    .context("RabbitMQ")?;
    let policy = Policy::from_config(&config.gateway);
    let ordered = OrderedRoutes::new(&config.routes);
    let ingestor = Ingestor::new(dedup, publisher, metrics, policy).with_ordered_routes(ordered);
    let sources = Arc::new(sources);
    // The closed loop's request body, parsed once: each event gets a copy
    // with its own id, so both modes publish messages of one size.
    let template: Arc<Value> =
        Arc::new(serde_json::from_str(&upsert("")).context("the floor's event body")?);
    anyhow::ensure!(
        template.pointer(ID_POINTER).is_some(),
        "the floor's event body has no {ID_POINTER}"
    );
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let deadline = started + limit;
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (ingestor, sources, next, template) = (
            ingestor.clone(),
            sources.clone(),
            next.clone(),
            template.clone(),
        );
        let (source, run_id) = (source.to_owned(), run_id.to_owned());
        let budget = config.gateway.ack_budget;
        tasks.push(tokio::spawn(async move {
            let mut stats = RunStats::new("floor");
            let Some(source) = sources.get(&source) else {
                return stats;
            };
            while Instant::now() < deadline {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let t0 = Instant::now();
                let id = format!("{run_id}-floor-{i}");
                let ok = one_event(&ingestor, source, &template, &id, budget).await;
                stats.record(
                    t0.elapsed(),
                    Some(if ok { 200 } else { 503 }),
                    u64::from(ok),
                );
            }
            stats
        }));
    }
    let mut total = RunStats::new(label);
    for task in tasks {
        if let Ok(stats) = task.await {
            total.merge(&stats);
        }
    }
    total.elapsed = started.elapsed();
    ingestor.publisher().close().await;
    stop.cancel();
    Ok(total)
}

/// One event through the core, as one request of the closed loop: no
/// `X-Request-Id` or `traceparent`, the ack budget from its start.
async fn one_event(
    ingestor: &Ingestor,
    source: &Source,
    template: &Value,
    id: &str,
    budget: Duration,
) -> bool {
    let mut data = template.clone();
    if let Some(slot) = data.pointer_mut(ID_POINTER) {
        *slot = Value::String(id.to_owned());
    }
    let event = Event {
        id: EventId::from_provider(id),
        event_type: EventType::normalise("messages.upsert"),
        data: EventData::from_value(&data),
    };
    let correlation = Correlation::from_headers(&HeaderMap::new());
    let ctx = RequestContext {
        source,
        correlation: &correlation,
        received: SystemTime::now(),
        deadline: Instant::now() + budget,
    };
    ingestor.ingest(&ctx, vec![event]).await.is_ok()
}
