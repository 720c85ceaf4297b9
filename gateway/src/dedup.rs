//! Two-phase deduplication in Redis.
//!
//! `claim` sets `{prefix}:{source}:{id}` to `pending` only if absent (NX, with
//! a short expiry) and reads what is there, pipelined for the whole request.
//! Only after the broker confirmed the publish does `mark_done` turn the key
//! into `done` for the dedup window (XX: only if still ours). A failed publish
//! `release`s its keys, so the provider's retry is never a false duplicate;
//! a crash leaves `pending` keys that expire by themselves.
//!
//! Every call is bounded by `redis.timeout`: the connection manager reconnects
//! on its own, but the failing call still fails, and the caller's
//! `on_redis_error` policy decides what that means. Every call is timed into
//! `sluice_gateway_redis_duration_seconds` and sets `sluice_gateway_redis_up`.

use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ExistenceCheck, SetExpiry, SetOptions};
use sluice_shared::config::RedisConfig;
use tokio_util::sync::CancellationToken;

use crate::extract::EventId;
use crate::metrics::GatewayMetrics;
use crate::source::SourceName;

const PENDING: &str = "pending";
const DONE: &str = "done";

/// A Redis key for one event of one source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DedupKey(String);

impl DedupKey {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What Redis said about one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Ours now (`pending`): publish it.
    New,
    /// `done`: published before, inside the window.
    Duplicate,
    /// `pending` by another request right now: answer 503 with `Retry-After: 1`, the retry settles it.
    InFlight,
}

/// Redis did not answer in time or answered with an error.
#[derive(Debug, thiserror::Error)]
pub enum DedupError {
    #[error("Redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("Redis error: {0}")]
    Redis(#[from] redis::RedisError),
}

/// The dedup keys of all sources, in one Redis.
#[derive(Clone)]
pub struct DedupStore {
    connection: ConnectionManager,
    prefix: String,
    pending_ttl: Duration,
    timeout: Duration,
    /// Where call times and Redis's state are reported, once attached.
    metrics: Option<GatewayMetrics>,
}

impl DedupStore {
    /// Connects lazily: the gateway starts (and applies its policy) while Redis is down.
    pub fn new(config: &RedisConfig) -> Result<Self, redis::RedisError> {
        let client = redis::Client::open(config.url.as_str())?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.timeout))
            .set_response_timeout(Some(config.timeout))
            .set_number_of_retries(1);
        Ok(Self {
            connection: ConnectionManager::new_lazy_with_config(client, manager_config)?,
            prefix: config.key_prefix.clone(),
            pending_ttl: config.pending_ttl,
            timeout: config.timeout,
            metrics: None,
        })
    }

    /// Reports every call's time and outcome to `metrics`.
    pub fn with_metrics(self, metrics: GatewayMetrics) -> Self {
        Self {
            metrics: Some(metrics),
            ..self
        }
    }

    pub fn key(&self, source: &SourceName, id: &EventId) -> DedupKey {
        DedupKey(format!(
            "{}:{}:{}",
            self.prefix,
            source.as_str(),
            id.as_str()
        ))
    }

    /// Claims every key at once: one round trip for the whole request.
    pub async fn claim(&self, keys: &[DedupKey]) -> Result<Vec<Claim>, DedupError> {
        let ttl = u64::try_from(self.pending_ttl.as_millis()).unwrap_or(u64::MAX);
        let options = SetOptions::default()
            .conditional_set(ExistenceCheck::NX)
            .with_expiration(SetExpiry::PX(ttl));
        let mut pipe = redis::pipe();
        for key in keys {
            pipe.set_options(key.as_str(), PENDING, options.clone());
            pipe.get(key.as_str());
        }
        let replies: Vec<Option<String>> = self.run("claim", &pipe).await?;
        Ok(replies
            .chunks(2)
            .map(|pair| match pair {
                [Some(_set_ok), _] => Claim::New,
                [None, Some(value)] if value == DONE => Claim::Duplicate,
                // `pending`, or gone between the two commands: let the retry decide.
                _ => Claim::InFlight,
            })
            .collect())
    }

    /// Marks published keys `done` for the source's window, if they are still ours.
    pub async fn mark_done(&self, keys: &[DedupKey], window: Duration) -> Result<(), DedupError> {
        let options = SetOptions::default()
            .conditional_set(ExistenceCheck::XX)
            .with_expiration(SetExpiry::EX(window.as_secs().max(1)));
        let mut pipe = redis::pipe();
        for key in keys {
            pipe.set_options(key.as_str(), DONE, options.clone())
                .ignore();
        }
        self.run::<()>("mark_done", &pipe).await
    }

    /// Frees keys whose publish failed, so the provider's retry is accepted.
    pub async fn release(&self, keys: &[DedupKey]) -> Result<(), DedupError> {
        if keys.is_empty() {
            return Ok(());
        }
        let names: Vec<&str> = keys.iter().map(DedupKey::as_str).collect();
        let mut pipe = redis::pipe();
        pipe.del(names).ignore();
        self.run::<()>("release", &pipe).await
    }

    /// Whether Redis answers, for `/readyz`.
    pub async fn ping(&self) -> Result<(), DedupError> {
        let mut pipe = redis::pipe();
        pipe.cmd("PING").ignore();
        self.run::<()>("ping", &pipe).await
    }

    /// Pings Redis every `period` until `stop`, so `sluice_gateway_redis_up`
    /// tells the truth while no requests come in.
    pub async fn probe_every(self, period: Duration, stop: CancellationToken) {
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = ticks.tick() => {
                    // The outcome is in the metric; a request's own call logs.
                    let _ = self.ping().await;
                }
            }
        }
    }

    /// Runs `pipe` within the timeout; `operation` names it in the metrics.
    async fn run<T: redis::FromRedisValue>(
        &self,
        operation: &str,
        pipe: &redis::Pipeline,
    ) -> Result<T, DedupError> {
        let started = Instant::now();
        let mut connection = self.connection.clone();
        let result = tokio::time::timeout(self.timeout, pipe.query_async(&mut connection))
            .await
            .map_err(|_| DedupError::Timeout(self.timeout))
            .and_then(|reply| reply.map_err(DedupError::Redis));
        if let Some(metrics) = &self.metrics {
            metrics.observe_redis(operation, started.elapsed(), result.is_ok());
        }
        result
    }
}
