//! `dlq stats`: how many events are dead, since when, and why, counted by
//! source, type, route, reason and last status; a read-only pass.

use std::collections::BTreeMap;

use serde::Serialize;

use super::error::DlqError;
use super::event::DeadEvent;
use super::filter::Filter;
use super::queue::DeadQueue;
use super::record::rfc3339;

/// The key counted when an event has no source, type, route or status.
pub const NONE: &str = "none";

/// Counts over the dead events that match a filter.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// The dead queue's name.
    pub queue: String,
    /// Messages in the dead queue when the pass started.
    pub in_queue: u64,
    /// Events that match the filter.
    pub count: u64,
    /// Of those, messages that are not Sluice envelopes.
    pub raw: u64,
    /// Of those, events that were replayed before and died again.
    pub replayed_before: u64,
    /// The earliest and latest last failure (else receipt) among them.
    pub oldest: Option<String>,
    pub newest: Option<String>,
    pub by_source: BTreeMap<String, u64>,
    pub by_type: BTreeMap<String, u64>,
    /// By the route the event died on; `none` for no route (`no_route`,
    /// `malformed`, or dead before routes were named on messages).
    pub by_route: BTreeMap<String, u64>,
    pub by_reason: BTreeMap<String, u64>,
    /// By last HTTP status; `none` when downstream never answered.
    pub by_status: BTreeMap<String, u64>,
    #[serde(skip)]
    oldest_ms: Option<i64>,
    #[serde(skip)]
    newest_ms: Option<i64>,
}

impl Stats {
    pub fn new(queue: String, in_queue: u64) -> Self {
        Self {
            queue,
            in_queue,
            ..Self::default()
        }
    }

    /// Counts one matching event.
    pub fn add(&mut self, event: &DeadEvent) {
        self.count += 1;
        self.raw += u64::from(!event.is_envelope());
        self.replayed_before += u64::from(event.replayed > 0);
        bump(&mut self.by_source, event.source.as_deref());
        bump(&mut self.by_type, event.event_type.as_deref());
        bump(&mut self.by_route, event.route.as_deref());
        bump(&mut self.by_reason, Some(event.reason.as_str()));
        bump(
            &mut self.by_status,
            event.last_status.map(|s| s.to_string()).as_deref(),
        );
        if let Some(at) = event.failed_at_ms() {
            if self.oldest_ms.is_none_or(|oldest| at < oldest) {
                self.oldest_ms = Some(at);
                self.oldest = Some(rfc3339(at));
            }
            if self.newest_ms.is_none_or(|newest| at > newest) {
                self.newest_ms = Some(at);
                self.newest = Some(rfc3339(at));
            }
        }
    }
}

fn bump(counts: &mut BTreeMap<String, u64>, key: Option<&str>) {
    *counts.entry(key.unwrap_or(NONE).to_owned()).or_default() += 1;
}

/// Counts the matching dead events; the queue is left as it was.
pub async fn collect(queue: &DeadQueue, filter: &Filter) -> Result<Stats, DlqError> {
    let mut scan = queue.scan().await?;
    let mut stats = Stats::new(queue.name(), u64::from(scan.snapshot()));
    while let Some(held) = scan.next().await? {
        if filter.matches(&held.event) {
            stats.add(&held.event);
        }
    }
    scan.finish(queue).await?;
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::BasicProperties;
    use sluice_shared::message::DeadReason;

    fn event(source: &str, status: Option<i64>, at: i64) -> DeadEvent {
        let body = format!(
            r#"{{"specversion":"1.0","id":"x","source":"sluice/{source}","type":"t.{source}"}}"#
        );
        let mut event = DeadEvent::read(1, "k", BasicProperties::default(), body.into_bytes());
        event.reason = DeadReason::AttemptsExhausted;
        event.last_status = status;
        event.last_failure_ms = Some(at);
        event
    }

    #[test]
    fn counts_by_every_key_and_keeps_the_extremes() {
        let mut stats = Stats::new("q".into(), 4);
        stats.add(&event("a", Some(503), 2_000));
        stats.add(&event("a", None, 1_000));
        let mut on_crm = event("b", Some(503), 3_000);
        on_crm.route = Some("crm".into());
        stats.add(&on_crm);
        stats.add(&DeadEvent::read(
            1,
            "k",
            BasicProperties::default(),
            b"raw".to_vec(),
        ));
        assert_eq!(stats.count, 4);
        assert_eq!(stats.raw, 1);
        assert_eq!(stats.by_source["a"], 2);
        assert_eq!(stats.by_source[NONE], 1);
        assert_eq!(stats.by_type["t.b"], 1);
        assert_eq!(stats.by_route["crm"], 1);
        assert_eq!(stats.by_route[NONE], 3);
        assert_eq!(stats.by_status["503"], 2);
        assert_eq!(stats.by_status[NONE], 2);
        assert_eq!(stats.by_reason["unknown"], 1);
        assert_eq!(stats.oldest.as_deref(), Some("1970-01-01T00:00:01.000Z"));
        assert_eq!(stats.newest.as_deref(), Some("1970-01-01T00:00:03.000Z"));
    }
}
