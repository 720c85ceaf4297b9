//! `sluice-gateway`: loads the config, starts logging, runs the gateway until SIGTERM or Ctrl-C.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use sluice_gateway::{Gateway, StartError};
use sluice_shared::config::{Config, EXIT_BAD_CONFIG};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(version, about = "Sluice webhook gateway")]
struct Args {
    /// The TOML config file; `SLUICE_*` variables override it.
    #[arg(long, env = "SLUICE_CONFIG")]
    config: Option<PathBuf>,
    /// Load and validate the config (secrets included), then exit.
    #[arg(long)]
    check_config: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let config = match Config::load(args.config.as_deref()) {
        Ok(config) => config,
        Err(e) => return fail(&e.to_string(), EXIT_BAD_CONFIG),
    };
    sluice_shared::telemetry::init(&config.telemetry);
    if args.check_config {
        let sources = &config.sources;
        return match sluice_gateway::source::Sources::from_config(&config.gateway, sources) {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => fail(&e.to_string(), EXIT_BAD_CONFIG),
        };
    }
    let runtime = match sluice_shared::runtime::build(config.gateway.threads) {
        Ok(runtime) => runtime,
        Err(e) => return fail(&format!("cannot start the async runtime: {e}"), 1),
    };
    runtime.block_on(serve(config))
}

async fn serve(config: Config) -> ExitCode {
    let gateway = match Gateway::build(config).await {
        Ok(gateway) => gateway,
        Err(e @ StartError::Config(_)) => return fail(&e.to_string(), EXIT_BAD_CONFIG),
        Err(e) => return fail(&e.to_string(), 1),
    };
    let shutdown = CancellationToken::new();
    tokio::spawn(sluice_shared::signals::cancel_on_signal(shutdown.clone()));
    match gateway.run_until_stopped(shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&format!("server error: {e}"), 1),
    }
}

fn fail(message: &str, code: i32) -> ExitCode {
    eprintln!("sluice-gateway: {message}");
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
