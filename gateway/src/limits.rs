//! Load shedding inside a request: the caps on requests in flight, on body
//! bytes held in memory across all requests, and on heavy work (verifying
//! and parsing large bodies) running at once. Each is taken without waiting
//! where waiting could pile work up: past a cap the request is answered 503
//! with `Retry-After` at once (see [`crate::error::Overload`]), so the
//! gateway never accepts work it cannot finish inside the ack budget.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The shared caps of one gateway.
pub struct LoadLimits {
    requests: Arc<Semaphore>,
    body: Arc<BodyBudget>,
    heavy: Arc<Semaphore>,
}

impl LoadLimits {
    pub fn new(max_requests: usize, max_body_bytes: usize) -> Self {
        // Heavy work runs on blocking threads; more at once than cores only queues.
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        Self {
            requests: Arc::new(Semaphore::new(max_requests)),
            body: Arc::new(BodyBudget {
                limit: max_body_bytes,
                held: AtomicUsize::new(0),
            }),
            heavy: Arc::new(Semaphore::new(cores)),
        }
    }

    /// A slot for one request, or `None` when `max_requests_in_flight` are running.
    pub fn request_slot(&self) -> Option<OwnedSemaphorePermit> {
        self.requests.clone().try_acquire_owned().ok()
    }

    /// An empty reservation against `max_body_memory`, grown as bytes arrive.
    pub fn body_reservation(&self) -> BodyReservation {
        BodyReservation {
            budget: self.body.clone(),
            bytes: 0,
        }
    }

    /// Waits for a turn at heavy work (verify and parse a large body).
    pub async fn heavy_turn(&self) -> Option<OwnedSemaphorePermit> {
        self.heavy.clone().acquire_owned().await.ok()
    }

    /// Body bytes held now, across all requests.
    pub fn body_bytes_held(&self) -> usize {
        self.body.held.load(Ordering::Relaxed)
    }
}

/// Body bytes in memory across all requests, against a cap.
struct BodyBudget {
    limit: usize,
    held: AtomicUsize,
}

/// One request's share of the body budget; given back when dropped.
pub struct BodyReservation {
    budget: Arc<BodyBudget>,
    bytes: usize,
}

impl BodyReservation {
    /// Takes `n` more bytes, or refuses (taking nothing) when the cap would be passed.
    pub fn grow(&mut self, n: usize) -> bool {
        let taken = self
            .budget
            .held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                held.checked_add(n)
                    .filter(|total| *total <= self.budget.limit)
            })
            .is_ok();
        if taken {
            self.bytes += n;
        }
        taken
    }
}

impl Drop for BodyReservation {
    fn drop(&mut self) {
        self.budget.held.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_budget_refuses_past_its_cap_and_frees_on_drop() {
        let limits = LoadLimits::new(1, 100);
        let mut first = limits.body_reservation();
        assert!(first.grow(60));
        let mut second = limits.body_reservation();
        assert!(!second.grow(41), "60 + 41 is past 100");
        assert!(second.grow(40));
        assert_eq!(limits.body_bytes_held(), 100);
        drop(first);
        assert_eq!(limits.body_bytes_held(), 40);
        drop(second);
        assert_eq!(limits.body_bytes_held(), 0);
    }

    #[test]
    fn request_slots_run_out_and_come_back() {
        let limits = LoadLimits::new(2, 1);
        let a = limits.request_slot();
        let b = limits.request_slot();
        assert!(a.is_some() && b.is_some());
        assert!(limits.request_slot().is_none());
        drop(a);
        assert!(limits.request_slot().is_some());
    }
}
