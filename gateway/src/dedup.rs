//! Two-phase deduplication in Redis.
//!
//! An event's key is `{prefix}:{source}:{digest}`, the digest being the
//! first 128 bits of the SHA-256 of its id, in hex ([`DedupKey`], made by
//! [`sluice_shared::event_key`]). Redis
//! never holds the id, which can carry a phone number (a `wamid` does), and
//! the key is the same on every replica and after every restart with no
//! secret to share: a keyed digest would tie dedup to key management, and a
//! key changed within the 7-day window would let every retry through as new.
//! Unkeyed is enough for the ids keyed here, which have a random part (a
//! `wamid`'s 80-bit message id, a content hash); docs/privacy.md says what
//! that means for a source whose ids are phone numbers.
//!
//! `claim` runs one script for the whole request (one round trip; atomic per
//! event). In a Redis Cluster a script may only touch keys of one hash slot,
//! so there the keys are grouped by slot and each group's script runs at
//! the same time as the others; keys carry a hash tag that puts them in
//! one of 256 slots ([`crate::dedup_key`]), so that is at most 256 scripts. Keys of the old form, `{prefix}:{source}:{id}`, written before ids
//! were digested, still decide while they live (unless
//! `redis.read_old_form_keys` is off): `done` is a duplicate, and anything
//! else (`pending`) is in flight. Otherwise the key is set to
//! `pending` only if absent (with a short expiry) and read. Only after the
//! broker confirmed the publish does `mark_done` turn the key into `done`
//! for the dedup window (XX: only if still ours). A failed publish
//! `release`s its keys, so the provider's retry is never a false duplicate;
//! a publish still unconfirmed when the request is answered keeps its keys
//! `pending` (`keep_pending`) until its outcome is known; a crash leaves
//! `pending` keys that expire by themselves.
//!
//! Every call is bounded by `redis.timeout`: the connection manager reconnects
//! on its own, but the failing call still fails, and the caller's
//! `on_redis_error` policy decides what that means. A connection that keeps
//! timing out, or a Redis that answers `READONLY`, is replaced
//! ([`crate::redis_link`]). Every call is timed into
//! `sluice_gateway_redis_duration_seconds` and sets `sluice_gateway_redis_up`.

use std::time::{Duration, Instant};

use std::sync::{Arc, OnceLock};

use redis::{ErrorKind, ExistenceCheck, ServerErrorKind, SetExpiry, SetOptions};
use sluice_shared::config::{RedisConfig, RedisMode};
use tokio_util::sync::CancellationToken;

pub use crate::dedup_key::DedupKey;
use crate::extract::EventId;
use crate::metrics::GatewayMetrics;
use crate::redis_dial::slot_groups;
use crate::redis_link::{CallEnd, RedisLink};
use crate::source::SourceName;

const DONE: &str = "done";

/// Claims a request's events in one round trip. KEYS: each event's key,
/// then (when ARGV[2] is 2) its key of the old form; ARGV[1]: the `pending`
/// expiry (ms). Returns one number per event: 0 new, 1 duplicate, 2 in flight.
const CLAIM_SCRIPT: &str = r"
local stride = tonumber(ARGV[2])
local claims = {}
for i = 1, #KEYS, stride do
  local old = false
  if stride == 2 then old = redis.call('GET', KEYS[i + 1]) end
  local claim
  if old then
    if old == 'done' then claim = 1 else claim = 2 end
  elseif redis.call('SET', KEYS[i], 'pending', 'NX', 'PX', ARGV[1]) then
    claim = 0
  elseif redis.call('GET', KEYS[i]) == 'done' then
    claim = 1
  else
    claim = 2
  end
  claims[#claims + 1] = claim
end
return claims
";

/// How a claim names its script: by its SHA-1 (`EVALSHA`, what Redis has
/// cached since the first claim), or by its text (`EVAL`, when Redis
/// answered `NOSCRIPT`). The text is 600 bytes Redis would otherwise read
/// and hash on every request.
#[derive(Debug, Clone, Copy)]
enum ClaimScript {
    ByHash,
    Text,
}

/// The SHA-1 of the claim script in hex, as `EVALSHA` names it.
pub fn claim_script_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| redis::Script::new(CLAIM_SCRIPT).get_hash().to_owned())
}

/// What Redis said about one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Ours now (`pending`): publish it.
    New,
    /// `done`: published before, inside the window.
    Duplicate,
    /// `pending` by another request right now: answer 503 with `Retry-After: 1`, the retry finds it decided.
    InFlight,
}

