//! `dlq purge`: removes the matching dead events for good, after showing
//! what will go; without `--yes` it only shows, and removes nothing.
//!
//! One pass does both: [`plan`] reads the queue and holds every matching
//! event unacknowledged while the operator (or the caller) sees the
//! [`PurgePlan::preview`]; [`PurgePlan::execute`] then acknowledges exactly
//! those, so an event that arrives after the preview is never removed unseen.

use lapin::Acker;
use serde::Serialize;

use super::error::DlqError;
use super::filter::Filter;
use super::scan::{DeadQueue, Scan};
use super::stats::Stats;

/// The matching events of a pass, held until they are removed or given back.
pub struct PurgePlan {
    scan: Scan,
    taken: Vec<Acker>,
    preview: Stats,
}

/// What a purge did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Purged {
    /// What matched (and would go, or went).
    pub matched: Stats,
    /// Events removed; 0 when refused.
    pub removed: u64,
    /// True when nothing was removed for want of confirmation.
    pub refused: bool,
}

/// Reads the queue and holds what matches.
pub async fn plan(queue: &DeadQueue, filter: &Filter) -> Result<PurgePlan, DlqError> {
    let mut scan = queue.scan().await?;
    let mut preview = Stats::new(queue.name(), u64::from(scan.snapshot()));
    let mut taken = Vec::new();
    while let Some(held) = scan.next().await? {
        if filter.matches(&held.event) {
            preview.add(&held.event);
            taken.push(held.acker);
        }
    }
    Ok(PurgePlan {
        scan,
        taken,
        preview,
    })
}

impl PurgePlan {
    /// What will go.
    pub fn preview(&self) -> &Stats {
        &self.preview
    }

    /// Removes what matched.
    pub async fn execute(mut self, queue: &DeadQueue) -> Result<Purged, DlqError> {
        for acker in &self.taken {
            self.scan.ack(acker).await?;
        }
        let removed = u64::from(self.scan.acked());
        self.scan.finish(queue).await?;
        Ok(Purged {
            matched: self.preview,
            removed,
            refused: false,
        })
    }

    /// Gives everything back, in order: nothing is removed.
    pub async fn refuse(self, queue: &DeadQueue) -> Result<Purged, DlqError> {
        self.scan.finish(queue).await?;
        Ok(Purged {
            matched: self.preview,
            removed: 0,
            refused: true,
        })
    }
}
