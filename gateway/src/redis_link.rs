//! The gateway's connection to Redis, replaced when it stops being useful.
//!
//! redis-rs's connection manager reconnects when the socket fails, but not
//! in two cases that leave every call failing for as long as they last:
//!
//! - **a silent connection**: the peer vanished without a FIN or RST (a
//!   dropped route, a failed-over address, a frozen VM). Calls time out one
//!   after another, and the kernel may keep the socket for many minutes;
//! - **a demoted primary**: after a failover the old primary answers every
//!   write with `READONLY`, on a connection that is perfectly healthy.
//!
//! So a [`RedisLink`] counts calls that timed out in a row and replaces its
//! connection manager after `redis.reconnect_after_timeouts` of them, or at
//! once on `READONLY`; the next call then connects anew (to whatever the
//! address names now). At most one replacement a second, so a Redis that
//! stays read-only is not hammered with connections. The sockets also use
//! TCP keepalive and `TCP_USER_TIMEOUT` (`redis.tcp_keepalive`), so an idle
//! connection to a vanished peer is closed by the kernel too. Each
//! replacement counts in `sluice_gateway_redis_reconnects_total`.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use redis::aio::ConnectionManagerConfig;
use redis::io::tcp::TcpSettings;
use redis::{ErrorKind, RedisError, ServerErrorKind};
use sluice_shared::config::RedisConfig;

use crate::redis_dial::{Dialer, RedisConnection};

/// The least time between two replacements.
const MIN_REPLACEMENT_GAP: Duration = Duration::from_secs(1);

/// Why a connection is replaced: the `reason` of
/// `sluice_gateway_redis_reconnects_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replaced {
    /// `reconnect_after_timeouts` calls in a row timed out.
    Timeouts,
    /// Redis answered `READONLY`: it is a replica now.
    ReadOnly,
    /// Sentinel mode: the primary refused or dropped the connection.
    Unreachable,
}

impl Replaced {
    pub const LABELS: &[&str] = &["timeouts", "read_only", "unreachable"];

    pub fn label(self) -> &'static str {
        match self {
            Self::Timeouts => "timeouts",
            Self::ReadOnly => "read_only",
            Self::Unreachable => "unreachable",
        }
    }
}

/// How one call through the link ended, as far as the link cares.
pub enum CallEnd<'a> {
    Answered,
    TimedOut,
    Failed(&'a RedisError),
}

/// A connection that is replaced when it stops being useful.
pub struct RedisLink {
    dialer: Dialer,
    config: ConnectionManagerConfig,
    /// The connection in use (`None`: dial at the next call) and its
    /// generation (bumped on each replacement).
    current: RwLock<(u64, Option<RedisConnection>)>,
    /// Held while dialing, so a burst of calls dials once.
    dialing: tokio::sync::Mutex<()>,
    timeouts_in_a_row: AtomicU32,
    reconnect_after: u32,
    last_replaced: Mutex<Option<Instant>>,
}

