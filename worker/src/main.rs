//! `sluice-worker`: loads the config, starts logging, consumes until SIGTERM
//! or Ctrl-C; or runs one operator command (`sluice-worker dlq ...`,
//! `sluice-worker routes`, `sluice-worker id-digest <id>...`).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sluice_shared::config::{Config, ConfigError, EXIT_BAD_CONFIG};
use sluice_shared::id_digest::IdDigester;
use sluice_worker::Worker;
use sluice_worker::dlq::cli::{self as dlq, DlqArgs};
use sluice_worker::routes_cli::{self, RoutesArgs};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    version,
    about = "Sluice worker: delivers events, retries, dead-letters"
)]
struct Args {
    /// The TOML config file; `SLUICE_*` variables override it.
    #[arg(long, env = "SLUICE_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Load and validate the config (route secrets included), then exit.
    #[arg(long)]
    check_config: bool,
    /// Without a command, the worker consumes.
    #[command(subcommand)]
    command: Option<Command>,
}

/// Operator commands.
#[derive(Subcommand)]
#[allow(
    clippy::large_enum_variant,
    reason = "parsed once at start; the dlq filters (now with --route) make it the large one"
)]
enum Command {
    /// Inspect, export, replay and purge the dead-letter queue.
    Dlq(DlqArgs),
    /// Each route's circuit breaker (closed, open, half-open), backlog and
    /// last error, asked of the running worker.
    Routes(RoutesArgs),
    /// Print the digest log lines carry for each event id, one a line, to
    /// find an event's lines (needs `telemetry.id_digest_key`).
    IdDigest {
        /// Event ids as published: a `wamid`, `<wamid>:<status>`, a downstream `webhook-id`.
        #[arg(required = true)]
        ids: Vec<String>,
    },
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(args) => args,
        // Help and version go to stdout with 0; a usage error is 64, like a bad config.
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 64 } else { 0 });
        }
    };
    let config = match Config::load(args.config.as_deref()) {
        Ok(config) => config,
        Err(e) => return fail(&e.to_string(), EXIT_BAD_CONFIG),
    };
    if let Some(Command::IdDigest { ids }) = &args.command {
        return print_digests(&config, ids);
    }
    sluice_shared::telemetry::init(&config.telemetry);
    if args.check_config {
        return match sluice_worker::routes::RouteTable::from_config(&config.routes) {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => fail(&e.to_string(), EXIT_BAD_CONFIG),
        };
    }
    let runtime = match sluice_shared::runtime::build(config.worker.threads) {
        Ok(runtime) => runtime,
        Err(e) => return fail(&format!("cannot start the async runtime: {e}"), 1),
    };
    runtime.block_on(run(config, args.command))
}

/// One operator command, or the worker until SIGTERM.
async fn run(config: Config, command: Option<Command>) -> ExitCode {
    match command {
        Some(Command::Dlq(command)) => {
            let code = dlq::run(&config, command).await;
            return ExitCode::from(u8::try_from(code).unwrap_or(1));
        }
        Some(Command::Routes(args)) => {
            let code = routes_cli::run(&config, args).await;
            return ExitCode::from(u8::try_from(code).unwrap_or(1));
        }
        // Answered before logging started; here only for completeness.
        Some(Command::IdDigest { ids }) => return print_digests(&config, &ids),
        None => {}
    }
    let worker = match Worker::build(config).await {
        Ok(worker) => worker,
        Err(e) => return fail(&e.to_string(), e.exit_code()),
    };
    let shutdown = CancellationToken::new();
    tokio::spawn(sluice_shared::signals::cancel_on_signal(shutdown.clone()));
    match worker.run_until_stopped(shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e.to_string(), 1),
    }
}

/// `id-digest`: the digests under the configured key; without one there is nothing to match.
fn print_digests(config: &Config, ids: &[String]) -> ExitCode {
    let Some(key) = &config.telemetry.id_digest_key else {
        let problem = "not set, so each process logged digests under a key of its own and \
                       none can be computed; set it to the same env: or file: secret for the \
                       gateway, the worker and this command";
        let error = ConfigError::invalid("telemetry.id_digest_key", problem);
        return fail(&error.to_string(), EXIT_BAD_CONFIG);
    };
    let digester = IdDigester::from_config(Some(key));
    let mut out = std::io::stdout().lock();
    for id in ids {
        if let Err(e) = writeln!(out, "{}", digester.digest(id)) {
            return fail(&format!("cannot write to stdout: {e}"), 1);
        }
    }
    ExitCode::SUCCESS
}

fn fail(message: &str, code: i32) -> ExitCode {
    eprintln!("sluice-worker: {message}");
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
