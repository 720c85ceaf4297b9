//! Broker clusters built from private nodes on loopback, for the tests
//! that kill a node of one: three RabbitMQ nodes joined into a cluster,
//! a Redis primary with two replicas and three sentinels, and a
//! three-primary Redis Cluster. Every process stops when its value drops.

use std::time::Duration;

use super::private::{PrivateRabbit, PrivateRedis};

/// Three RabbitMQ nodes in one cluster.
pub struct RabbitCluster {
    pub nodes: Vec<PrivateRabbit>,
}

impl RabbitCluster {
    /// Starts three nodes and joins the second and third to the first.
    pub async fn start() -> Self {
        let (a, b, c) = tokio::join!(
            PrivateRabbit::start(),
            PrivateRabbit::start(),
            PrivateRabbit::start()
        );
        tokio::join!(b.join(&a), c.join(&a));
        let cluster = Self {
            nodes: vec![a, b, c],
        };
        let status = cluster.nodes[0].ctl(&["cluster_status"]).await;
        for node in &cluster.nodes {
            assert!(status.contains(node.node()), "{status}");
        }
        cluster
    }

    /// Every node's AMQP URL, as `amqp.urls` lists them.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(PrivateRabbit::url).collect()
    }

    /// The index of the node that leads `queue`, asked of node `ask`.
    pub async fn leader_of(&self, queue: &str, ask: usize) -> usize {
        let listing = self.nodes[ask]
            .ctl(&["list_queues", "name", "leader", "--formatter", "json"])
            .await;
        let queues: Vec<serde_json::Value> = serde_json::from_str(&listing).expect("json");
        let leader = queues
            .iter()
            .find(|q| q["name"] == queue)
            .and_then(|q| q["leader"].as_str())
            .unwrap_or_else(|| panic!("{queue} has no leader in {listing}"));
        self.nodes
            .iter()
            .position(|node| node.node() == leader)
            .expect("the leader is one of ours")
    }
}

/// The name the sentinels watch the primary under.
pub const SENTINEL_MASTER: &str = "sluice-e2e";

/// A Redis primary, two replicas and three sentinels.
pub struct SentinelSet {
    pub servers: Vec<PrivateRedis>,
    pub sentinels: Vec<PrivateRedis>,
}

impl SentinelSet {
    pub async fn start() -> Self {
        let primary = PrivateRedis::start().await;
        let (a, b) = tokio::join!(PrivateRedis::start(), PrivateRedis::start());
        a.replica_of(primary.port).await;
        b.replica_of(primary.port).await;
        let mut sentinels = Vec::new();
        for _ in 0..3 {
            sentinels.push(PrivateRedis::start_sentinel(SENTINEL_MASTER, primary.port).await);
        }
        let set = Self {
            servers: vec![primary, a, b],
            sentinels,
        };
        // Sentinels find each other and the replicas through the primary.
        let known = super::eventually(Duration::from_secs(30), || async {
            let answer = cli(
                set.sentinels[0].port,
                &["sentinel", "sentinels", SENTINEL_MASTER],
            );
            let replicas = cli(
                set.sentinels[0].port,
                &["sentinel", "replicas", SENTINEL_MASTER],
            );
            answer.matches("127.0.0.1").count() >= 2 && replicas.matches("127.0.0.1").count() >= 2
        })
        .await;
        assert!(
            known,
            "the sentinels did not find each other and the replicas"
        );
        set
    }

    /// `redis://127.0.0.1:<port>` of each sentinel.
    pub fn sentinel_urls(&self) -> Vec<String> {
        self.sentinels.iter().map(PrivateRedis::url).collect()
    }

    /// The port of the primary the sentinels name now.
    pub fn primary_port(&self) -> u16 {
        let answer = cli(
            self.sentinels[0].port,
            &["sentinel", "get-master-addr-by-name", SENTINEL_MASTER],
        );
        answer
            .lines()
            .nth(1)
            .and_then(|port| port.trim().parse().ok())
            .unwrap_or_else(|| panic!("no primary in {answer:?}"))
    }

    /// The server on `port`.
    pub fn server(&self, port: u16) -> &PrivateRedis {
        self.servers
            .iter()
            .find(|s| s.port == port)
            .expect("one of ours")
    }
}

/// Three Redis Cluster primaries sharing the 16,384 slots, and maybe
/// replicas of them.
pub struct RedisClusterSet {
    pub nodes: Vec<PrivateRedis>,
}

