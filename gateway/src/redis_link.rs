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

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::io::tcp::TcpSettings;
use redis::{ErrorKind, IntoConnectionInfo, RedisError, ServerErrorKind};
use sluice_shared::config::RedisConfig;

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
}

impl Replaced {
    pub const LABELS: &[&str] = &["timeouts", "read_only"];

    pub fn label(self) -> &'static str {
        match self {
            Self::Timeouts => "timeouts",
            Self::ReadOnly => "read_only",
        }
    }
}

/// How one call through the link ended, as far as the link cares.
pub enum CallEnd<'a> {
    Answered,
    TimedOut,
    Failed(&'a RedisError),
}

/// A connection manager that is replaced when it stops being useful.
pub struct RedisLink {
    client: redis::Client,
    config: ConnectionManagerConfig,
    /// The manager in use and its generation (bumped on each replacement).
    current: RwLock<(u64, ConnectionManager)>,
    timeouts_in_a_row: AtomicU32,
    reconnect_after: u32,
    last_replaced: Mutex<Option<Instant>>,
}

impl RedisLink {
    /// A lazy link: nothing connects before the first call.
    pub fn new(config: &RedisConfig) -> Result<Self, RedisError> {
        let info = config
            .url
            .as_str()
            .into_connection_info()?
            .set_tcp_settings(tcp_settings(config.tcp_keepalive));
        let client = redis::Client::open(info)?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.timeout))
            .set_response_timeout(Some(config.timeout))
            .set_number_of_retries(1);
        let manager =
            ConnectionManager::new_lazy_with_config(client.clone(), manager_config.clone())?;
        Ok(Self {
            client,
            config: manager_config,
            current: RwLock::new((0, manager)),
            timeouts_in_a_row: AtomicU32::new(0),
            reconnect_after: config.reconnect_after_timeouts,
            last_replaced: Mutex::new(None),
        })
    }

    /// The manager to call now, with its generation for [`Self::record`].
    pub fn connection(&self) -> (u64, ConnectionManager) {
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
            CallEnd::Failed(_) => return None,
        };
        self.replace(generation, reason).then_some(reason)
    }

    fn count_timeout(&self) -> Option<Replaced> {
        let in_a_row = self.timeouts_in_a_row.fetch_add(1, Ordering::Relaxed) + 1;
        (in_a_row >= self.reconnect_after).then_some(Replaced::Timeouts)
    }

    /// Swaps in a fresh (lazy) manager, unless `generation` was already
    /// replaced or the last replacement is under a second old.
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
        let manager = self.config.clone();
        let fresh = match ConnectionManager::new_lazy_with_config(self.client.clone(), manager) {
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
            "replacing the Redis connection (it timed out repeatedly, or Redis is read-only)"
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
        let (generation, _) = link.connection();
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
        assert_eq!(link.connection().0, generation + 1);
    }

    #[tokio::test]
    async fn read_only_replaces_at_once_but_not_twice_within_a_second() {
        let link = link(3);
        let read_only =
            RedisError::from((ErrorKind::Server(ServerErrorKind::ReadOnly), "READONLY"));
        let (generation, _) = link.connection();
        assert_eq!(
            link.record(generation, CallEnd::Failed(&read_only)),
            Some(Replaced::ReadOnly)
        );
        let (next, _) = link.connection();
        assert_eq!(link.record(next, CallEnd::Failed(&read_only)), None);
        let other = RedisError::from((ErrorKind::Server(ServerErrorKind::ResponseError), "ERR"));
        assert_eq!(link.record(next, CallEnd::Failed(&other)), None);
    }
}
