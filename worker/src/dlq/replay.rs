//! `dlq replay`: send matching dead events back to the events exchange, so
//! the worker delivers them again.
//!
//! One pass over the dead queue (see [`super::scan`]) in two steps:
//! 1. [`plan`] reads the snapshot and picks the matching, replayable events
//!    (at most `--limit`), holding everything unacknowledged;
//! 2. [`ReplayPlan::run`] publishes each picked event's copy (see
//!    [`super::republish`]), waits for its confirm, and only then
//!    acknowledges the dead original; `--rate` ([`Rate`]) paces the publishes.
//!
//! Then the channel closes and every event that was not moved (not
//! matching, not replayable, refused by the broker, or not reached because
//! the run stopped) goes back to the head of the dead queue in its order,
//! ahead of events that died meanwhile. A SIGKILL at any instant does the
//! same: the only harm is an event whose copy was confirmed but whose
//! original was not yet acknowledged, delivered twice (the receiver sees the
//! same `webhook-id`). Duplicates that were already in the dead queue (the
//! same id twice in one pass) are counted in the summary.

use std::collections::HashSet;
use std::time::{Instant, SystemTime};

use serde::Serialize;
use sluice_shared::envelope::unix_millis;
use sluice_shared::id_digest;
use tokio::time::{Interval, MissedTickBehavior};

use super::error::DlqError;
use super::filter::Filter;
use super::progress::Progress;
use super::rate::Rate;
use super::republish::{ConfirmedPublisher, replay_copy};
use super::scan::{DeadQueue, Held, Scan};

/// How a replay runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReplayOptions {
    /// Replay at most this many events.
    pub limit: Option<usize>,
    /// Events per second; `None` is as fast as confirms come back.
    pub rate: Option<Rate>,
    /// Only count what would be replayed.
    pub dry_run: bool,
}

/// What a replay did (or, with `dry_run`, would do).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Replayed {
    pub queue: String,
    pub dry_run: bool,
    /// Messages in the dead queue when the pass started.
    pub in_queue: u32,
    /// Events that match the filter (up to where `--limit` stopped the pass).
    pub matched: u64,
    /// Matching events picked to replay (all replayable, at most `--limit`).
    pub picked: u64,
    /// Events published, confirmed and removed from the dead queue.
    pub replayed: u64,
    /// Matching events that cannot be replayed (raw, no id, no source or type): still dead.
    pub not_replayable: u64,
    /// Copies RabbitMQ refused or returned: those events are still dead.
    pub failed: u64,
    /// Matching events whose id was already seen in this pass (copies of one event).
    pub duplicates: u64,
    /// Messages in the dead queue afterwards.
    pub left_in_queue: u32,
    /// Why the run stopped before the end, if it did; run it again.
    pub stopped: Option<String>,
    pub elapsed_ms: u64,
}

impl Replayed {
    /// Whether it did less than it picked: it stopped early, or RabbitMQ
    /// refused some copies. The CLI then exits 1 and HTTP answers 503, the
    /// summary saying what is left (run the same replay again).
    pub fn incomplete(&self) -> bool {
        self.stopped.is_some() || self.failed > 0
    }
}

/// The picked events of a pass, held until moved or given back.
pub struct ReplayPlan {
    scan: Scan,
    picked: Vec<Held>,
    report: Replayed,
    started: Instant,
}

/// Reads the dead queue and picks what to replay.
pub async fn plan(
    queue: &DeadQueue,
    filter: &Filter,
    options: &ReplayOptions,
) -> Result<ReplayPlan, DlqError> {
    validate(options)?;
    let started = Instant::now();
    let mut scan = queue.scan().await?;
    let mut report = Replayed {
        queue: queue.name(),
        dry_run: options.dry_run,
        in_queue: scan.snapshot(),
        ..Replayed::default()
    };
    let mut seen = HashSet::new();
    let mut picked = Vec::new();
    let limit = options.limit.unwrap_or(usize::MAX);
    while picked.len() < limit {
        let Some(held) = scan.next().await? else {
            break;
        };
        if !filter.matches(&held.event) {
            continue;
        }
        report.matched += 1;
        if let Some(id) = &held.event.id
            && !seen.insert(id.clone())
        {
            report.duplicates += 1;
        }
        match held.event.not_replayable() {
            Some(_) => report.not_replayable += 1,
            None => picked.push(held),
        }
    }
    report.picked = picked.len() as u64;
    Ok(ReplayPlan {
        scan,
        picked,
        report,
        started,
    })
}

