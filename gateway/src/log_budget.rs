//! A cap on how many refusal lines the gateway logs a second. Under a flood
//! (a scanner, a slowloris, a shed storm) every refused request would
//! otherwise write a line: the log would cost more CPU and disk than the
//! refusal itself. The metrics still count every request; the first line
//! after a skipped stretch says how many lines were skipped.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::time::Instant;

/// Lines allowed per second.
const PER_SECOND: u64 = 20;

pub struct LogBudget {
    started: Instant,
    /// `second << 32 | lines written in that second`.
    window: AtomicU64,
    skipped: AtomicU64,
}

impl Default for LogBudget {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            window: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
        }
    }
}

impl LogBudget {
    /// `Some(lines skipped since the last one written)` when this line may be written.
    pub fn allow(&self) -> Option<u64> {
        let second = self.started.elapsed().as_secs();
        let taken = self
            .window
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |window| {
                let (at, used) = (window >> 32, window & 0xffff_ffff);
                if at != second {
                    Some(second << 32 | 1)
                } else if used < PER_SECOND {
                    Some(window + 1)
                } else {
                    None
                }
            })
            .is_ok();
        if taken {
            Some(self.skipped.swap(0, Ordering::AcqRel))
        } else {
            self.skipped.fetch_add(1, Ordering::AcqRel);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn a_flood_writes_twenty_lines_a_second_and_counts_the_rest() {
        let budget = LogBudget::default();
        let written: Vec<u64> = (0..100).filter_map(|_| budget.allow()).collect();
        assert_eq!(written.len(), 20);
        assert!(written.iter().all(|&skipped| skipped == 0));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(
            budget.allow(),
            Some(80),
            "the next line reports the 80 skipped"
        );
        assert_eq!(budget.allow(), Some(0));
    }
}
