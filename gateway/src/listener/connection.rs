//! One connection's clock. The header-read and idle timeouts are kept here
//! rather than in hyper, because hyper runs one timer from the end of an
//! answer to the end of the next request's head, so it cannot tell a
//! kept-alive connection resting between requests (`idle_timeout`, long)
//! from a client dribbling a request head (`header_read_timeout`, short).
//!
//! A connection is in one of three phases: reading a head (from the accept,
//! or from the first byte after a rest), busy (a request is being handled),
//! or idle (answered, waiting for the next request). [`Watched`] marks the
//! first byte after a rest; the service marks busy and idle; [`watchdog`]
//! ends the connection when a head or a rest runs past its limit. A busy
//! connection is never cut here: the request's own deadlines bound it.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

const HEAD: u64 = 0;
const BUSY: u64 = 1;
const IDLE: u64 = 2;

/// Why the watchdog ended a connection (the `reason` label of
/// `sluice_gateway_connections_closed_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    HeaderTimeout,
    IdleTimeout,
}

impl Expired {
    pub fn label(self) -> &'static str {
        match self {
            Self::HeaderTimeout => "header_timeout",
            Self::IdleTimeout => "idle_timeout",
        }
    }
}

/// The connection's phase and since when, in one word: `millis << 2 | phase`.
pub struct Activity {
    born: Instant,
    state: AtomicU64,
}

impl Activity {
    /// A new connection: its first head is being read.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            born: Instant::now(),
            state: AtomicU64::new(HEAD),
        })
    }

    fn now(&self) -> u64 {
        u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX >> 2)
    }

    fn set(&self, phase: u64) {
        self.state.store(self.now() << 2 | phase, Ordering::Release);
    }

    /// Bytes arrived: after a rest, a new head starts now.
    fn on_read(&self) {
        let state = self.state.load(Ordering::Acquire);
        if state & 3 == IDLE {
            let head = self.now() << 2 | HEAD;
            let _ = self
                .state
                .compare_exchange(state, head, Ordering::AcqRel, Ordering::Acquire);
        }
    }

    /// A request's head is complete and it is being handled until the guard drops.
    pub fn busy(self: &Arc<Self>) -> BusyGuard {
        self.set(BUSY);
        BusyGuard(self.clone())
    }

    /// When the current phase runs out, and as what; `None` while busy.
    fn deadline(&self, header: Duration, idle: Duration) -> Option<(Instant, Expired)> {
        let state = self.state.load(Ordering::Acquire);
        let since = self.born + Duration::from_millis(state >> 2);
        match state & 3 {
            HEAD => Some((since + header, Expired::HeaderTimeout)),
            IDLE => Some((since + idle, Expired::IdleTimeout)),
            _ => None,
        }
    }
}

/// Marks the connection idle when the request's answer is ready.
pub struct BusyGuard(Arc<Activity>);

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.0.set(IDLE);
    }
}

/// Resolves when the connection has read a head, or rested, for too long.
pub async fn watchdog(activity: Arc<Activity>, header: Duration, idle: Duration) -> Expired {
    loop {
        match activity.deadline(header, idle) {
            Some((at, expired)) if Instant::now() >= at => return expired,
            Some((at, _)) => tokio::time::sleep_until(at).await,
            // Busy: look again later; the request's deadlines bound it.
            None => tokio::time::sleep(header).await,
        }
    }
}

/// A stream that tells its [`Activity`] when bytes arrive.
pub struct Watched<T> {
    inner: T,
    activity: Arc<Activity>,
}

impl<T> Watched<T> {
    pub fn new(inner: T, activity: Arc<Activity>) -> Self {
        Self { inner, activity }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.on_read();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: Duration = Duration::from_secs(5);
    const IDLE_FOR: Duration = Duration::from_secs(60);

    #[tokio::test(start_paused = true)]
    async fn a_head_that_never_completes_expires_after_the_header_timeout() {
        let activity = Activity::new();
        let started = Instant::now();
        let expired = watchdog(activity, HEADER, IDLE_FOR).await;
        assert_eq!(expired, Expired::HeaderTimeout);
        assert_eq!(started.elapsed(), HEADER);
    }

    #[tokio::test(start_paused = true)]
    async fn a_resting_connection_gets_the_idle_timeout_and_a_busy_one_none() {
        let activity = Activity::new();
        let guard = activity.busy();
        assert_eq!(activity.deadline(HEADER, IDLE_FOR), None);
        tokio::time::advance(Duration::from_secs(30)).await;
        drop(guard);
        let started = Instant::now();
        let expired = watchdog(activity.clone(), HEADER, IDLE_FOR).await;
        assert_eq!(expired, Expired::IdleTimeout);
        assert!(started.elapsed() >= IDLE_FOR - Duration::from_millis(1));
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_byte_after_a_rest_starts_a_new_head() {
        let activity = Activity::new();
        drop(activity.busy());
        tokio::time::advance(Duration::from_secs(10)).await;
        activity.on_read();
        let (at, expired) = activity.deadline(HEADER, IDLE_FOR).unwrap();
        assert_eq!(expired, Expired::HeaderTimeout);
        assert!(at <= Instant::now() + HEADER);
    }
}
