//! `sluice-load`: the load generator and its measurements (docs/benchmarks.md).
//!
//! - `floor`: the gateway's I/O for one event without HTTP, the ceiling;
//! - `closed`: N connections, each sending as soon as it is answered;
//! - `open`: a fixed request rate, latency from the intended send time;
//! - `receive`: a fast downstream for the worker, reporting its delivery rate
//!   and end-to-end latency.
//!
//! Every run prints one markdown table row; `--pid` adds the CPU seconds per
//! 1,000 events and the peak RSS of the processes named.

mod floor;
mod http_load;
mod raw_http;
mod receiver;
mod requests;
mod stats;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use sluice_shared::config::Config;
use sluice_shared::topology::Topology;

use crate::requests::{Kind, Plan};
use crate::stats::{ProcSample, RunStats};

#[derive(Parser)]
#[command(about = "Sluice load generator")]
struct Args {
    /// The gateway's config: its address, sources and secrets, Redis and RabbitMQ.
    #[arg(long, env = "SLUICE_CONFIG")]
    config: PathBuf,
    /// Processes to sample for CPU and memory (gateway, worker), as `name=pid`.
    #[arg(long = "pid", value_parser = parse_pid)]
    pids: Vec<(String, u32)>,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// The gateway's own Redis and RabbitMQ work per event, without HTTP.
    Floor {
        #[arg(long, default_value = "whatzme")]
        source: String,
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// A name for the report row.
        #[arg(long, default_value = "floor (no HTTP)")]
        label: String,
    },
    /// N connections, each sending again as soon as it is answered.
    Closed {
        #[command(flatten)]
        load: Load,
        #[arg(long, default_value_t = 32)]
        connections: usize,
    },
    /// A fixed rate of requests per second.
    Open {
        #[command(flatten)]
        load: Load,
        #[arg(long)]
        rate: f64,
    },
    /// Deletes the config's queues (messages included) and exchanges.
    Clean,
    /// A downstream for the worker; one report per burst of deliveries.
    Receive {
        #[arg(long, default_value = "127.0.0.1:18999")]
        listen: String,
        #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
        idle: Duration,
        #[arg(long, default_value_t = 1)]
        bursts: usize,
    },
}

#[derive(clap::Args)]
struct Load {
    #[arg(long, value_enum, default_value = "hmac")]
    kind: Kind,
    /// The source to POST to (its first secret signs).
    #[arg(long, default_value = "whatzme")]
    source: String,
    /// Updates per WhatsApp batch.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Requests prepared (the run ends when they are sent or time is up).
    #[arg(long, default_value_t = 200_000)]
    count: usize,
    /// Share of requests that repeat an earlier one.
    #[arg(long, default_value_t = 0.0)]
    duplicates: f64,
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// A name for the report row.
    #[arg(long)]
    label: Option<String>,
}

fn parse_pid(text: &str) -> Result<(String, u32), String> {
    let (name, pid) = text.split_once('=').ok_or("write name=pid")?;
    Ok((name.to_owned(), pid.parse().map_err(|_| "pid is a number")?))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = Config::load(Some(&args.config)).map_err(|e| anyhow::anyhow!("{e}"))?;
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
    let before: Vec<_> = args
        .pids
        .iter()
        .map(|(_, pid)| ProcSample::read(*pid))
        .collect();
    let stats = match args.mode {
        Mode::Floor {
            source,
            concurrency,
            duration,
            label,
        } => floor::run(&config, &source, &run_id, concurrency, duration, &label).await?,
        Mode::Closed { load, connections } => {
            let label = format!("closed, {connections} connections");
            let (requests, name) = prepare(&config, &load, &run_id, &label)?;
            let path = format!("/webhooks/{}", load.source);
            let addr = config.gateway.listen;
            http_load::closed(&name, addr, &path, requests, connections, load.duration).await
        }
        Mode::Open { load, rate } => {
            let label = format!("open, {rate:.0} req/s");
            let (requests, name) = prepare(&config, &load, &run_id, &label)?;
            let path = format!("/webhooks/{}", load.source);
            let addr = config.gateway.listen;
            http_load::open(&name, addr, &path, requests, rate, load.duration).await
        }
        Mode::Receive {
            listen,
            idle,
            bursts,
        } => return receiver::run(&listen, idle, bursts, "worker").await,
        Mode::Clean => return clean(&config).await,
    };
    println!("{}", RunStats::header());
    println!("{}", stats.row());
    for ((name, pid), before) in args.pids.iter().zip(before) {
        if let (Some(before), Some(after)) = (before, ProcSample::read(*pid)) {
            let cpu = after.cpu_seconds - before.cpu_seconds;
            let per_thousand = cpu * 1000.0 / (stats.accepted_events.max(1) as f64);
            println!(
                "{name}: {cpu:.2} CPU s, {per_thousand:.3} CPU s per 1,000 events, peak RSS {:.1} MiB, RSS now {:.1} MiB",
                after.peak_rss_kib as f64 / 1024.0,
                after.rss_kib as f64 / 1024.0
            );
        }
    }
    Ok(())
}

/// The pre-signed requests and the row name of an HTTP run.
fn prepare(
    config: &Config,
    load: &Load,
    run_id: &str,
    default_name: &str,
) -> anyhow::Result<(Vec<requests::Prepared>, String)> {
    let source = config
        .sources
        .get(&load.source)
        .with_context(|| format!("no source {} in the config", load.source))?;
    let secret = source
        .scheme
        .secrets()
        .first()
        .context("the source has no secret")?
        .resolve()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let plan = Plan {
        kind: load.kind,
        count: load.count,
        batch: load.batch.max(1),
        duplicates: load.duplicates,
        secret: secret.expose().to_owned(),
        run_id: run_id.to_owned(),
    };
    let name = load
        .label
        .clone()
        .unwrap_or_else(|| default_name.to_owned());
    Ok((plan.build(), name))
}

/// Deletes a benchmark's topology (its queues and exchanges, named by `amqp.prefix`).
async fn clean(config: &Config) -> anyhow::Result<()> {
    let amqp = &config.amqp;
    let connection = sluice_shared::amqp::connect(&amqp.nodes, "sluice-load", amqp.connect_timeout)
        .await
        .context("RabbitMQ")?;
    let channel = connection.create_channel().await.context("a channel")?;
    // The worker's route queues too: the benchmark ran one with these routes.
    Topology::new(amqp)
        .with_worker_routes(&config.routes)
        .delete(&channel)
        .await
        .with_context(|| {
            format!(
                "deleting the queues and exchanges of prefix {}",
                amqp.prefix
            )
        })?;
    let _ = connection.close(200, "topology deleted".into()).await;
    Ok(())
}
