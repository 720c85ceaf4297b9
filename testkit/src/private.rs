//! Brokers a test may stop and start: a private RabbitMQ node and a private
//! Redis on ports of their own, never the shared ones.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// A free TCP port in `range`, also free at `port + offset` for each of
/// `offsets` (which may be negative), and never one this process handed out before: tests run side
/// by side, and a server started by one may not have bound its port yet
/// when another looks.
fn free_port(range: std::ops::Range<u16>, offsets: &[i32]) -> u16 {
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    let seed = u16::try_from(std::process::id() % 1000).unwrap_or(0);
    let span = range.end - range.start;
    let port = (0..span)
        .map(|i| range.start + (seed * 7 + i) % span)
        .find(|&p| {
            !handed_out.contains(&p)
                && [0].iter().chain(offsets).all(|offset| {
                    u16::try_from(i32::from(p) + offset)
                        .is_ok_and(|q| std::net::TcpListener::bind(("0.0.0.0", q)).is_ok())
                })
        })
        .expect("a free port");
    handed_out.push(port);
    port
}

/// How a private RabbitMQ node differs from a plain one.
#[derive(Debug, Default, Clone, Copy)]
pub struct RabbitOptions {
    /// Serve the management API (on [`PrivateRabbit::management_url`]).
    pub management: bool,
    /// Boot with every feature flag but `stream_queue`, as a node upgraded
    /// to 3.10 without enabling its new flags would be.
    pub without_stream_queue: bool,
}

/// The feature flags of a 3.10 node booted [`RabbitOptions::without_stream_queue`].
const FLAGS_WITHOUT_STREAM_QUEUE: &str = "quorum_queue,implicit_default_bindings,virtual_host_metadata,maintenance_mode_status,user_limits";

/// A RabbitMQ node of the test's own (the recipe in docs/testing.md).
pub struct PrivateRabbit {
    pub port: u16,
    node: String,
    dir: tempfile::TempDir,
    options: RabbitOptions,
}

/// The management API's port is the AMQP port plus this.
const MANAGEMENT_OFFSET: u16 = 10000;

/// The Erlang distribution port is the AMQP port minus this: 10000..13000,
/// below the kernel's ephemeral range (32768 and up), where an outgoing
/// connection of another test could take it between our check and the boot.
const DIST_BELOW: u16 = 6000;

/// How many fresh ports a first start tries before it gives up.
const START_TRIES: usize = 3;

impl PrivateRabbit {
    pub async fn start() -> Self {
        Self::start_with(RabbitOptions::default()).await
    }

