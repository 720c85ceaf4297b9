//! `dlq replay`: send matching dead events back to the events exchange, so
//! the worker delivers them again.
//!
//! One pass over the dead queue (see [`super::scan`]) that moves each
//! matching, replayable event (at most `--limit`) as it reads it: its copy
//! (see [`super::republish`]) is published, and the dead original is
//! acknowledged only once RabbitMQ confirmed the copy. Copies go out in
//! groups of up to [`WINDOW`] through the shared confirmed-publish path
//! ([`sluice_shared::publish`]: a group's returned copies are told apart by
//! content, never by lapin's pairing); confirmed
//! originals are acknowledged together ([`ACK_CHUNK`] at a time, or as soon
//! as nothing else waits), so most acknowledgements are one cumulative frame
//! (see [`super::acks`]). `--rate` ([`Rate`]) paces the copies. Only the
//! copies on their way are held in memory, whatever the size of the queue.
//!
//! Then the pass ends and every event that was not moved (not matching, not
//! replayable, refused by the broker, or not reached because the run
//! stopped) goes back to the head of the dead queue in its order, ahead of
//! events that died meanwhile. A SIGKILL at any instant does the same: the
//! only harm is an event whose copy was confirmed but whose original was not
//! yet acknowledged, delivered twice (the receiver sees the same
//! `webhook-id`): at most [`WINDOW`] + [`ACK_CHUNK`] at full speed, at most one
//! when paced slower than confirms come back. Duplicates that were already in
//! the dead queue (the same id twice in one pass) are counted in the summary.

use std::collections::HashSet;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use sluice_shared::envelope::unix_millis;
use sluice_shared::id_digest;
use sluice_shared::publish::{ConfirmChannels, Outgoing, PublishError};
use tokio::time::{Interval, MissedTickBehavior};

use super::error::DlqError;
use super::event::DeadEvent;
use super::filter::Filter;
use super::progress::Progress;
use super::queue::DeadQueue;
use super::rate::Rate;
use super::republish::replay_copy;
use super::scan::{Mark, Scan};

/// Copies sent together, then awaited together: enough to keep RabbitMQ
/// busy between confirms, few enough that a kill leaves little to redo.
pub const WINDOW: usize = 256;
/// Limit on sending a copy and on its confirm.
const PUBLISH_LIMIT: Duration = Duration::from_secs(10);
/// Confirmed originals acknowledged together (one frame when they follow
/// each other in the queue).
pub const ACK_CHUNK: usize = 512;

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

/// Replays the matching events (or, with `dry_run`, counts them); a bar on
/// the terminal when `progress`.
pub async fn replay(
    queue: &DeadQueue,
    filter: &Filter,
    options: &ReplayOptions,
    progress: bool,
) -> Result<Replayed, DlqError> {
    validate(options)?;
    let started = Instant::now();
    let mut scan = queue.scan().await?;
    let progress = match progress && !options.dry_run {
        true => Progress::on_terminal(u64::from(scan.snapshot()), "replaying"),
        false => Progress::hidden(),
    };
    let mut mover = match options.dry_run {
        true => None,
        false => {
            let exchange = queue.topology().events_exchange();
            Some(Mover::new(
                queue.copy_channels().await?,
                exchange,
                options.rate,
            ))
        }
    };
    let mut report = Replayed {
        queue: queue.name(),
        dry_run: options.dry_run,
        in_queue: scan.snapshot(),
        ..Replayed::default()
    };
    let outcome = read_and_move(
        &mut scan,
        filter,
        options,
        &mut report,
        &mut mover,
        &progress,
    )
    .await;
    let finished = match mover {
        Some(mover) => mover.drain(&mut scan, &mut report).await,
        None => Ok(()),
    };
    progress.finish();
    // Events may have moved before a failure while reading: the run stops
    // and its summary says what moved (exit 1, HTTP 503), never "nothing".
    if let Err(e) = outcome {
        report.stopped.get_or_insert(read_failed(&e, &scan));
    }
    if let Err(stop) = finished {
        report.stopped.get_or_insert(stop);
    }
    scan.finish(queue).await?;
    report.left_in_queue = queue.count().await?;
    report.elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    Ok(report)
}

/// Reads the snapshot, picking and (unless a dry run) moving what matches.
async fn read_and_move(
    scan: &mut Scan,
    filter: &Filter,
    options: &ReplayOptions,
    report: &mut Replayed,
    mover: &mut Option<Mover<'_>>,
    progress: &Progress,
) -> Result<(), DlqError> {
    let limit = options.limit.map_or(u64::MAX, |l| l as u64);
    // Hashes, not ids: eight bytes an event, even for a million.
    let mut seen = HashSet::new();
    while report.picked < limit {
        let Some(held) = scan.next().await? else {
            break;
        };
        progress.step();
        if !filter.matches(&held.event) {
            continue;
        }
        report.matched += 1;
        if let Some(id) = &held.event.id
            && !seen.insert(hash_of(id))
        {
            report.duplicates += 1;
        }
        if held.event.not_replayable().is_some() {
            report.not_replayable += 1;
            continue;
        }
        report.picked += 1;
        if let Some(mover) = mover.as_mut()
            && let Err(stop) = mover.send(scan, &held.event, held.mark, report).await
        {
            report.stopped = Some(stop);
            break;
        }
    }
    Ok(())
}

