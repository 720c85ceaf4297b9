//! The ledger's check once a fault is over and the system has settled:
//! every event answered 200 is delivered downstream or in the dead queue
//! (none lost), and the copies of each event tell the gateway's duplicates
//! (two publishes: two request ids) from the worker's redeliveries (one
//! message delivered again: one request id), see [`super`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::time::{Duration, Instant};

use super::{Book, Outcome};

/// The promise of recovery: both binaries serve within this of a fault's end.
pub const RECOVERY_PROMISE: Duration = Duration::from_secs(30);

/// Where a copy of an event was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// Accepted by the downstream, at that moment.
    Delivered(Instant),
    /// In the dead queue.
    Dead,
    /// Still in a work or retry queue once the worker stopped.
    Left,
}

/// One copy of an event: one delivery downstream or one message on a queue.
#[derive(Debug, Clone)]
pub struct EventCopy {
    pub id: String,
    /// The request id of the gateway request that published it.
    pub request_id: String,
    pub place: Place,
}

/// What a fault did, in figures.
#[derive(Debug)]
pub struct Report {
    pub acked: usize,
    /// Events never answered 200 by the end of the test.
    pub unacked: usize,
    /// Answered 200, and neither delivered nor dead.
    pub lost: Vec<String>,
    /// Events published twice by the gateway (two request ids), and how
    /// many extra copies that made.
    pub gateway_duplicates: Vec<String>,
    /// For each of those: what its attempts got and where each copy came from.
    pub duplicate_evidence: Vec<String>,
    /// The gateway's log lines about publishes, for a failure's message.
    pub publish_log: Vec<String>,
    pub gateway_extra_copies: usize,
    /// Deliveries of a message the worker had delivered already.
    pub worker_redeliveries: usize,
    pub dead: usize,
    pub left: usize,
    /// Events whose copy was published by an attempt that was not answered
    /// 200 (a publish confirmed after the ack budget, a gateway stopped
    /// mid-answer): the 200 went to a later retry, which found it done.
    pub published_before_the_200: usize,
    pub answers: BTreeMap<Outcome, usize>,
    /// p50 and p99 of how long the 503 answers took.
    pub latency_503: Option<(Duration, Duration)>,
    /// From the fault's end to the first 200.
    pub gateway_recovery: Option<Duration>,
    /// From the fault's end to the first delivery of an event accepted after it.
    pub worker_recovery: Option<Duration>,
}

impl Report {
    pub fn new(book: &Book, copies: &[EventCopy], fault_end: Instant) -> Self {
        let mut request_ids: HashMap<&str, HashSet<&str>> = HashMap::new();
        for copy in copies {
            let ids = request_ids.entry(copy.id.as_str()).or_default();
            ids.insert(copy.request_id.as_str());
        }
        let settled: HashSet<&str> = copies
            .iter()
            .filter(|c| c.place != Place::Left)
            .map(|c| c.id.as_str())
            .collect();
        let mut lost: Vec<String> = book
            .acked
            .keys()
            .filter(|id| !settled.contains(id.as_str()))
            .cloned()
            .collect();
        lost.sort();
        let mut gateway_duplicates: Vec<String> = request_ids
            .iter()
            .filter(|(_, ids)| ids.len() > 1)
            .map(|(id, _)| (*id).to_owned())
            .collect();
        gateway_duplicates.sort();
        let duplicate_evidence = gateway_duplicates
            .iter()
            .map(|id| evidence(id, book, copies))
            .collect();
        let distinct: usize = request_ids.values().map(HashSet::len).sum();
        let count = |place: fn(&Place) -> bool| copies.iter().filter(|c| place(&c.place)).count();
        Self {
            acked: book.acked.len(),
            unacked: book.unacked.len(),
            lost,
            gateway_extra_copies: distinct - request_ids.len(),
            gateway_duplicates,
            duplicate_evidence,
            publish_log: Vec::new(),
            worker_redeliveries: copies.len() - distinct,
            dead: count(|p| *p == Place::Dead),
            left: count(|p| *p == Place::Left),
            published_before_the_200: published_before_the_200(book, copies),
            answers: answer_counts(book),
            latency_503: latency_503(book),
            gateway_recovery: gateway_recovery(book, fault_end),
            worker_recovery: worker_recovery(book, copies, fault_end),
        }
    }

    /// The ledger's promises: nothing answered 200 is lost, nothing is
    /// published twice by the gateway, every event is answered 200 before
    /// the test ends, and both binaries serve within 30 s of the fault's end.
    pub fn assert_promises(&self) {
        assert!(
            self.lost.is_empty(),
            "events answered 200 were lost: {:?}\n{self}",
            self.lost
        );
        assert!(
            self.gateway_duplicates.is_empty(),
            "the gateway published events twice (retries of a 503 must not):\n{}\n{self}\n\
             the gateway's log on publishes:\n{}",
            self.duplicate_evidence.join("\n"),
            self.publish_log.join("\n")
        );
        assert_eq!(self.unacked, 0, "events never answered 200: {self}");
        assert_eq!(self.left, 0, "copies left on the queues: {self}");
        for (who, took) in [
            ("gateway", self.gateway_recovery),
            ("worker", self.worker_recovery),
        ] {
            assert!(
                took.is_some_and(|t| t <= RECOVERY_PROMISE),
                "the {who} serves within {RECOVERY_PROMISE:?} of the fault's end: {self}"
            );
        }
    }

