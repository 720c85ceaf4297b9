//! Connecting to RabbitMQ, with a time limit (lapin has none of its own)
//! and a heartbeat, so a broker that goes silent without closing the
//! connection (a dropped route, a frozen VM) is noticed: lapin closes a
//! connection that heard nothing for two heartbeats.
//!
//! A RabbitMQ cluster is reached through [`AmqpNodes`]: the nodes of
//! `amqp.urls` in an order shuffled once per process, so that many gateways
//! and workers spread over the nodes. A connect tries them in turn from the
//! one after the node last connected to, so a process that lost its node
//! reconnects to the next one rather than waiting for the lost one.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use lapin::types::LongString;
use lapin::uri::AMQPUri;
use lapin::{Channel, Connection, ConnectionProperties};

/// The heartbeat of [`connect`]: `amqp.heartbeat`'s default.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(10);

/// Why a connection or channel could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(
        "RabbitMQ did not answer within {0:?}: is it running at the configured amqp.url (or amqp.urls)?"
    )]
    Timeout(Duration),
    #[error(
        "cannot connect to RabbitMQ (check amqp.url or amqp.urls and that the broker runs): {0}"
    )]
    Broker(#[from] lapin::Error),
    #[error(
        "amqp.url is not a usable AMQP URL ({0}): write it as amqp://user:pass@host:port/vhost"
    )]
    Url(String),
}

/// The nodes of one RabbitMQ cluster (one for `amqp.url`), in this
/// process's order. Clones share the place of the next node to try.
#[derive(Debug, Clone)]
pub struct AmqpNodes {
    urls: Arc<[String]>,
    /// Index (modulo the count) of the node a connect tries first.
    next: Arc<AtomicUsize>,
}