    pub async fn start_with(options: RabbitOptions) -> Self {
        let mut failures = Vec::new();
        for _ in 0..START_TRIES {
            let port = free_port(
                16000..19000,
                &[i32::from(MANAGEMENT_OFFSET), -i32::from(DIST_BELOW)],
            );
            let dir = tempfile::tempdir().expect("temp dir");
            let node = format!("sluice-e2e-{port}@localhost");
            let rabbit = Self {
                port,
                node,
                dir,
                options,
            };
            // rabbitmq-server switches to the rabbitmq user when run as root.
            let status = Command::new("chown")
                .args(["-R", "rabbitmq:rabbitmq"])
                .arg(rabbit.dir.path())
                .status()
                .expect("chown runs");
            assert!(status.success(), "chown of the private RabbitMQ dir failed");
            match rabbit.try_boot().await {
                Ok(()) => return rabbit,
                // Dropping it stops whatever half started.
                Err(failure) => failures.push(failure),
            }
        }
        panic!(
            "no private RabbitMQ started in {START_TRIES} tries:\n{}",
            failures.join("\n")
        );
    }

    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// The management API's address (when started with it).
    pub fn management_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port + MANAGEMENT_OFFSET)
    }

    /// Enables a feature flag, as an operator would.
    pub async fn enable_feature_flag(&self, flag: &str) {
        self.ctl(&["enable_feature_flag", flag]).await;
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Starts the node (again) on the same data and waits until it answers.
    pub async fn boot(&self) {
        if let Err(failure) = self.try_boot().await {
            panic!("{failure}");
        }
    }

    /// Starts the node and waits until it answers; the error names the node
    /// and ends with the last lines of its log.
    async fn try_boot(&self) -> Result<(), String> {
        // The machine's /etc/rabbitmq/rabbitmq.conf may pin the shared node's
        // listener, which would override RABBITMQ_NODE_PORT: use a config of our own.
        let mut config = format!("listeners.tcp.default = 127.0.0.1:{}\n", self.port);
        let mut plugins = "[].\n";
        if self.options.management {
            let port = self.port + MANAGEMENT_OFFSET;
            config.push_str(&format!(
                "management.tcp.ip = 127.0.0.1\nmanagement.tcp.port = {port}\n"
            ));
            plugins = "[rabbitmq_management].\n";
        }
        std::fs::write(self.path("rabbitmq.conf"), config).expect("private rabbitmq.conf");
        std::fs::write(self.path("enabled_plugins"), plugins).expect("private enabled_plugins");
        let mut server = Command::new("rabbitmq-server");
        if self.options.without_stream_queue {
            // Read on the node's first boot only: the flags it starts with.
            server.env("RABBITMQ_FEATURE_FLAGS", FLAGS_WITHOUT_STREAM_QUEUE);
        }
        let status = server
            .arg("-detached")
            .env("RABBITMQ_NODENAME", &self.node)
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", (self.port - DIST_BELOW).to_string())
            .env("RABBITMQ_MNESIA_BASE", self.path("mnesia"))
            .env("RABBITMQ_LOG_BASE", self.path("log"))
            .env(
                "RABBITMQ_ENABLED_PLUGINS_FILE",
                self.path("enabled_plugins"),
            )
            .env("RABBITMQ_CONFIG_FILE", self.path("rabbitmq.conf"))
            .status()
            .expect("rabbitmq-server runs");
        if !status.success() {
            return Err(format!(
                "rabbitmq-server -detached failed for {}",
                self.node
            ));
        }
        let up = super::eventually(Duration::from_secs(90), || async {
            let ok = tokio::process::Command::new("rabbitmqctl")
                .args(["-n", &self.node, "await_startup", "--timeout", "5"])
                .output()
                .await
                .is_ok_and(|o| o.status.success());
            let management = self.port + MANAGEMENT_OFFSET;
            ok && std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
                && (!self.options.management
                    || std::net::TcpStream::connect(("127.0.0.1", management)).is_ok())
        })
        .await;
        if up {
            return Ok(());
        }
        Err(format!(
            "the private RabbitMQ {} did not start in 90 s; its log ends:\n{}",
            self.node,
            self.log_tail(30)
        ))
    }

    /// The last `lines` lines of the node's log (or why there are none).
    fn log_tail(&self, lines: usize) -> String {
        let path = self.path("log").join(format!("{}.log", self.node));
        match std::fs::read_to_string(&path) {
            Ok(log) => {
                let all: Vec<&str> = log.lines().collect();
                all[all.len().saturating_sub(lines)..].join("\n")
            }
            Err(e) => format!("(no log at {}: {e})", path.display()),
        }
    }

    /// Sets off (or clears) a memory alarm: `rabbitmqctl
    /// set_vm_memory_high_watermark` to almost nothing (or back to the
    /// default 0.4). Under the alarm RabbitMQ blocks every publishing
    /// connection: it stops reading from it, so nothing published is
    /// confirmed until the alarm clears. Waits until the alarm is as asked.
    pub async fn memory_alarm(&self, on: bool) {
        let watermark = if on { "0.0000001" } else { "0.4" };
        self.ctl(&["set_vm_memory_high_watermark", watermark]).await;
        let settled = super::eventually(Duration::from_secs(30), || async {
            let alarms = self.ctl(&["eval", "rabbit_alarm:get_alarms()."]).await;
            alarms.contains("memory") == on
        })
        .await;
        assert!(
            settled,
            "the private RabbitMQ's memory alarm did not turn {on}"
        );
    }

    /// The Erlang node name, `sluice-e2e-<port>@localhost`.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Joins the cluster of `seed` (the recipe in docs/testing.md): all
    /// private nodes run as the rabbitmq user, so they share its cookie.
    pub async fn join(&self, seed: &PrivateRabbit) {
        self.ctl(&["stop_app"]).await;
        self.ctl(&["join_cluster", seed.node()]).await;
        self.ctl(&["start_app"]).await;
        self.ctl(&["await_startup", "--timeout", "60"]).await;
    }

    /// `kill -9` of the node's Erlang VM: a crash, not a shutdown. Returns
    /// when the signal went (asking the node its pid takes most of a second).
    pub async fn kill(&self) -> std::time::Instant {
        let pid = self.ctl(&["eval", "os:getpid()."]).await;
        let pid = pid.trim().trim_matches('"');
        let killed_at = std::time::Instant::now();
        let status = Command::new("kill")
            .args(["-9", pid])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -9 {pid} failed");
        killed_at
    }

    /// Runs `rabbitmqctl -n <node> args`; returns its standard output.
    pub async fn ctl(&self, args: &[&str]) -> String {
        let output = tokio::process::Command::new("rabbitmqctl")
            .args(["-n", &self.node])
            .args(args)
            .output()
            .await
            .expect("rabbitmqctl runs");
        assert!(
            output.status.success(),
            "rabbitmqctl {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Kills the node's VM with SIGKILL, as a crash or the OOM killer
    /// would: nothing is flushed or closed. Waits until its port is closed.
    pub async fn kill9(&self) {
        let pid = self.ctl(&["eval", "os:getpid()."]).await;
        let pid = pid.trim().trim_matches('"');
        let killed = Command::new("kill")
            .args(["-KILL", pid])
            .status()
            .expect("kill runs");
        assert!(killed.success(), "kill -KILL {pid} failed");
        self.await_port_closed().await;
    }

    async fn await_port_closed(&self) {
        let down = super::eventually(Duration::from_secs(30), || async {
            std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err()
        })
        .await;
        assert!(down, "the private RabbitMQ did not stop");
    }

    /// Stops the node and waits until its port is closed.
    pub async fn stop(&self) {
        let _ = tokio::process::Command::new("rabbitmqctl")
            .args(["-n", &self.node, "stop"])
            .output()
            .await;
        self.await_port_closed().await;
    }
}

impl Drop for PrivateRabbit {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl")
            .args(["-n", &self.node, "stop"])
            .output();
    }
}

/// A Redis of the test's own, keeping nothing on disk but in its own
/// folder (a primary writes a snapshot there to sync a new replica).
pub struct PrivateRedis {
    pub port: u16,
    dir: tempfile::TempDir,
    /// Further `redis-server` arguments (a cluster node's, a sentinel's).
    extra: Vec<String>,
}

impl PrivateRedis {
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// A node of a Redis Cluster (its bus port is the port plus 10000).
    pub async fn start_cluster_node() -> Self {
        let args = ["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"];
        Self::start_with(&args).await
    }

    /// A sentinel watching the primary on `primary` as `name`: it calls
    /// the primary down after 2 s of silence; two sentinels must agree.
    pub async fn start_sentinel(name: &str, primary: u16) -> Self {
        let port = free_port(20000..22000, &[10000]);
        let dir = tempfile::tempdir().expect("temp dir");
        let conf = dir.path().join("sentinel.conf");
        let text = format!(
            "sentinel monitor {name} 127.0.0.1 {primary} 2\n\
             sentinel down-after-milliseconds {name} 2000\n\
             sentinel failover-timeout {name} 10000\n"
        );
        std::fs::write(&conf, text).expect("sentinel.conf");
        let extra = vec![conf.display().to_string(), "--sentinel".into()];
        let redis = Self { port, dir, extra };
        redis.boot().await;
        redis
    }

    async fn start_with(args: &[&str]) -> Self {
        let port = free_port(20000..22000, &[10000]);
        let dir = tempfile::tempdir().expect("temp dir");
        let extra = args.iter().map(|&a| a.to_owned()).collect();
        let redis = Self { port, dir, extra };
        redis.boot().await;
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub async fn boot(&self) {
        let status = Command::new("redis-server")
            // A config file (a sentinel's) must come first.
            .args(self.extra.iter().filter(|a| a.ends_with(".conf")))
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(self.extra.iter().filter(|a| !a.ends_with(".conf")))
            .arg("--dir")
            .arg(self.dir.path())
            .args(["--daemonize", "yes", "--save", "", "--appendonly", "no"])
            .status()
            .expect("redis-server runs");
        assert!(status.success(), "redis-server failed to start");
        let up = super::eventually(Duration::from_secs(10), || async {
            std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
        })
        .await;
        assert!(up, "the private Redis did not start");
    }

    /// Makes this Redis a replica of the one on `port`, as a failover does
    /// to a demoted primary: from then on it answers writes `READONLY`.
    pub async fn replica_of(&self, port: u16) {
        self.replicaof(&["127.0.0.1", &port.to_string()]).await;
    }

    /// Makes this replica a primary again (`REPLICAOF NO ONE`), as a
    /// failover does to the replica it promotes; it keeps the data it has.
    pub async fn promote(&self) {
        self.replicaof(&["no", "one"]).await;
    }

    /// Whether this replica holds a complete copy of its primary.
    pub async fn in_sync(&self) -> bool {
        let output = tokio::process::Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "info", "replication"])
            .output()
            .await
            .expect("redis-cli runs");
        String::from_utf8_lossy(&output.stdout).contains("master_link_status:up")
    }

    async fn replicaof(&self, args: &[&str]) {
        let output = tokio::process::Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "replicaof"])
            .args(args)
            .output()
            .await
            .expect("redis-cli runs");
        assert!(output.status.success(), "REPLICAOF {args:?} failed");
    }

    /// `kill -9` of the server: a crash, not a shutdown.
    pub fn kill(&self) {
        let info = Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "info", "server"])
            .output()
            .expect("redis-cli runs");
        let info = String::from_utf8_lossy(&info.stdout);
        let pid = info
            .lines()
            .find_map(|l| l.strip_prefix("process_id:"))
            .map(str::trim)
            .expect("INFO names the process");
        let status = Command::new("kill")
            .args(["-9", pid])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -9 {pid} failed");
    }

    pub fn stop(&self) {
        let _ = Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "shutdown", "nosave"])
            .output();
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}
