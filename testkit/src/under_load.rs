//! A fault test's stage: a gateway (in a process of its own), a worker and
//! a downstream, with the [`Ledger`]'s providers sending all along. A test
//! lets the load run, does its fault, and calls [`UnderLoad::finish`] with
//! the moment the fault ended: the load stops, the system settles, and the
//! [`Report`] says what was lost, duplicated and how long recovery took.
//! The test's queues and exchanges are deleted at the end, and also when a
//! test fails half-way (on drop).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use sluice_shared::config::Config;
use sluice_shared::topology::Topology;

use super::broker::{Broker, Taken};
use super::downstream::{Downstream, Plan};
use super::gateway_process::GatewayProcess;
use super::ledger::audit::{EventCopy, Place, RECOVERY_PROMISE, Report};
use super::ledger::{Book, Ledger, LoadProfile};
use super::{RunningWorker, SHARED_AMQP, SHARED_REDIS, TestEnv};

/// How long providers go on retrying once a test ends its load.
const RETRYING_AFTER_THE_END: Duration = Duration::from_secs(30);
/// How long every accepted event gets to be delivered or dead-lettered.
const SETTLING: Duration = Duration::from_secs(120);

/// What a stage is made of.
pub struct Setup {
    pub name: &'static str,
    /// The AMQP URL the binaries use (maybe through a proxy).
    pub amqp: String,
    /// The same broker, reached directly: what the test looks through.
    pub amqp_direct: String,
    pub redis: String,
    pub plan: Plan,
    /// `amqp.retry_delays`, as a TOML array.
    pub retry_delays: &'static str,
    /// `SLUICE_*` environment of the gateway's process.
    pub gateway_env: Vec<(&'static str, String)>,
    pub load: LoadProfile,
}

impl Setup {
    /// The shared brokers, a downstream that accepts everything, the default load.
    pub fn new(name: &'static str) -> Self {
        Self {
            name,
            amqp: SHARED_AMQP.into(),
            amqp_direct: SHARED_AMQP.into(),
            redis: SHARED_REDIS.into(),
            plan: Plan::Succeed,
            retry_delays: r#"["200ms", "400ms", "800ms"]"#,
            gateway_env: Vec::new(),
            load: LoadProfile::default(),
        }
    }

    /// Both binaries use RabbitMQ at `url` (the test too).
    pub fn amqp(self, url: &str) -> Self {
        Self {
            amqp: url.into(),
            amqp_direct: url.into(),
            ..self
        }
    }
}

pub struct UnderLoad {
    pub env: TestEnv,
    pub downstream: Downstream,
    pub gateway: GatewayProcess,
    pub worker: RunningWorker,
    pub ledger: Ledger,
    toml: String,
    gateway_env: Vec<(&'static str, String)>,
    cleanup: TopologyCleanup,
}

impl UnderLoad {
    /// Starts the downstream, the worker, the gateway, then the load.
    pub async fn start(setup: Setup) -> Self {
        let env = TestEnv::with_brokers(setup.name, &setup.amqp, &setup.redis);
        let downstream = Downstream::start(setup.plan).await;
        let toml = env.config_toml_retrying(setup.retry_delays, &env.http_route(&downstream.url()));
        let config = Config::from_toml(&toml).expect("the stage's config is valid");
        let cleanup = TopologyCleanup {
            url: setup.amqp_direct.clone(),
            // The stage's own retry delays, and the worker's route queues.
            topology: Some(Topology::new(&config.amqp).with_worker_routes(&config.routes)),
        };
        let worker = RunningWorker::start(config).await;
        let gateway = GatewayProcess::start(env.dir.path(), &toml, &setup.gateway_env).await;
        let ledger = Ledger::start(&[gateway.url("whatzme")], &env.prefix, setup.load);
        Self {
            env,
            downstream,
            gateway,
            worker,
            ledger,
            toml,
            gateway_env: setup.gateway_env,
            cleanup,
        }
    }

    /// Lets the load run for `period`; then at least one event must have
    /// been accepted, or the stage is not under load.
    pub async fn run_for(&self, period: Duration) {
        tokio::time::sleep(period).await;
        assert!(self.ledger.acked() > 0, "{}", self.gateway.log_tail());
    }

    /// Keeps the load on until an event accepted after `fault_end` is
    /// delivered, at most until the recovery promise is past.
    async fn await_recovery(&self, fault_end: Instant) {
        let limit = (fault_end + RECOVERY_PROMISE + Duration::from_secs(5))
            .saturating_duration_since(Instant::now());
        super::eventually(limit, || async {
            let delivered = self.downstream.delivered_ids();
            let after = self.ledger.acked_after(fault_end);
            after.iter().any(|id| delivered.contains(id))
        })
        .await;
    }

