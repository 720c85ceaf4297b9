//! `sluice-worker dlq stats|peek|export|replay|purge`: the flags, and the
//! run of one command from its flags to its exit status.
//!
//! Results go to stdout (text, or JSON with `--json`); errors, warnings and
//! the progress bar to stderr. Exit status: 0 done; 64 a usage error, no
//! dead queue under `amqp.prefix`, or a purge refused for want of `--yes`;
//! 1 the broker or the file system failed, or a replay stopped early (run it
//! again: it resumes where it stopped).

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::time::SystemTime;

use clap::Subcommand;
use serde::Serialize;
use sluice_shared::config::{Config, EXIT_BAD_CONFIG};
use sluice_shared::envelope::unix_millis;

use super::error::DlqError;
use super::filter::{Filter, FilterArgs};
use super::progress::Progress;
use super::replay::ReplayOptions;
use super::scan::DeadQueue;
use super::{export, output, peek, purge, replay, stats};

/// `sluice-worker dlq`.
#[derive(Debug, clap::Args)]
pub struct DlqArgs {
    /// Print JSON (for scripts) instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: DlqCommand,
}

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// Count the dead events: oldest, newest, by source, type, reason and last status.
    Stats {
        #[command(flatten)]
        filter: FilterArgs,
    },
    /// Show the first dead events; the queue is left exactly as it was.
    Peek {
        /// How many events to show.
        #[arg(long, default_value_t = 10)]
        limit: usize,
        /// Also show each event's payload.
        #[arg(long)]
        show_data: bool,
        #[command(flatten)]
        filter: FilterArgs,
    },
    /// Write the dead events as JSON lines to a new file.
    Export {
        /// The file to create (never overwritten).
        #[arg(long)]
        out: PathBuf,
        /// Remove the exported events from the dead queue once the file is flushed and synced.
        #[arg(long)]
        remove: bool,
        #[command(flatten)]
        filter: FilterArgs,
    },
    /// Send dead events back to be delivered again (attempts reset, marked replayed).
    Replay {
        /// Replay at most this many events.
        #[arg(long)]
        limit: Option<usize>,
        /// Events per second (default: as fast as RabbitMQ confirms).
        #[arg(long)]
        rate: Option<f64>,
        /// Show what would be replayed; change nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        filter: FilterArgs,
    },
    /// Remove dead events for good: shows what matches, and removes it only with --yes.
    Purge {
        /// Really remove them.
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        filter: FilterArgs,
    },
}

impl DlqCommand {
    fn filter(&self) -> &FilterArgs {
        match self {
            Self::Stats { filter }
            | Self::Peek { filter, .. }
            | Self::Export { filter, .. }
            | Self::Replay { filter, .. }
            | Self::Purge { filter, .. } => filter,
        }
    }
}

/// Runs one `dlq` command; returns the process exit status.
pub async fn run(config: &Config, args: DlqArgs) -> i32 {
    let filter = match Filter::parse(args.command.filter(), unix_millis(SystemTime::now())) {
        Ok(filter) => filter,
        Err(e) => return fail(&e.to_string(), EXIT_BAD_CONFIG),
    };
    // A bad --out fails before anything touches the queue.
    let out_file = match &args.command {
        DlqCommand::Export { out, .. } => match export::create(out) {
            Ok(file) => Some(file),
            Err(e) => return fail(&e.to_string(), e.exit_code()),
        },
        _ => None,
    };
    let queue = match DeadQueue::open(&config.amqp).await {
        Ok(queue) => queue,
        Err(e) => return fail(&e.to_string(), e.exit_code()),
    };
    let result = execute(&queue, &args.command, &filter, out_file, args.json).await;
    queue.close().await;
    match result {
        Ok(code) => code,
        Err(e) => fail(&e.to_string(), e.exit_code()),
    }
}

async fn execute(
    queue: &DeadQueue,
    command: &DlqCommand,
    filter: &Filter,
    out_file: Option<File>,
    json: bool,
) -> Result<i32, DlqError> {
    match command {
        DlqCommand::Stats { .. } => {
            let stats = stats::collect(queue, filter).await?;
            show(json, &stats, || output::stats(&stats));
            Ok(0)
        }
        DlqCommand::Peek {
            limit, show_data, ..
        } => {
            if *limit == 0 {
                return Err(DlqError::Usage("--limit must be at least 1".into()));
            }
            let peeked = peek::peek(queue, filter, *limit, *show_data).await?;
            show(json, &peeked.json(), || output::peek(&peeked));
            Ok(0)
        }
        DlqCommand::Export { out, remove, .. } => {
            let file = match out_file {
                Some(file) => file,
                None => export::create(out)?,
            };
            let exported = export::export_to_file(queue, filter, (file, out), *remove).await?;
            show(json, &exported, || output::exported(&exported));
            Ok(0)
        }
        DlqCommand::Replay {
            limit,
            rate,
            dry_run,
            ..
        } => {
            let options = ReplayOptions {
                limit: *limit,
                rate: *rate,
                dry_run: *dry_run,
            };
            run_replay(queue, filter, &options, json).await
        }
        DlqCommand::Purge { yes, .. } => run_purge(queue, filter, *yes, json).await,
    }
}

async fn run_replay(
    queue: &DeadQueue,
    filter: &Filter,
    options: &ReplayOptions,
    json: bool,
) -> Result<i32, DlqError> {
    let plan = replay::plan(queue, filter, options).await?;
    let progress = match options.dry_run {
        true => Progress::hidden(),
        false => Progress::on_terminal(plan.report().picked, "replaying"),
    };
    let replayed = plan.run(queue, options, &progress).await?;
    show(json, &replayed, || output::replayed(&replayed));
    Ok(if replayed.stopped.is_some() { 1 } else { 0 })
}

async fn run_purge(
    queue: &DeadQueue,
    filter: &Filter,
    yes: bool,
    json: bool,
) -> Result<i32, DlqError> {
    let plan = purge::plan(queue, filter).await?;
    if !json {
        print(&output::purge_preview(plan.preview()));
    }
    let purged = match yes {
        true => plan.execute(queue).await?,
        false => plan.refuse(queue).await?,
    };
    show(json, &purged, || output::purged(&purged));
    Ok(if purged.refused { EXIT_BAD_CONFIG } else { 0 })
}

/// Prints `value` as JSON, or the text `human` makes.
fn show<T: Serialize>(json: bool, value: &T, human: impl FnOnce() -> String) {
    if json {
        match serde_json::to_string_pretty(value) {
            Ok(text) => print(&format!("{text}\n")),
            Err(e) => eprintln!("sluice-worker dlq: cannot write JSON: {e}"),
        }
    } else {
        print(&human());
    }
}

/// Writes to stdout, ignoring a closed pipe (`| head`).
fn print(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
}

fn fail(message: &str, code: i32) -> i32 {
    eprintln!("sluice-worker dlq: {message}");
    code
}