/// Why a replay stopped reading: what moved is moved, the rest is still dead.
fn read_failed(error: &DlqError, scan: &Scan) -> String {
    let why = match error {
        DlqError::ShortPass { idle, .. } => format!(
            "nothing delivered for {idle:?}: something other than a dlq command consumes the \
             dead queue"
        ),
        other => other.to_string(),
    };
    format!(
        "reading the dead queue stopped after {} of {} messages ({why}); the events counted \
         as replayed are moved, the rest is still dead: run the same replay again",
        scan.received(),
        scan.snapshot()
    )
}

fn hash_of(id: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    id.hash(&mut hasher);
    hasher.finish()
}

fn validate(options: &ReplayOptions) -> Result<(), DlqError> {
    if options.limit == Some(0) {
        return Err(DlqError::Usage("limit must be at least 1".into()));
    }
    Ok(())
}

/// Copies to send and confirmed originals not yet acknowledged.
struct Mover<'q> {
    copies: &'q ConfirmChannels,
    exchange: String,
    pacer: Option<Interval>,
    group: Vec<(Mark, Option<String>, Outgoing)>,
    confirmed: Vec<Mark>,
}

impl<'q> Mover<'q> {
    fn new(copies: &'q ConfirmChannels, exchange: String, rate: Option<Rate>) -> Self {
        Self {
            copies,
            exchange,
            pacer: rate.map(pacer),
            group: Vec::with_capacity(WINDOW),
            confirmed: Vec::with_capacity(ACK_CHUNK),
        }
    }

    /// Adds `event`'s copy to the group; sends the group once it is full
    /// (paced: at once, so each original goes as soon as its copy is
    /// confirmed and a kill duplicates at most one event). `Err` stops the run.
    async fn send(
        &mut self,
        scan: &mut Scan,
        event: &DeadEvent,
        mark: Mark,
        report: &mut Replayed,
    ) -> Result<(), String> {
        if let Some(pacer) = self.pacer.as_mut() {
            pacer.tick().await;
        }
        let now_ms = unix_millis(SystemTime::now());
        let Some((routing_key, properties)) = replay_copy(event, now_ms) else {
            report.not_replayable += 1;
            return Ok(());
        };
        let copy = Outgoing {
            exchange: self.exchange.as_str().into(),
            routing_key: routing_key.into(),
            body: event.body.clone(),
            properties,
        };
        self.group.push((mark, event.id.clone(), copy));
        if self.group.len() >= WINDOW || self.pacer.is_some() {
            self.send_group(scan, report).await?;
        }
        Ok(())
    }

    /// Publishes the group, waits for every confirm, and acknowledges the
    /// originals whose copies are stored once [`ACK_CHUNK`] of them wait.
    async fn send_group(&mut self, scan: &mut Scan, report: &mut Replayed) -> Result<(), String> {
        if self.group.is_empty() {
            return Ok(());
        }
        let (marks, copies): (Vec<_>, Vec<_>) = std::mem::take(&mut self.group)
            .into_iter()
            .map(|(mark, id, copy)| ((mark, id), copy))
            .unzip();
        let outcomes = self.copies.publish(copies, Some(PUBLISH_LIMIT)).await;
        let mut stop = Ok(());
        for ((mark, id), outcome) in marks.into_iter().zip(outcomes) {
            match outcome {
                Ok(()) => self.confirmed.push(mark),
                Err(e) => stop = stop.and(refused(id.as_deref(), e, report)),
            }
        }
        if self.confirmed.len() >= ACK_CHUNK || self.pacer.is_some() {
            self.ack(scan, report).await?;
        }
        stop
    }

    async fn ack(&mut self, scan: &mut Scan, report: &mut Replayed) -> Result<(), String> {
        scan.ack(&self.confirmed).await.map_err(|e| e.to_string())?;
        report.replayed += self.confirmed.len() as u64;
        self.confirmed.clear();
        Ok(())
    }

    /// Sends what is left of the group and acknowledges the confirmed.
    async fn drain(mut self, scan: &mut Scan, report: &mut Replayed) -> Result<(), String> {
        let outcome = self.send_group(scan, report).await;
        // Whatever was confirmed is acknowledged, even after a stop.
        self.ack(scan, report).await.and(outcome)
    }
}

/// A copy that failed: the run stops if the channel is gone, else the event stays dead.
fn refused(id: Option<&str>, error: PublishError, report: &mut Replayed) -> Result<(), String> {
    if error.is_broken_link() || matches!(error, PublishError::NotConfirmed) {
        return Err(error.to_string());
    }
    let digest = id.map(id_digest::of);
    tracing::warn!(
        event_id_digest = digest.map(tracing::field::display),
        error = %error,
        "replay copy refused; the event stays dead"
    );
    report.failed += 1;
    Ok(())
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
