//! How the gateway reaches Redis in each `redis.mode`, all through
//! redis-rs's own support: one server through a connection manager; a
//! Sentinel-watched primary by asking the sentinels for its address, then
//! a connection manager to it (asked again whenever the link is replaced,
//! which is how a failover is followed); a Redis Cluster through redis-rs's
//! cluster connection, which follows `MOVED`, slot migrations and replica
//! promotions by itself.

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::io::tcp::TcpSettings;
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{Cmd, IntoConnectionInfo, Pipeline, RedisError, RedisFuture, Value};
use sluice_shared::config::{RedisConfig, RedisMode};

/// A connection of any mode; cheap to clone (all share one socket set).
#[derive(Clone)]
pub enum RedisConnection {
    /// Single or sentinel mode.
    Manager(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Manager(manager) => manager.req_packed_command(cmd),
            Self::Cluster(cluster) => cluster.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Manager(manager) => manager.req_packed_commands(pipeline, offset, count),
            Self::Cluster(cluster) => cluster.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Manager(manager) => manager.get_db(),
            Self::Cluster(cluster) => cluster.get_db(),
        }
    }
}

/// What makes a new connection in the configured mode.
pub enum Dialer {
    Single(redis::Client),
    /// The sentinels are asked for the primary at each dial.
    Sentinel(tokio::sync::Mutex<SentinelClient>),
    Cluster(ClusterClient),
}

impl Dialer {
    /// Reads the configured mode; connects nothing yet.
    pub fn new(config: &RedisConfig, tcp: TcpSettings) -> Result<Self, RedisError> {
        match config.mode {
            RedisMode::Single => {
                let info = config.url.as_str().into_connection_info()?;
                Ok(Self::Single(redis::Client::open(
                    info.set_tcp_settings(tcp),
                )?))
            }
            RedisMode::Sentinel => {
                // The primary's user, password and db come from `redis.url`.
                let data = config.url.as_str().into_connection_info()?;
                let node = SentinelNodeConnectionInfo::default()
                    .set_redis_connection_info(data.redis_settings().clone())
                    .set_tcp_settings(tcp);
                let master = config.master_name.clone().unwrap_or_default();
                let sentinels: Vec<&str> = config.sentinels.iter().map(String::as_str).collect();
                let client = SentinelClient::build(
                    sentinels,
                    master,
                    Some(node),
                    SentinelServerType::Master,
                )?;
                Ok(Self::Sentinel(tokio::sync::Mutex::new(client)))
            }
            RedisMode::Cluster => {
                let nodes: Vec<&str> = config.nodes.iter().map(String::as_str).collect();
                let client = ClusterClient::builder(nodes)
                    .connection_timeout(config.timeout)
                    .response_timeout(config.timeout)
                    .tcp_settings(tcp)
                    .build()?;
                Ok(Self::Cluster(client))
            }
        }
    }

    /// A connection usable at once, without I/O: only in single mode.
    pub fn lazy(
        &self,
        manager: &ConnectionManagerConfig,
    ) -> Result<Option<RedisConnection>, RedisError> {
        match self {
            Self::Single(client) => Ok(Some(RedisConnection::Manager(
                ConnectionManager::new_lazy_with_config(client.clone(), manager.clone())?,
            ))),
            Self::Sentinel(_) | Self::Cluster(_) => Ok(None),
        }
    }

    /// A new connection: asks the sentinels where the primary is now, or
    /// connects to the cluster's seeds and reads its slot map.
    pub async fn dial(
        &self,
        manager: &ConnectionManagerConfig,
    ) -> Result<RedisConnection, RedisError> {
        match self {
            Self::Single(client) => Ok(RedisConnection::Manager(
                ConnectionManager::new_lazy_with_config(client.clone(), manager.clone())?,
            )),
            Self::Sentinel(sentinels) => {
                let primary = sentinels.lock().await.async_get_client().await?;
                Ok(RedisConnection::Manager(
                    ConnectionManager::new_lazy_with_config(primary, manager.clone())?,
                ))
            }
            Self::Cluster(client) => Ok(RedisConnection::Cluster(
                client.get_async_connection().await?,
            )),
        }
    }

    /// Whether a lost connection calls for a new dial: in sentinel mode a
    /// refused or dropped connection is most likely a primary that died,
    /// and the manager would only knock on its door again. One server has
    /// nowhere else to go, and a cluster connection finds the new primary
    /// itself.
    pub fn redials_on_lost_connection(&self) -> bool {
        matches!(self, Self::Sentinel(_))
    }
}

/// Indexes of `keys` grouped by Redis Cluster hash slot, in first-seen
/// order: a script or pipeline may only touch keys of one slot, so in
/// cluster mode each group is one call.
pub fn slot_groups<'a>(keys: impl Iterator<Item = &'a str>) -> Vec<Vec<usize>> {
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut by_slot = std::collections::HashMap::new();
    for (index, key) in keys.enumerate() {
        let slot = redis::cluster_routing::Slot::for_key(key);
        let group = *by_slot.entry(slot).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[group].push(index);
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::slot_groups;

    #[test]
    fn keys_of_one_slot_share_a_group_and_order_is_kept() {
        // `{a}x` and `{a}y` hash only `a`: one slot, whatever follows.
        let keys = ["{a}x", "b", "{a}y", "c"];
        let groups = slot_groups(keys.iter().copied());
        assert_eq!(groups[0], vec![0, 2]);
        assert_eq!(groups.iter().map(Vec::len).sum::<usize>(), 4);
        let flat: Vec<usize> = groups.concat();
        let mut sorted = flat.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, vec![0, 1, 2, 3], "every key in exactly one group");
    }
}