impl RedisLink {
    /// A lazy link: nothing connects before the first call.
    pub fn new(config: &RedisConfig) -> Result<Self, RedisError> {
        let dialer = Dialer::new(config, tcp_settings(config.tcp_keepalive))?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.timeout))
            .set_response_timeout(Some(config.timeout))
            .set_number_of_retries(1);
        let first = dialer.lazy(&manager_config)?;
        Ok(Self {
            dialer,
            config: manager_config,
            current: RwLock::new((0, first)),
            dialing: tokio::sync::Mutex::new(()),
            timeouts_in_a_row: AtomicU32::new(0),
            reconnect_after: config.reconnect_after_timeouts,
            last_replaced: Mutex::new(None),
        })
    }

    /// The connection to call now, with its generation for
    /// [`Self::record`]; dials first if there is none (sentinel and
    /// cluster modes, at the first call and after a replacement).
    pub async fn connection(&self) -> Result<(u64, RedisConnection), RedisError> {
        if let (generation, Some(connection)) = self.snapshot() {
            return Ok((generation, connection));
        }
        let _dialing = self.dialing.lock().await;
        let (generation, existing) = self.snapshot();
        if let Some(connection) = existing {
            return Ok((generation, connection));
        }
        let fresh = self.dialer.dial(&self.config).await?;
        let mut current = match self.current.write() {
            Ok(current) => current,
            Err(poisoned) => poisoned.into_inner(),
        };
        current.1 = Some(fresh.clone());
        Ok((current.0, fresh))
    }

    /// The generation now: what a call that got no connection counts against.
    pub fn generation(&self) -> u64 {
        self.snapshot().0
    }

    fn snapshot(&self) -> (u64, Option<RedisConnection>) {
        match self.current.read() {
            Ok(current) => current.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Notes how a call on generation `generation` ended; replaces the
    /// manager when that calls for it, and says why.
    pub fn record(&self, generation: u64, end: CallEnd<'_>) -> Option<Replaced> {
        let reason = match end {
            CallEnd::Answered => {
                self.timeouts_in_a_row.store(0, Ordering::Relaxed);
                return None;
            }
            CallEnd::Failed(error) if is_timeout(error) => self.count_timeout()?,
            CallEnd::TimedOut => self.count_timeout()?,
            CallEnd::Failed(error) if is_read_only(error) => Replaced::ReadOnly,
            CallEnd::Failed(error)
                if self.dialer.redials_on_lost_connection() && is_lost(error) =>
            {
                Replaced::Unreachable
            }
            CallEnd::Failed(_) => return None,
        };
        self.replace(generation, reason).then_some(reason)
    }

    fn count_timeout(&self) -> Option<Replaced> {
        let in_a_row = self.timeouts_in_a_row.fetch_add(1, Ordering::Relaxed) + 1;
        (in_a_row >= self.reconnect_after).then_some(Replaced::Timeouts)
    }

    /// Swaps in a fresh (lazy) connection, or none to dial at the next
    /// call, unless `generation` was already replaced or the last
    /// replacement is under a second old.
    fn replace(&self, generation: u64, reason: Replaced) -> bool {
        let mut current = match self.current.write() {
            Ok(current) => current,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut last = match self.last_replaced.lock() {
            Ok(last) => last,
            Err(poisoned) => poisoned.into_inner(),
        };
        if current.0 != generation || last.is_some_and(|at| at.elapsed() < MIN_REPLACEMENT_GAP) {
            return false;
        }
        let fresh = match self.dialer.lazy(&self.config) {
            Ok(fresh) => fresh,
            Err(e) => {
                tracing::warn!(error = %e, "cannot make a new Redis connection manager");
                return false;
            }
        };
        *current = (generation + 1, fresh);
        *last = Some(Instant::now());
        self.timeouts_in_a_row.store(0, Ordering::Relaxed);
        tracing::warn!(
            reason = reason.label(),
            "replacing the Redis connection (it timed out repeatedly, Redis is read-only, \
             or the primary went away)"
        );
        true
    }
}

/// Keepalive probes after `keepalive` idle, every `keepalive`, and
/// `TCP_USER_TIMEOUT` of three times it: a vanished peer is given up on
/// within about three probes, whether the connection is idle or has data
/// waiting for an acknowledgement.
fn tcp_settings(keepalive: std::time::Duration) -> TcpSettings {
    let probes = socket2::TcpKeepalive::new()
        .with_time(keepalive)
        .with_interval(keepalive);
    let settings = TcpSettings::default()
        .set_nodelay(true)
        .set_keepalive(probes);
    #[cfg(any(target_os = "android", target_os = "fuchsia", target_os = "linux"))]
    let settings = settings.set_user_timeout(keepalive.saturating_mul(3));
    settings
}

/// A response timeout inside redis-rs (an I/O error of kind `TimedOut`).
fn is_timeout(error: &RedisError) -> bool {
    error.is_timeout()
}

/// A refused, reset or closed connection.
fn is_lost(error: &RedisError) -> bool {
    error.is_connection_refusal() || error.is_connection_dropped() || error.is_io_error()
}

/// `READONLY`: the node is a replica now (a failover demoted it).
fn is_read_only(error: &RedisError) -> bool {
    matches!(error.kind(), ErrorKind::Server(ServerErrorKind::ReadOnly))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(reconnect_after: u32) -> RedisLink {
        let config = RedisConfig {
            url: "redis://127.0.0.1:1".into(),
            reconnect_after_timeouts: reconnect_after,
            ..RedisConfig::default()
        };
        RedisLink::new(&config).unwrap()
    }

    #[tokio::test]
    async fn the_connection_is_replaced_after_timeouts_in_a_row_only() {
        let link = link(3);
        let (generation, _) = link.connection().await.unwrap();
        assert_eq!(link.record(generation, CallEnd::TimedOut), None);
        assert_eq!(link.record(generation, CallEnd::TimedOut), None);
        assert_eq!(
            link.record(generation, CallEnd::Answered),
            None,
            "an answer resets the count"
        );
        assert_eq!(link.record(generation, CallEnd::TimedOut), None);
        assert_eq!(link.record(generation, CallEnd::TimedOut), None);
        assert_eq!(
            link.record(generation, CallEnd::TimedOut),
            Some(Replaced::Timeouts)
        );
        assert_eq!(link.connection().await.unwrap().0, generation + 1);
    }

    #[tokio::test]
    async fn read_only_replaces_at_once_but_not_twice_within_a_second() {
        let link = link(3);
        let read_only =
            RedisError::from((ErrorKind::Server(ServerErrorKind::ReadOnly), "READONLY"));
        let (generation, _) = link.connection().await.unwrap();
        assert_eq!(
            link.record(generation, CallEnd::Failed(&read_only)),
            Some(Replaced::ReadOnly)
        );
        let (next, _) = link.connection().await.unwrap();
        assert_eq!(link.record(next, CallEnd::Failed(&read_only)), None);
        let other = RedisError::from((ErrorKind::Server(ServerErrorKind::ResponseError), "ERR"));
        assert_eq!(link.record(next, CallEnd::Failed(&other)), None);
    }
}