    /// Answers with `outcome`.
    pub fn answered(&self, outcome: Outcome) -> usize {
        self.answers.get(&outcome).copied().unwrap_or(0)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms =
            |d: Option<Duration>| d.map_or("never".into(), |d| format!("{} ms", d.as_millis()));
        write!(
            f,
            "acked {} (never 200: {}) | lost {} | gateway duplicates {} ({} extra copies) | \
             worker redeliveries {} | dead {} | left {} | published before the 200 {} | answers ",
            self.acked,
            self.unacked,
            self.lost.len(),
            self.gateway_duplicates.len(),
            self.gateway_extra_copies,
            self.worker_redeliveries,
            self.dead,
            self.left,
            self.published_before_the_200,
        )?;
        for (outcome, n) in &self.answers {
            match outcome {
                Outcome::Status(status) => write!(f, "{status}: {n}, ")?,
                other => write!(f, "{other:?}: {n}, ")?,
            }
        }
        if let Some((p50, p99)) = self.latency_503 {
            write!(
                f,
                "| 503 p50 {} ms p99 {} ms ",
                p50.as_millis(),
                p99.as_millis()
            )?;
        }
        write!(
            f,
            "| serving again after the fault: gateway {}, worker {}",
            ms(self.gateway_recovery),
            ms(self.worker_recovery)
        )
    }
}

/// One line on a duplicated event: its attempts' answers, and the attempt
/// (the request id's suffix) behind each copy.
fn evidence(id: &str, book: &Book, copies: &[EventCopy]) -> String {
    let mut tries: Vec<(Outcome, usize)> = Vec::new();
    for outcome in book.retried.get(id).into_iter().flatten() {
        match tries.last_mut() {
            Some((last, n)) if last == outcome => *n += 1,
            _ => tries.push((*outcome, 1)),
        }
    }
    let tries: Vec<String> = tries.iter().map(|(o, n)| format!("{o:?} x{n}")).collect();
    let found: Vec<String> = copies
        .iter()
        .filter(|c| c.id == id)
        .map(|c| {
            let place = match c.place {
                Place::Delivered(_) => "delivered",
                Place::Dead => "dead",
                Place::Left => "left",
            };
            format!("{} ({place})", c.request_id)
        })
        .collect();
    format!(
        "  {id}: attempts answered {}; copies from {found:?}",
        tries.join(", ")
    )
}

fn answer_counts(book: &Book) -> BTreeMap<Outcome, usize> {
    let mut counts = BTreeMap::new();
    for answer in &book.answers {
        *counts.entry(answer.outcome).or_insert(0) += 1;
    }
    counts
}

/// The `n`th percentile of sorted durations.
pub fn percentile(sorted: &[Duration], n: usize) -> Duration {
    let index = (sorted.len() * n / 100).min(sorted.len().saturating_sub(1));
    sorted.get(index).copied().unwrap_or_default()
}

fn latency_503(book: &Book) -> Option<(Duration, Duration)> {
    let mut took: Vec<Duration> = book
        .answers
        .iter()
        .filter(|a| a.outcome == Outcome::Status(503))
        .map(|a| a.took)
        .collect();
    took.sort();
    (!took.is_empty()).then(|| (percentile(&took, 50), percentile(&took, 99)))
}

fn gateway_recovery(book: &Book, fault_end: Instant) -> Option<Duration> {
    book.answers
        .iter()
        .filter(|a| a.outcome == Outcome::Status(200) && a.at >= fault_end)
        .map(|a| a.at - fault_end)
        .min()
}

fn worker_recovery(book: &Book, copies: &[EventCopy], fault_end: Instant) -> Option<Duration> {
    copies
        .iter()
        .filter_map(|copy| match copy.place {
            Place::Delivered(at) if at >= fault_end => Some((copy, at - fault_end)),
            _ => None,
        })
        .filter(|(copy, _)| book.acked.get(&copy.id).is_some_and(|a| a.at >= fault_end))
        .map(|(_, took)| took)
        .min()
}

/// Events with a copy whose request id (`<event id>.<attempt>`) names an
/// attempt other than the one answered 200.
fn published_before_the_200(book: &Book, copies: &[EventCopy]) -> usize {
    let early: HashSet<&str> = copies
        .iter()
        .filter(|copy| {
            let attempt = copy
                .request_id
                .rsplit_once('.')
                .and_then(|(_, n)| n.parse::<u32>().ok());
            book.acked
                .get(&copy.id)
                .is_some_and(|acked| attempt != Some(acked.attempt))
        })
        .map(|copy| copy.id.as_str())
        .collect();
    early.len()
}
