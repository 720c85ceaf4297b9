//! `sluice-worker routes [--json] [--admin HOST:PORT]`: each route's breaker
//! state and last error, asked of a running worker (`GET /routes` on its
//! admin port, `worker.admin_listen` unless `--admin` says otherwise), and
//! its backlog, read from RabbitMQ (the ready messages of
//! `{prefix}.route.<name>`, a passive declare that changes nothing).
//!
//! The state lives in the worker, so without an answer from one there is
//! nothing true to print: the command says so and exits 1, as it does when
//! RabbitMQ cannot be asked. Exit 0 only with the whole table.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use lapin::options::QueueDeclareOptions;
use lapin::types::{FieldTable, ShortString};
use serde::Serialize;
use sluice_shared::amqp;
use sluice_shared::config::{Config, EXIT_BAD_CONFIG};
use sluice_shared::topology::Topology;
use tokio::time::timeout;

use crate::route_status::{RouteStatusWire, RoutesAnswer};

/// How long the worker has to answer.
const ASK_LIMIT: Duration = Duration::from_secs(5);

/// `sluice-worker routes`.
#[derive(Debug, clap::Args)]
pub struct RoutesArgs {
    /// Print JSON (for scripts) instead of a table.
    #[arg(long)]
    pub json: bool,
    /// The worker's admin address (default: `worker.admin_listen`).
    #[arg(long, value_name = "HOST:PORT")]
    pub admin: Option<String>,
}

/// One route, as printed.
#[derive(Debug, Serialize)]
struct RouteLine {
    #[serde(flatten)]
    status: RouteStatusWire,
    /// Ready messages in the route's queue.
    backlog: u32,
}

#[derive(Debug, Serialize)]
struct Report<'a> {
    worker: &'a str,
    routes: Vec<RouteLine>,
}

/// Runs the command; returns the exit status.
pub async fn run(config: &Config, args: RoutesArgs) -> i32 {
    let admin = match admin_address(config, args.admin.as_deref()) {
        Ok(admin) => admin,
        Err(message) => return fail(&message, EXIT_BAD_CONFIG),
    };
    let answer = match ask_worker(&admin).await {
        Ok(answer) => answer,
        Err(why) => {
            let message = format!(
                "no worker answered at http://{admin}/routes ({why}); the breaker states live in \
                 a running worker: start one, or pass --admin HOST:PORT of one that runs"
            );
            return fail(&message, 1);
        }
    };
    let topology = Topology::new(&config.amqp).with_routes(&config.routes);
    // A route's backlog: its queue, or for an ordered route all its partitions.
    let queues: Vec<(&str, Vec<String>)> = answer
        .routes
        .iter()
        .map(|status| {
            let name = status.route.as_str();
            let partitions = topology.partition_queues(name);
            if partitions.is_empty() {
                (name, vec![topology.route_queue(name)])
            } else {
                (name, partitions)
            }
        })
        .collect();
    let backlogs = match backlogs(config, &queues).await {
        Ok(backlogs) => backlogs,
        Err(why) => {
            let message = format!("cannot read the route queues' backlog from RabbitMQ: {why}");
            return fail(&message, 1);
        }
    };
    let routes = answer
        .routes
        .into_iter()
        .zip(backlogs)
        .map(|(status, backlog)| RouteLine { status, backlog })
        .collect();
    let report = Report {
        worker: &admin,
        routes,
    };
    let printed = if args.json {
        print_json(&report)
    } else {
        print_table(&report)
    };
    match printed {
        Ok(()) => 0,
        Err(e) => fail(&format!("cannot write to stdout: {e}"), 1),
    }
}

/// `--admin`, else `worker.admin_listen` (a wildcard address asked on loopback).
fn admin_address(config: &Config, given: Option<&str>) -> Result<String, String> {
    if let Some(given) = given {
        return Ok(given.to_owned());
    }
    let listen = config.worker.admin_listen;
    if listen.port() == 0 {
        return Err(
            "worker.admin_listen has port 0 (the worker picks one at start): pass --admin HOST:PORT"
                .into(),
        );
    }
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    Ok(SocketAddr::new(ip, listen.port()).to_string())
}