fn validate(options: &ReplayOptions) -> Result<(), DlqError> {
    if options.limit == Some(0) {
        return Err(DlqError::Usage("limit must be at least 1".into()));
    }
    Ok(())
}

impl ReplayPlan {
    /// What the pass picked so far (a dry run's answer).
    pub fn report(&self) -> &Replayed {
        &self.report
    }

    /// Moves the picked events (unless a dry run), then gives back the rest.
    pub async fn run(
        mut self,
        queue: &DeadQueue,
        options: &ReplayOptions,
        progress: &Progress,
    ) -> Result<Replayed, DlqError> {
        if !options.dry_run && !self.picked.is_empty() {
            let channel = queue.confirm_channel().await?;
            let publisher = ConfirmedPublisher::new(channel, &queue.topology().events_exchange());
            let mut pacer = options.rate.map(pacer);
            let picked = std::mem::take(&mut self.picked);
            for held in &picked {
                if let Some(pacer) = pacer.as_mut() {
                    pacer.tick().await;
                }
                if let Err(stop) = self.move_one(&publisher, held).await {
                    self.report.stopped = Some(stop);
                    break;
                }
                progress.step();
            }
        }
        progress.finish();
        self.scan.finish(queue).await?;
        self.report.left_in_queue = queue.count().await?;
        self.report.elapsed_ms =
            u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        Ok(self.report)
    }

    /// Publishes one copy, then acknowledges the original. `Err` stops the run.
    async fn move_one(
        &mut self,
        publisher: &ConfirmedPublisher,
        held: &Held,
    ) -> Result<(), String> {
        let now_ms = unix_millis(SystemTime::now());
        let Some((routing_key, properties)) = replay_copy(&held.event, now_ms) else {
            self.report.not_replayable += 1;
            return Ok(());
        };
        match publisher
            .publish(&routing_key, &held.event.body, properties)
            .await
        {
            Ok(()) => {}
            Err(e) if e.is_fatal() => return Err(e.to_string()),
            Err(e) => {
                let digest = held.event.id.as_deref().map(id_digest::of);
                tracing::warn!(
                    event_id_digest = digest.map(tracing::field::display),
                    error = %e,
                    "replay copy refused; the event stays dead"
                );
                self.report.failed += 1;
                return Ok(());
            }
        }
        self.scan
            .ack(&held.acker)
            .await
            .map_err(|e| e.to_string())?;
        self.report.replayed += 1;
        Ok(())
    }
}

/// Ticks `rate` times a second; a slow confirm delays, never bunches, the next.
fn pacer(rate: Rate) -> Interval {
    let mut interval = tokio::time::interval(rate.interval());
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    interval
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_zero_limit_is_a_usage_error() {
        let zero = ReplayOptions {
            limit: Some(0),
            ..ReplayOptions::default()
        };
        let err = validate(&zero).unwrap_err();
        assert_eq!(err.exit_code(), 64, "{err}");
        let fine = ReplayOptions {
            limit: Some(5),
            rate: Some(Rate::new(0.5).unwrap()),
            dry_run: true,
        };
        assert!(validate(&fine).is_ok());
    }

    #[tokio::test]
    async fn the_pacer_spaces_publishes_evenly() {
        let mut pacer = pacer(Rate::new(50.0).unwrap());
        let start = tokio::time::Instant::now();
        for _ in 0..5 {
            pacer.tick().await;
        }
        // The first tick is immediate, then one every 20 ms.
        let elapsed = start.elapsed();
        assert!(elapsed >= Duration::from_millis(78), "{elapsed:?}");
    }
}