    /// A new gateway process with the same config and environment, on the
    /// same public port (after the old one closed it); returns the old one.
    pub async fn start_gateway_again(&mut self) -> GatewayProcess {
        let mut env = self.gateway_env.clone();
        env.push(("SLUICE_GATEWAY__LISTEN", self.gateway.addr.to_string()));
        let fresh = GatewayProcess::start(self.env.dir.path(), &self.toml, &env).await;
        std::mem::replace(&mut self.gateway, fresh)
    }

    /// Ends the load once the fault is over (at `fault_end`) and an event
    /// accepted since went all the way through (or the recovery promise
    /// ran out), waits until the system settles, stops both binaries and
    /// audits what happened.
    pub async fn finish(mut self, fault_end: Instant) -> Report {
        self.await_recovery(fault_end).await;
        let book = self.ledger.finish(RETRYING_AFTER_THE_END).await;
        let topology = self.cleanup.topology.take().expect("not finished before");
        let broker = Broker::connect(&self.cleanup.url).await;
        let mut dead = settle(&broker, &topology, &book, &self.downstream).await;
        self.worker.stop().await;
        self.gateway.stop().await;
        dead.extend(broker.drain(&topology.dead_queue()).await);
        let mut left = Vec::new();
        for queue in topology.all_queues() {
            left.extend(broker.drain(&queue).await);
        }
        broker.delete(&topology).await;
        let mut copies = copies_of(&dead, Place::Dead);
        copies.extend(copies_of(&left, Place::Left));
        copies.extend(self.downstream.deliveries().into_iter().map(|d| EventCopy {
            id: d.id,
            request_id: d.request_id.unwrap_or_default(),
            place: Place::Delivered(d.at),
        }));
        let own: HashSet<String> = book.acked.keys().chain(&book.unacked).cloned().collect();
        copies.retain(|c| own.contains(&c.id) || c.id.starts_with(&self.env.prefix));
        let mut report = Report::new(&book, &copies, fault_end);
        report.publish_log = publish_log(self.env.dir.path());
        report
    }
}

/// Waits until every event answered 200 is delivered or dead and no queue
/// holds a message; returns what it took off the dead queue meanwhile.
async fn settle(
    broker: &Broker,
    topology: &Topology,
    book: &Book,
    downstream: &Downstream,
) -> Vec<Taken> {
    let deadline = Instant::now() + SETTLING;
    let mut dead = Vec::new();
    loop {
        dead.extend(broker.drain(&topology.dead_queue()).await);
        let mut settled: HashSet<String> = downstream.delivered_ids();
        settled.extend(
            dead.iter()
                .filter_map(|m| m.properties.message_id().as_ref().map(|id| id.to_string())),
        );
        let all = book.acked.keys().all(|id| settled.contains(id));
        if (all && broker.total(topology).await == 0) || Instant::now() >= deadline {
            return dead;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Each distinct error the stage's gateways logged about publishes, with
/// how often (the log lines hold no event ids, so counts are what there is).
fn publish_log(dir: &std::path::Path) -> Vec<String> {
    let mut errors: std::collections::BTreeMap<String, usize> = Default::default();
    let logs = std::fs::read_dir(dir).into_iter().flatten().flatten();
    for entry in logs.filter(|e| e.file_name().to_string_lossy().ends_with(".log")) {
        let log = std::fs::read_to_string(entry.path()).unwrap_or_default();
        for line in log.lines().filter(|line| line.contains("publish")) {
            let json: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
            let what = format!("{}: {}", json["message"], json["error"]);
            *errors.entry(what).or_insert(0) += 1;
        }
    }
    errors
        .into_iter()
        .map(|(what, n)| format!("  {n} x {what}"))
        .collect()
}

fn copies_of(messages: &[Taken], place: Place) -> Vec<EventCopy> {
    messages
        .iter()
        .map(|m| EventCopy {
            id: m
                .properties
                .message_id()
                .as_ref()
                .map(|id| id.to_string())
                .unwrap_or_default(),
            request_id: m.headers().request_id.unwrap_or_default(),
            place,
        })
        .collect()
}

/// Deletes a stage's queues and exchanges if the test ends before
/// [`UnderLoad::finish`] did (a failed assertion): best effort, on a
/// thread of its own since `drop` cannot wait on the test's runtime.
struct TopologyCleanup {
    url: String,
    topology: Option<Topology>,
}

impl Drop for TopologyCleanup {
    fn drop(&mut self) {
        let Some(topology) = self.topology.take() else {
            return;
        };
        let url = self.url.clone();
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let _ = tokio::time::timeout(Duration::from_secs(10), async {
                    let connection = lapin::Connection::connect(&url, Default::default()).await?;
                    let channel = connection.create_channel().await?;
                    topology.delete(&channel).await
                })
                .await;
            });
            Ok::<(), std::io::Error>(())
        })
        .join();
    }
}