async fn ask_worker(admin: &str) -> Result<RoutesAnswer, String> {
    let client = reqwest::Client::builder()
        .timeout(ASK_LIMIT)
        .build()
        .map_err(|e| e.to_string())?;
    let response = client
        .get(format!("http://{admin}/routes"))
        .send()
        .await
        .map_err(|e| {
            if e.is_timeout() {
                format!("no answer within {ASK_LIMIT:?}")
            } else {
                "connection failed".to_owned()
            }
        })?;
    if !response.status().is_success() {
        return Err(format!(
            "HTTP {}: a worker of this version serves /routes",
            response.status().as_u16()
        ));
    }
    response
        .json()
        .await
        .map_err(|e| format!("not a /routes answer: {e}"))
}

/// Ready messages of each route queue, in the topology's route order.
async fn backlogs(config: &Config, routes: &[(&str, Vec<String>)]) -> Result<Vec<u32>, String> {
    let amqp = &config.amqp;
    let name = format!("sluice-worker-routes-{}", std::process::id());
    let connection = amqp::connect(&amqp.nodes, &name, amqp.connect_timeout)
        .await
        .map_err(|e| e.to_string())?;
    let limit = amqp.connect_timeout;
    let mut counts = Vec::new();
    let mut failure = None;
    for (route, queue) in routes
        .iter()
        .flat_map(|(route, queues)| queues.iter().map(move |queue| (*route, queue)))
    {
        // A channel per queue: a passive declare of a missing queue closes its channel.
        let count = async {
            let channel = connection
                .create_channel()
                .await
                .map_err(|e| e.to_string())?;
            let passive = QueueDeclareOptions {
                passive: true,
                ..Default::default()
            };
            let declared = channel
                .queue_declare(ShortString::from(queue.as_str()), passive, FieldTable::default())
                .await
                .map_err(|_| {
                    format!("queue {queue} of route {route} does not exist (has a worker with this route started?)")
                })?;
            let _ = channel.close(200, "counted".into()).await;
            Ok::<u32, String>(declared.message_count())
        };
        match timeout(limit, count).await {
            Ok(Ok(count)) => counts.push(count),
            Ok(Err(why)) => {
                failure = Some(why);
                break;
            }
            Err(_) => {
                failure = Some(format!("no answer within {limit:?} about queue {queue}"));
                break;
            }
        }
    }
    let _ = timeout(limit, connection.close(200, "done".into())).await;
    if let Some(why) = failure {
        return Err(why);
    }
    // Counted queue by queue, in order: sum each route's.
    let mut counts = counts.into_iter();
    Ok(routes
        .iter()
        .map(|(_, queues)| counts.by_ref().take(queues.len()).sum())
        .collect())
}

fn print_json(report: &Report<'_>) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, report)?;
    writeln!(out)
}

fn print_table(report: &Report<'_>) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "worker {}", report.worker)?;
    writeln!(
        out,
        "{:<24} {:<20} {:>8} {:>8}  LAST ERROR",
        "ROUTE", "STATE", "BACKLOG", "FAILURES"
    )?;
    for line in &report.routes {
        let status = &line.status;
        let mut state = status.state.clone();
        if let Some(ms) = status.next_probe_in_ms {
            state = format!("{state} (probe in {}s)", ms.div_ceil(1000));
        }
        writeln!(
            out,
            "{:<24} {:<20} {:>8} {:>8}  {}",
            status.route,
            state,
            line.backlog,
            status.failures,
            status.last_error.as_deref().unwrap_or("-")
        )?;
    }
    Ok(())
}

fn fail(message: &str, code: i32) -> i32 {
    eprintln!("sluice-worker routes: {message}");
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worker_is_asked_on_loopback_when_it_listens_on_every_address() {
        let mut config = Config::from_toml("").expect("the defaults load");
        config.worker.admin_listen = "0.0.0.0:9081".parse().expect("an address");
        assert_eq!(
            admin_address(&config, None).as_deref(),
            Ok("127.0.0.1:9081")
        );
        config.worker.admin_listen = "10.1.2.3:9081".parse().expect("an address");
        assert_eq!(admin_address(&config, None).as_deref(), Ok("10.1.2.3:9081"));
        assert_eq!(
            admin_address(&config, Some("worker-3:9081")).as_deref(),
            Ok("worker-3:9081")
        );
        config.worker.admin_listen = "127.0.0.1:0".parse().expect("an address");
        let error = admin_address(&config, None).expect_err("port 0");
        assert!(error.contains("--admin"), "{error}");
    }
}
