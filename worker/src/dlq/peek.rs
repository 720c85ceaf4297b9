//! `dlq peek`: the first dead events that match, read without removing or
//! reordering anything (see [`super::scan`] for how).

use serde_json::{Value, json};

use super::error::DlqError;
use super::event::DeadEvent;
use super::filter::Filter;
use super::queue::DeadQueue;
use super::record::record;

/// What a peek found.
#[derive(Debug, Clone)]
pub struct Peeked {
    pub queue: String,
    /// Messages in the dead queue when the pass started.
    pub in_queue: u32,
    /// The first matching events, head first.
    pub events: Vec<DeadEvent>,
    /// Whether the payloads are shown.
    pub show_data: bool,
}

impl Peeked {
    /// The `--json` form: the events as records.
    pub fn json(&self) -> Value {
        let events: Vec<Value> = self
            .events
            .iter()
            .map(|e| record(e, self.show_data))
            .collect();
        json!({ "queue": self.queue, "in_queue": self.in_queue, "events": events })
    }
}

/// Reads up to `limit` matching events from the head; stops as soon as it has them.
pub async fn peek(
    queue: &DeadQueue,
    filter: &Filter,
    limit: usize,
    show_data: bool,
) -> Result<Peeked, DlqError> {
    let mut scan = queue.scan().await?;
    let mut events = Vec::new();
    while events.len() < limit {
        let Some(held) = scan.next().await? else {
            break;
        };
        if filter.matches(&held.event) {
            events.push(held.event);
        }
    }
    let in_queue = scan.snapshot();
    scan.finish(queue).await?;
    Ok(Peeked {
        queue: queue.name(),
        in_queue,
        events,
        show_data,
    })
}