impl RedisClusterSet {
    /// Three primaries, no replica.
    pub async fn start() -> Self {
        Self::start_with_replicas(0).await
    }

    /// Three primaries with `replicas` replicas each (`redis-cli --cluster
    /// create --cluster-replicas`): a primary that dies is replaced by a
    /// replica of its own once the others find it down (`cluster-node-timeout`
    /// 2 s). Waits until every slot is served and every replica in sync.
    pub async fn start_with_replicas(replicas: usize) -> Self {
        let mut nodes = Vec::new();
        for _ in 0..3 * (1 + replicas) {
            nodes.push(PrivateRedis::start_cluster_node().await);
        }
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let output = std::process::Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", &replicas.to_string()])
            .arg("--cluster-yes")
            .output()
            .expect("redis-cli runs");
        assert!(
            output.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&output.stdout)
        );
        let set = Self { nodes };
        let ok = super::eventually(Duration::from_secs(30), || async {
            let first = set.nodes[0].port;
            set.nodes
                .iter()
                .all(|n| cli(n.port, &["cluster", "info"]).contains("cluster_state:ok"))
                && set.primaries(first).len() == 3
                && set.nodes.iter().all(|n| {
                    let replication = cli(n.port, &["info", "replication"]);
                    replication.contains("role:master")
                        || replication.contains("master_link_status:up")
                })
        })
        .await;
        assert!(
            ok,
            "the Redis Cluster did not reach cluster_state:ok with every replica in sync"
        );
        set
    }

    /// The ports of the primaries serving slots, as the node on `ask` sees them.
    pub fn primaries(&self, ask: u16) -> Vec<u16> {
        cluster_nodes(ask)
            .into_iter()
            .filter(|n| n.flags.contains("master") && !n.flags.contains("fail") && n.serves_slots)
            .map(|n| n.port)
            .collect()
    }

    /// The ports of the replicas of the primary on `primary`, as the node on
    /// `ask` sees them.
    pub fn replicas_of(&self, primary: u16, ask: u16) -> Vec<u16> {
        let nodes = cluster_nodes(ask);
        let Some(id) = nodes
            .iter()
            .find(|n| n.port == primary)
            .map(|n| n.id.clone())
        else {
            return Vec::new();
        };
        nodes
            .into_iter()
            .filter(|n| n.flags.contains("slave") && n.primary_id == id)
            .map(|n| n.port)
            .collect()
    }

    /// The node on `port`.
    pub fn node(&self, port: u16) -> &PrivateRedis {
        self.nodes
            .iter()
            .find(|n| n.port == port)
            .expect("one of ours")
    }

    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(PrivateRedis::url).collect()
    }

    /// How many keys starting with `prefix` each node holds.
    pub fn keys_per_node(&self, prefix: &str) -> Vec<usize> {
        let pattern = format!("{prefix}*");
        self.nodes
            .iter()
            .map(|n| {
                cli(n.port, &["--scan", "--pattern", &pattern])
                    .lines()
                    .count()
            })
            .collect()
    }
}

/// One line of `CLUSTER NODES`.
struct ClusterNode {
    id: String,
    port: u16,
    /// `myself,master`, `slave`, `master,fail`...
    flags: String,
    /// The primary's id, for a replica (`-` for a primary).
    primary_id: String,
    serves_slots: bool,
}

/// `CLUSTER NODES` as the node on `ask` sees the cluster.
fn cluster_nodes(ask: u16) -> Vec<ClusterNode> {
    cli(ask, &["cluster", "nodes"])
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // <id> <ip:port@bus> <flags> <primary> <ping> <pong> <epoch> <link> <slot>...
            let address = fields.get(1)?;
            let port = address
                .split('@')
                .next()?
                .rsplit(':')
                .next()?
                .parse()
                .ok()?;
            Some(ClusterNode {
                id: (*fields.first()?).to_owned(),
                port,
                flags: (*fields.get(2)?).to_owned(),
                primary_id: (*fields.get(3)?).to_owned(),
                serves_slots: fields.len() > 8,
            })
        })
        .collect()
}

/// `redis-cli -p <port> args`: its standard output.
pub fn cli(port: u16, args: &[&str]) -> String {
    let output = std::process::Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli runs");
    String::from_utf8_lossy(&output.stdout).into_owned()
}
