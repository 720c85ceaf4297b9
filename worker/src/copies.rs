//! One delivery per event, even when the gateway published it twice.
//!
//! When RabbitMQ's connection dies after the gateway sent an event but
//! before the confirm came back, nobody can know whether RabbitMQ stored it.
//! The gateway keeps the event's dedup key `pending` (so retries wait) until
//! it expires; the provider's next retry then publishes it again, and if the
//! first message was stored after all, the work queue holds two copies of
//! one event. They differ in `x-sluice-copy` (one random id per gateway
//! request; retry and replayed copies keep theirs), while a redelivery of
//! one message keeps its copy id.
//!
//! So before its first attempt at a message, the worker names the message's
//! copy the event's copy of record in Redis (`{key_prefix}:copy:{source}:
//! {digest}`, held [`COPY_TTL`]) unless another copy holds that already: the
//! holder is delivered (and redelivered, retried, dead-lettered) as ever; any
//! other copy is acknowledged and dropped, counted in
//! `sluice_worker_duplicate_copies_total`. In the same round trip the
//! event's dedup key turns `done` for the source's `dedup_ttl`, so a
//! provider's later retry is a duplicate at the gateway and publishes
//! nothing. When Redis cannot answer, the message is delivered (at least
//! once beats at most once) and `sluice_worker_copy_check_errors_total`
//! counts it.

use std::collections::HashMap;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use sluice_shared::config::{Config, RedisMode};
use sluice_shared::event_key::event_key;
use tokio::sync::OnceCell;
use tokio::time::timeout;

use crate::message::SluiceEvent;

/// How long a copy of record is remembered: a second copy is published
/// within minutes of the first (after `redis.pending_ttl`), and the dedup
/// key set `done` meanwhile stops later ones at the gateway.
pub const COPY_TTL: Duration = Duration::from_secs(24 * 3600);

/// The dedup window of a source the worker's config does not list.
const DEFAULT_DEDUP_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// KEYS[1]: the copy-of-record key. ARGV[1]: this message's copy id;
/// ARGV[2]: the key's life (ms). 1: this copy holds it; 0: another does.
const HOLD_SCRIPT: &str = r"
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
";

/// What to do with a message before its first attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The event's copy of record (or Redis could not say): deliver it.
    Deliver,
    /// Another copy of the event holds the record: drop this one.
    Duplicate,
}

/// Why Redis could not say.
#[derive(Debug, thiserror::Error)]
pub enum CopyCheckError {
    #[error("Redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
}

/// The copy-of-record check, on a lazily connected Redis.
pub struct CopyCheck {
    client: redis::Client,
    manager: ConnectionManagerConfig,
    redis: OnceCell<ConnectionManager>,
    key_prefix: String,
    limit: Duration,
    dedup_ttls: HashMap<String, Duration>,
}

impl CopyCheck {
    /// Connects on first use: a worker starts and delivers without Redis.
    /// `None` unless `redis.mode` is `single`: the check does not follow a
    /// Sentinel failover or a Cluster's slots yet (the worker warns at start).
    pub fn new(config: &Config) -> Result<Option<Self>, redis::RedisError> {
        if config.redis.mode != RedisMode::Single {
            tracing::warn!(
                mode = ?config.redis.mode,
                "the copy-of-record check needs redis.mode = \"single\": with this mode, an event \
                 whose first publish's outcome was lost with its connection can be delivered twice"
            );
            return Ok(None);
        }
        let client = redis::Client::open(config.redis.url.as_str())?;
        let manager = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.redis.timeout))
            .set_response_timeout(Some(config.redis.timeout))
            .set_number_of_retries(1);
        Ok(Some(Self {
            client,
            manager,
            redis: OnceCell::new(),
            key_prefix: config.redis.key_prefix.clone(),
            limit: config.redis.timeout,
            dedup_ttls: config
                .sources
                .iter()
                .map(|(name, source)| (name.clone(), source.dedup_ttl))
                .collect(),
        }))
    }

    /// Whether `event`'s message (`copy`) is the one to deliver. Only a
    /// first attempt asks: a retry copy keeps the copy id that passed.
    pub async fn check(&self, event: &SluiceEvent, copy: &str) -> Result<Verdict, CopyCheckError> {
        let copy_key = event_key(
            &format!("{}:copy", self.key_prefix),
            event.source.as_str(),
            event.id.as_str(),
        );
        let dedup_key = event_key(&self.key_prefix, event.source.as_str(), event.id.as_str());
        let window = self
            .dedup_ttls
            .get(event.source.as_str())
            .copied()
            .unwrap_or(DEFAULT_DEDUP_TTL);
        let mut pipe = redis::pipe();
        pipe.cmd("EVAL")
            .arg(HOLD_SCRIPT)
            .arg(1)
            .arg(&copy_key)
            .arg(copy)
            .arg(millis(COPY_TTL));
        pipe.cmd("SET")
            .arg(&dedup_key)
            .arg("done")
            .arg("PX")
            .arg(millis(window))
            .ignore();
        let query = async {
            let connect =
                || ConnectionManager::new_with_config(self.client.clone(), self.manager.clone());
            let mut redis = self.redis.get_or_try_init(connect).await?.clone();
            pipe.query_async::<(i64,)>(&mut redis).await
        };
        let (held,) = timeout(self.limit, query)
            .await
            .map_err(|_| CopyCheckError::Timeout(self.limit))??;
        Ok(match held {
            0 => Verdict::Duplicate,
            _ => Verdict::Deliver,
        })
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}
