//! Load shedding inside a request: the caps on requests in flight, on body
//! bytes held in memory across all requests, and on heavy work (verifying
//! and parsing large bodies) running at once. Past a cap the request is
//! answered 503 with `Retry-After` at once (see [`crate::error::Overload`]),
//! so the gateway never accepts work it cannot finish inside the ack budget.
//!
//! A quarter of the request and body caps is kept for small requests (a
//! declared body under `offload_body_bytes`, or a body that stays under it):
//! clients streaming large bodies slowly can fill three quarters at most, so
//! the small signed requests of real providers keep getting through.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The shared caps of one gateway.
pub struct LoadLimits {
    requests: Arc<SharedCap>,
    body: Arc<SharedCap>,
    /// Below this a request or body is small.
    small: usize,
    heavy: Arc<Semaphore>,
}

impl LoadLimits {
    pub fn new(max_requests: usize, max_body_bytes: usize, small_body: usize) -> Self {
        // Heavy work runs on blocking threads; more at once than cores only queues.
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        Self {
            requests: Arc::new(SharedCap::new(max_requests)),
            body: Arc::new(SharedCap::new(max_body_bytes)),
            small: small_body,
            heavy: Arc::new(Semaphore::new(cores)),
        }
    }

    /// A slot for one request, or `None` when the cap is reached; a request
    /// that may be large (declared length unknown or at least the small
    /// size) only gets one from the first three quarters.
    pub fn request_slot(&self, declared: Option<usize>) -> Option<Held> {
        let large = declared.is_none_or(|n| n >= self.small);
        let mut slot = Held {
            cap: self.requests.clone(),
            amount: 0,
        };
        slot.grow(1, large).then_some(slot)
    }

    /// An empty reservation against `max_body_memory`, grown as bytes arrive.
    pub fn body_reservation(&self) -> BodyReservation {
        BodyReservation {
            held: Held {
                cap: self.body.clone(),
                amount: 0,
            },
            small: self.small,
        }
    }

    /// Waits for a turn at heavy work (verify and parse a large body).
    pub async fn heavy_turn(&self) -> Option<OwnedSemaphorePermit> {
        self.heavy.clone().acquire_owned().await.ok()
    }

    /// Body bytes held now, across all requests.
    #[cfg(test)]
    pub fn body_bytes_held(&self) -> usize {
        self.body.held.load(Ordering::Relaxed)
    }
}

/// A cap shared by all requests, a quarter of it kept for small ones.
struct SharedCap {
    limit: usize,
    /// What large holders may reach together.
    large_limit: usize,
    held: AtomicUsize,
}

impl SharedCap {
    fn new(limit: usize) -> Self {
        Self {
            limit,
            large_limit: limit - limit / 4,
            held: AtomicUsize::new(0),
        }
    }
}

/// An amount taken from a [`SharedCap`]; given back when dropped.
pub struct Held {
    cap: Arc<SharedCap>,
    amount: usize,
}

impl Held {
    /// Takes `n` more, or refuses (taking nothing) when the cap would be passed.
    fn grow(&mut self, n: usize, large: bool) -> bool {
        let ceiling = if large {
            self.cap.large_limit
        } else {
            self.cap.limit
        };
        let taken = self
            .cap
            .held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                held.checked_add(n).filter(|total| *total <= ceiling)
            })
            .is_ok();
        if taken {
            self.amount += n;
        }
        taken
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.cap.held.fetch_sub(self.amount, Ordering::AcqRel);
    }
}

/// One request's share of the body budget; given back when dropped.
pub struct BodyReservation {
    held: Held,
    small: usize,
}

impl BodyReservation {
    /// Takes `n` more bytes, or refuses when the cap (three quarters of it
    /// for a body past the small size) would be passed.
    pub fn grow(&mut self, n: usize) -> bool {
        let large = self.held.amount + n >= self.small;
        self.held.grow(n, large)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_budget_refuses_past_its_cap_and_frees_on_drop() {
        let limits = LoadLimits::new(1, 100, 1000);
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
    fn large_bodies_leave_a_quarter_of_the_budget_to_small_ones() {
        let limits = LoadLimits::new(1, 1000, 100);
        let large: Vec<BodyReservation> = (0..10)
            .map(|_| limits.body_reservation())
            .filter_map(|mut r| r.grow(150).then_some(r))
            .collect();
        assert_eq!(large.len(), 5, "750 of 1,000 bytes for large bodies");
        let mut small = limits.body_reservation();
        assert!(small.grow(99), "a small body still fits");
        assert!(!small.grow(1), "but not once it grows large");
    }

    #[test]
    fn request_slots_run_out_and_keep_a_quarter_for_small_requests() {
        let limits = LoadLimits::new(4, 1, 100);
        let large: Vec<Held> = (0..4).filter_map(|_| limits.request_slot(None)).collect();
        assert_eq!(
            large.len(),
            3,
            "unknown or large bodies take three quarters"
        );
        let small = limits.request_slot(Some(10));
        assert!(small.is_some());
        assert!(limits.request_slot(Some(10)).is_none(), "all four taken");
        drop(small);
        assert!(limits.request_slot(Some(10)).is_some());
    }
}