impl AmqpNodes {
    /// One node: what `amqp.url` gives.
    pub fn single(url: impl Into<String>) -> Self {
        Self {
            urls: Arc::from(vec![url.into()]),
            next: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// The nodes of `urls` in an order of this process's own, so that
    /// processes started together spread over the nodes; `None` if empty.
    pub fn shuffled(mut urls: Vec<String>) -> Option<Self> {
        let mut state = RandomState::new().build_hasher();
        state.write_u32(std::process::id());
        let mut seed = state.finish() | 1;
        // Fisher-Yates with xorshift: even spread, no crate needed for it.
        for i in (1..urls.len()).rev() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let j = usize::try_from(seed % (i as u64 + 1)).unwrap_or(0);
            urls.swap(i, j);
        }
        (!urls.is_empty()).then(|| Self {
            urls: Arc::from(urls),
            next: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// How many nodes there are.
    pub fn len(&self) -> usize {
        self.urls.len()
    }

    /// Never true: a list of nodes holds at least one.
    pub fn is_empty(&self) -> bool {
        self.urls.is_empty()
    }

    /// The nodes in the order a connect now tries them.
    fn in_turn(&self) -> impl Iterator<Item = (usize, &str)> {
        let start = self.next.load(Ordering::Relaxed);
        let count = self.urls.len();
        (0..count).map(move |offset| {
            let index = (start + offset) % count;
            (index, self.urls[index].as_str())
        })
    }

    /// The nodes with their passwords hidden, for logs.
    pub fn redacted(&self) -> String {
        let urls: Vec<String> = self.urls.iter().map(|url| redact_url(url)).collect();
        urls.join(", ")
    }
}

impl Default for AmqpNodes {
    fn default() -> Self {
        Self::single("amqp://guest:guest@127.0.0.1:5672/%2f")
    }
}

/// Opens a connection named `name` (shown in the RabbitMQ management UI)
/// with the default heartbeat.
pub async fn connect(
    nodes: &AmqpNodes,
    name: &str,
    limit: Duration,
) -> Result<Connection, ConnectError> {
    connect_with_heartbeat(nodes, name, limit, DEFAULT_HEARTBEAT).await
}

/// Opens a connection named `name@host` to the first of `nodes` that
/// answers, trying each within `limit`, asking for `heartbeat` (whole
/// seconds, at least 1; it replaces any `heartbeat=` in a URL). The
/// connection uses the lower of this and the broker's proposal (RabbitMQ's
/// default is 60 s). The next connect starts at the node after this one.
pub async fn connect_with_heartbeat(
    nodes: &AmqpNodes,
    name: &str,
    limit: Duration,
    heartbeat: Duration,
) -> Result<Connection, ConnectError> {
    let name = format!("{name}@{}", host_name());
    let mut last_error = ConnectError::Url("no node given".into());
    for (index, url) in nodes.in_turn() {
        match connect_node(url, &name, limit, heartbeat).await {
            Ok(connection) => {
                nodes.next.store(index + 1, Ordering::Relaxed);
                let node = redact_url(url);
                tracing::debug!(%node, connection = %name, "RabbitMQ node took the connection");
                return Ok(connection);
            }
            Err(error) => {
                if nodes.len() > 1 {
                    let node = redact_url(url);
                    tracing::warn!(%node, %error, "RabbitMQ node did not take the connection; trying the next");
                }
                last_error = error;
            }
        }
    }
    Err(last_error)
}

/// Connects to one node.
async fn connect_node(
    url: &str,
    name: &str,
    limit: Duration,
    heartbeat: Duration,
) -> Result<Connection, ConnectError> {
    let mut uri: AMQPUri = url
        .parse()
        .map_err(|e: String| ConnectError::Url(e.replace(url, &redact_url(url))))?;
    let seconds = u16::try_from(heartbeat.as_secs())
        .unwrap_or(u16::MAX)
        .max(1);
    uri.query.heartbeat = Some(seconds);
    let properties = ConnectionProperties::default().with_connection_name(LongString::from(name));
    tokio::time::timeout(limit, Connection::connect_uri(uri, properties))
        .await
        .map_err(|_| ConnectError::Timeout(limit))?
        .map_err(ConnectError::Broker)
}

/// This machine's name (a pod's name in Kubernetes), for connection names:
/// the management UI then tells which process holds which connection.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "unknown-host".into())
}

/// Opens a channel in confirm mode: every publish on it gets an ack or nack.
pub async fn confirm_channel(connection: &Connection) -> Result<Channel, lapin::Error> {
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(lapin::options::ConfirmSelectOptions::default())
        .await?;
    Ok(channel)
}

/// The URL with its password replaced, for logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::{AmqpNodes, redact_url};

    #[test]
    fn a_shuffle_keeps_every_node_once() {
        let urls: Vec<String> = (1..=5).map(|n| format!("amqp://node{n}")).collect();
        let nodes = AmqpNodes::shuffled(urls.clone()).expect("not empty");
        let mut seen: Vec<String> = nodes.in_turn().map(|(_, url)| url.to_owned()).collect();
        seen.sort();
        assert_eq!(seen, urls);
        assert!(AmqpNodes::shuffled(Vec::new()).is_none());
    }

    #[test]
    fn a_connect_starts_after_the_node_last_connected_to() {
        let nodes = AmqpNodes::shuffled(vec!["a".into(), "b".into(), "c".into()]).expect("nodes");
        let order: Vec<usize> = nodes.in_turn().map(|(index, _)| index).collect();
        nodes
            .next
            .store(order[0] + 1, std::sync::atomic::Ordering::Relaxed);
        let after: Vec<usize> = nodes.in_turn().map(|(index, _)| index).collect();
        assert_eq!(after[0], (order[0] + 1) % 3, "the next node first");
        assert_eq!(after[2], order[0], "the lost node last");
    }

    #[tokio::test]
    async fn a_dead_node_is_skipped_for_the_next() {
        // Port 1 refuses at once; the second "node" is not a URL at all, so
        // reaching it proves the first was skipped, not retried.
        let nodes = AmqpNodes {
            urls: std::sync::Arc::from(vec![
                "amqp://127.0.0.1:1/%2f".to_owned(),
                "not a url".to_owned(),
            ]),
            next: Default::default(),
        };
        let limit = std::time::Duration::from_secs(2);
        let error = super::connect(&nodes, "test", limit)
            .await
            .expect_err("no broker");
        assert!(matches!(error, super::ConnectError::Url(_)), "{error}");
    }

    #[test]
    fn passwords_never_reach_a_log() {
        assert_eq!(
            redact_url("amqp://guest:guest@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
        assert_eq!(redact_url("amqp://127.0.0.1"), "amqp://127.0.0.1");
    }
}
