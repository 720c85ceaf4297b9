//! The floor: exactly the gateway's I/O for one event, without HTTP. Redis
//! dedup claim (the gateway's one `EVAL` per request), a persistent mandatory publish
//! with confirm into the same quorum queue through the gateway's own
//! publisher, then `SET done XX EX`. The gateway can approach this rate, never
//! beat it, so every report states how close it came.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use serde_json::Value;
use sluice_gateway::dedup::DedupStore;
use sluice_gateway::extract::{Event, EventData, EventId, EventType};
use sluice_gateway::ingest::event_message;
use sluice_gateway::metrics::GatewayMetrics;
use sluice_gateway::publisher::ConfirmedPublisher;
use sluice_gateway::source::SourceName;
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
    let dedup = DedupStore::new(&config.redis).context("redis.url")?;
    let metrics = GatewayMetrics::new().context("metrics")?;
    let stop = CancellationToken::new();
    let channels = config.gateway.publisher_channels;
    let publisher = ConfirmedPublisher::start(&config.amqp, channels, metrics, stop.clone())
        .await
        .context("RabbitMQ")?;
    let window = config
        .sources
        .get(source)
        .map(|s| s.dedup_ttl)
        .unwrap_or(Duration::from_secs(604_800));
    let source = SourceName::from_config_name(source);
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
        let (dedup, publisher, next, source, template) = (
            dedup.clone(),
            publisher.clone(),
            next.clone(),
            source.clone(),
            template.clone(),
        );
        let run_id = run_id.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut stats = RunStats::new("floor");
            while Instant::now() < deadline {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let t0 = Instant::now();
                let ok = one_event(
                    &dedup,
                    &publisher,
                    &source,
                    &template,
                    &format!("{run_id}-floor-{i}"),
                    window,
                )
                .await;
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
    publisher.close().await;
    stop.cancel();
    Ok(total)
}

async fn one_event(
    dedup: &DedupStore,
    publisher: &ConfirmedPublisher,
    source: &SourceName,
    template: &Value,
    id: &str,
    window: Duration,
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
    let keys = [dedup.key(source, &event.id)];
    if dedup.claim(&keys).await.is_err() {
        return false;
    }
    let exchange = publisher.topology().events_exchange();
    let message = event_message(exchange, source.as_str(), id, SystemTime::now(), event);
    if publisher.publish_all(vec![message]).await.is_err() {
        return false;
    }
    dedup.mark_done(&keys, window).await.is_ok()
}
