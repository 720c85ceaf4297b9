//! `dlq purge`: removes dead events for good, after showing what will go.
//!
//! A purge names what it removes: a filter, or `--all` (`"all": true` over
//! HTTP) for the whole dead queue; neither is a usage error ([`PurgeScope`]),
//! so a forgotten filter never empties the queue.
//!
//! On the command line one pass does both steps: [`plan`] reads the queue and
//! holds every matching event unacknowledged while the operator sees the
//! [`PurgePlan::preview`]; [`PurgePlan::execute`] then acknowledges exactly
//! those, so an event that arrives after the preview is never removed unseen.
//!
//! Over HTTP the two steps are two requests and two passes: [`preview`]
//! answers with a [`Confirmation`] naming every message it covers, and
//! [`confirmed`] removes exactly those messages and no others: events that
//! arrived since stay, even when they match (see [`super::confirm`]).

use serde::Serialize;

use super::confirm::{Confirmation, Fingerprint};
use super::error::DlqError;
use super::filter::{Filter, FilterArgs};
use super::queue::DeadQueue;
use super::scan::{Mark, Scan};
use super::stats::Stats;

/// What a purge may remove: the events a filter matches, or all of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurgeScope(String);

impl PurgeScope {
    /// A filter, or `all` with no filter; anything else is a usage error.
    pub fn new(args: &FilterArgs, filter: &Filter, all: bool) -> Result<Self, DlqError> {
        match (filter.is_empty(), all) {
            (true, true) => Ok(Self("all".into())),
            (false, false) => Ok(Self(format!("filter {}", args.canonical()))),
            (true, false) => Err(DlqError::Usage(
                "a purge without a filter would remove every dead event: give a filter \
                 (source, type, reason, status, since, until, id), or --all (\"all\": true over \
                 HTTP) to mean the whole dead queue"
                    .into(),
            )),
            (false, true) => Err(DlqError::Usage(
                "--all (\"all\": true) means the whole dead queue: give it without a filter, or \
                 give the filter without it"
                    .into(),
            )),
        }
    }

    /// The scope as a confirmation names it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The matching events of a pass, held until they are removed or given back.
pub struct PurgePlan {
    scan: Scan,
    taken: Vec<Mark>,
    preview: Stats,
}

/// What a purge did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Purged {
    /// What matched and would go (refused), or went.
    pub matched: Stats,
    /// Events removed; 0 when refused.
    pub removed: u64,
    /// True when nothing was removed for want of confirmation.
    pub refused: bool,
    /// Previewed events no longer in the dead queue when the confirmation
    /// came (replayed, exported or removed since); HTTP only, else 0.
    pub already_gone: u64,
    /// Events that match the filter but were not previewed (they arrived
    /// since, or the preview was full): left in the queue; HTTP only, else 0.
    pub kept: u64,
}

/// Reads the queue and holds what matches.
pub async fn plan(queue: &DeadQueue, filter: &Filter) -> Result<PurgePlan, DlqError> {
    let mut scan = queue.scan().await?;
    let mut preview = Stats::new(queue.name(), u64::from(scan.snapshot()));
    let mut taken = Vec::new();
    while let Some(held) = scan.next().await? {
        if filter.matches(&held.event) {
            preview.add(&held.event);
            taken.push(held.mark);
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
        self.scan.ack(&self.taken).await?;
        let removed = u64::from(self.scan.acked());
        self.scan.finish(queue).await?;
        Ok(Purged {
            matched: self.preview,
            removed,
            refused: false,
            already_gone: 0,
            kept: 0,
        })
    }

    /// Gives everything back, in order: nothing is removed.
    pub async fn refuse(self, queue: &DeadQueue) -> Result<Purged, DlqError> {
        self.scan.finish(queue).await?;
        Ok(Purged {
            matched: self.preview,
            removed: 0,
            refused: true,
            already_gone: 0,
            kept: 0,
        })
    }
}

/// What an HTTP preview found: what would go, and the token that removes exactly that.
#[derive(Debug, Clone)]
pub struct Previewed {
    /// The events the confirmation covers.
    pub matched: Stats,
    pub confirmation: Confirmation,
    /// Matching events beyond [`super::confirm::MAX_CONFIRMED`], not covered.
    pub not_covered: u64,
}

/// A read-only pass: the matching events, each fingerprinted.
pub async fn preview(
    queue: &DeadQueue,
    filter: &Filter,
    scope: &PurgeScope,
) -> Result<Previewed, DlqError> {
    let mut scan = queue.scan().await?;
    let mut matched = Stats::new(queue.name(), u64::from(scan.snapshot()));
    let mut confirmation = Confirmation::new(scope.as_str());
    let mut not_covered = 0;
    while let Some(held) = scan.next().await? {
        if !filter.matches(&held.event) {
            continue;
        }
        if confirmation.is_full() {
            not_covered += 1;
        } else {
            matched.add(&held.event);
            confirmation.push(Fingerprint::of(&held.event));
        }
    }
    scan.finish(queue).await?;
    Ok(Previewed {
        matched,
        confirmation,
        not_covered,
    })
}

/// Removes the messages `confirmation` names and nothing else; counts those
/// already gone and the matching ones it leaves.
pub async fn confirmed(
    queue: &DeadQueue,
    filter: &Filter,
    confirmation: &Confirmation,
) -> Result<Purged, DlqError> {
    let mut scan = queue.scan().await?;
    let mut wanted = confirmation.wanted();
    let mut removed = Stats::new(queue.name(), u64::from(scan.snapshot()));
    let mut taken = Vec::new();
    let mut kept = 0;
    while let Some(held) = scan.next().await? {
        if wanted.take(Fingerprint::of(&held.event)) {
            removed.add(&held.event);
            taken.push(held.mark);
        } else if filter.matches(&held.event) {
            kept += 1;
        }
    }
    // Decided on the whole pass first: a pass that fails while reading removes nothing.
    scan.ack(&taken).await?;
    let count = u64::from(scan.acked());
    scan.finish(queue).await?;
    Ok(Purged {
        matched: removed,
        removed: count,
        refused: false,
        already_gone: (confirmation.len() as u64).saturating_sub(count),
        kept,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(args: FilterArgs, all: bool) -> Result<PurgeScope, DlqError> {
        let filter = Filter::parse(&args, 0).unwrap();
        PurgeScope::new(&args, &filter, all)
    }

    #[test]
    fn a_purge_needs_a_filter_or_all_but_not_both() {
        let alpha = FilterArgs {
            source: vec!["alpha".into()],
            ..FilterArgs::default()
        };
        assert_eq!(scope(FilterArgs::default(), true).unwrap().as_str(), "all");
        assert!(
            scope(alpha.clone(), false)
                .unwrap()
                .as_str()
                .contains("alpha")
        );
        let none = scope(FilterArgs::default(), false).unwrap_err();
        assert_eq!(none.exit_code(), 64);
        assert!(none.to_string().contains("--all"), "{none}");
        let blank = FilterArgs {
            source: vec![" ".into()],
            ..FilterArgs::default()
        };
        assert!(scope(blank, false).is_err(), "a blank value is no filter");
        let both = scope(alpha, true).unwrap_err();
        assert_eq!(both.exit_code(), 64, "{both}");
    }
}