/// Redis did not answer in time or answered with an error.
#[derive(Debug, thiserror::Error)]
pub enum DedupError {
    #[error("Redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("Redis error: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("Redis answered {got} claims for {expected} events (is something rewriting scripts?)")]
    ShortReply { got: usize, expected: usize },
}

/// The dedup keys of all sources, in one Redis.
#[derive(Clone)]
pub struct DedupStore {
    /// The connection, replaced when it goes silent or read-only.
    link: Arc<RedisLink>,
    prefix: String,
    /// `redis.read_old_form_keys`: whether claims read keys of the old form.
    /// Never in cluster mode, where an event's two keys lie in different
    /// slots (and a cluster set up for Sluice never held the old form).
    read_old_form: bool,
    /// Cluster mode: every call touches the keys of one hash slot only.
    by_slot: bool,
    pending_ttl: Duration,
    timeout: Duration,
    /// Where call times and Redis's state are reported, once attached.
    metrics: Option<GatewayMetrics>,
}

impl DedupStore {
    /// Connects lazily: the gateway starts (and applies its policy) while Redis is down.
    pub fn new(config: &RedisConfig) -> Result<Self, redis::RedisError> {
        Ok(Self {
            link: Arc::new(RedisLink::new(config)?),
            prefix: config.key_prefix.clone(),
            read_old_form: config.read_old_form_keys && config.mode != RedisMode::Cluster,
            by_slot: config.mode == RedisMode::Cluster,
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
        if self.by_slot {
            DedupKey::slot_tagged(&self.prefix, source.as_str(), id.as_str())
        } else {
            DedupKey::new(&self.prefix, source.as_str(), id.as_str())
        }
    }

    /// Claims every key at once: one round trip for the whole request (in
    /// cluster mode one per hash slot, all at once; if any fails, the keys
    /// the others claimed are released, so the request fails as a whole).
    pub async fn claim(&self, keys: &[DedupKey]) -> Result<Vec<Claim>, DedupError> {
        let groups = self.groups(keys);
        let calls = groups.iter().map(|group| self.claim_group(keys, group));
        let answers = futures_util::future::join_all(calls).await;
        let mut claims = vec![Claim::InFlight; keys.len()];
        let mut failure = None;
        let mut claimed = Vec::new();
        for (group, answer) in groups.iter().zip(answers) {
            match answer {
                Ok(group_claims) => {
                    for (&index, claim) in group.iter().zip(group_claims) {
                        claims[index] = claim;
                        if claim == Claim::New {
                            claimed.push(keys[index].clone());
                        }
                    }
                }
                Err(error) => failure = failure.or(Some(error)),
            }
        }
        let Some(error) = failure else {
            return Ok(claims);
        };
        // Best effort: keys left `pending` would expire by themselves anyway.
        let _ = self.release(&claimed).await;
        Err(error)
    }

    /// One script over the keys at `indexes` (one hash slot in cluster mode).
    async fn claim_group(
        &self,
        keys: &[DedupKey],
        indexes: &[usize],
    ) -> Result<Vec<Claim>, DedupError> {
        let replies = match self.run_claim(keys, indexes, ClaimScript::ByHash).await {
            // Redis restarted or its scripts were flushed: send the text
            // once, which caches it again.
            Err(DedupError::Redis(e))
                if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) =>
            {
                self.run_claim(keys, indexes, ClaimScript::Text).await?
            }
            replies => replies?,
        };
        if replies.len() != indexes.len() {
            return Err(DedupError::ShortReply {
                got: replies.len(),
                expected: indexes.len(),
            });
        }
        Ok(replies
            .into_iter()
            .map(|reply| match reply {
                0 => Claim::New,
                1 => Claim::Duplicate,
                // `pending`, or gone between the two commands: let the retry decide.
                _ => Claim::InFlight,
            })
            .collect())
    }

    /// One run of the claim script over the keys at `indexes`.
    async fn run_claim(
        &self,
        keys: &[DedupKey],
        indexes: &[usize],
        script: ClaimScript,
    ) -> Result<Vec<i64>, DedupError> {
        let ttl = u64::try_from(self.pending_ttl.as_millis()).unwrap_or(u64::MAX);
        let stride: usize = if self.read_old_form { 2 } else { 1 };
        let (command, script) = match script {
            ClaimScript::ByHash => ("EVALSHA", claim_script_hash()),
            ClaimScript::Text => ("EVAL", CLAIM_SCRIPT),
        };
        let mut eval = redis::cmd(command);
        eval.arg(script).arg(indexes.len() * stride);
        for key in indexes.iter().map(|&index| &keys[index]) {
            eval.arg(key.as_str());
            if self.read_old_form {
                eval.arg(key.old_form());
            }
        }
        eval.arg(ttl).arg(stride);
        let mut pipe = redis::pipe();
        pipe.add_command(eval);
        let (replies,): (Vec<i64>,) = self.run("claim", &pipe).await?;
        Ok(replies)
    }

    /// Marks published keys `done` for the source's window, if they are still ours.
    pub async fn mark_done(&self, keys: &[DedupKey], window: Duration) -> Result<(), DedupError> {
        let options = SetOptions::default()
            .conditional_set(ExistenceCheck::XX)
            .with_expiration(SetExpiry::EX(window.as_secs().max(1)));
        self.run_groups("mark_done", keys, |pipe, key| {
            pipe.set_options(key.as_str(), DONE, options.clone())
                .ignore();
        })
        .await
    }

    /// Frees keys whose publish failed, so the provider's retry is accepted.
    pub async fn release(&self, keys: &[DedupKey]) -> Result<(), DedupError> {
        self.run_groups("release", keys, |pipe, key| {
            pipe.del(key.as_str()).ignore();
        })
        .await
    }

    /// Extends the life of keys still `pending` (never creates one), while
    /// their publish awaits a confirm past the ack budget: a retry must keep
    /// finding them in flight until the outcome is known.
    pub async fn keep_pending(&self, keys: &[DedupKey]) -> Result<(), DedupError> {
        let ttl = i64::try_from(self.pending_ttl.as_millis()).unwrap_or(i64::MAX);
        self.run_groups("keep_pending", keys, |pipe, key| {
            pipe.pexpire(key.as_str(), ttl).ignore();
        })
        .await
    }

    /// Indexes of `keys` in groups that one call may touch together: all
    /// of them, or in cluster mode those of one hash slot.
    fn groups(&self, keys: &[DedupKey]) -> Vec<Vec<usize>> {
        if self.by_slot {
            slot_groups(keys.iter().map(DedupKey::as_str))
        } else {
            vec![(0..keys.len()).collect()]
        }
    }

    /// One pipeline per group of `keys`, `add` putting each key's command
    /// in; the pipelines run at once and all must succeed.
    async fn run_groups(
        &self,
        operation: &str,
        keys: &[DedupKey],
        add: impl Fn(&mut redis::Pipeline, &DedupKey),
    ) -> Result<(), DedupError> {
        if keys.is_empty() {
            return Ok(());
        }
        let pipes: Vec<redis::Pipeline> = self
            .groups(keys)
            .iter()
            .map(|group| {
                let mut pipe = redis::pipe();
                group.iter().for_each(|&index| add(&mut pipe, &keys[index]));
                pipe
            })
            .collect();
        let calls = pipes.iter().map(|pipe| self.run::<()>(operation, pipe));
        futures_util::future::try_join_all(calls).await.map(drop)
    }

    /// The life of a `pending` key (`redis.pending_ttl`).
    pub fn pending_ttl(&self) -> Duration {
        self.pending_ttl
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

    /// Runs `pipe` (dialing first if need be) within the timeout; returns
    /// the generation of the link it went through, for `record`.
    async fn call<T: redis::FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
    ) -> (u64, Result<T, DedupError>) {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let timed_out = || Err(DedupError::Timeout(self.timeout));
        let (generation, mut connection) =
            match tokio::time::timeout_at(deadline, self.link.connection()).await {
                Ok(Ok(connection)) => connection,
                Ok(Err(dial)) => return (self.link.generation(), Err(DedupError::Redis(dial))),
                Err(_) => return (self.link.generation(), timed_out()),
            };
        match tokio::time::timeout_at(deadline, pipe.query_async(&mut connection)).await {
            Ok(reply) => (generation, reply.map_err(DedupError::Redis)),
            Err(_) => (generation, timed_out()),
        }
    }

    /// Runs `pipe` within the timeout; `operation` names it in the metrics.
    async fn run<T: redis::FromRedisValue>(
        &self,
        operation: &str,
        pipe: &redis::Pipeline,
    ) -> Result<T, DedupError> {
        let started = Instant::now();
        let (generation, result) = self.call(pipe).await;
        let end = match &result {
            Ok(_) => CallEnd::Answered,
            Err(DedupError::Timeout(_)) => CallEnd::TimedOut,
            Err(DedupError::Redis(e)) => CallEnd::Failed(e),
            Err(DedupError::ShortReply { .. }) => CallEnd::Answered,
        };
        let replaced = self.link.record(generation, end);
        if let Some(metrics) = &self.metrics {
            metrics.observe_redis(operation, started.elapsed(), result.is_ok());
            if let Some(reason) = replaced {
                metrics.count_redis_reconnect(reason.label());
            }
        }
        result
    }
}
