//! `sluice-worker dlq stats|peek|export|replay|purge`: the flags, and the
//! run of one command from its flags to its exit status.
//!
//! Results go to stdout (text, or JSON with `--json`); errors, warnings and
//! the progress bar to stderr. Exit status: 0 done, all of it; 64 a usage
//! error, no dead queue under `amqp.prefix`, or a purge refused for want of
//! `--yes`; 1 the broker or the file system failed, a replay did not move
//! every event it picked (run it again: it resumes where it stopped), or the
//! result could not be written to stdout. A command never exits 0 having done
//! part of its job.

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
use super::purge::PurgeScope;
use super::queue::DeadQueue;
use super::rate::Rate;
use super::replay::ReplayOptions;
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
        /// Events per second, from 0.1 to 100000 (default: as fast as RabbitMQ confirms).
        #[arg(long)]
        rate: Option<f64>,
        /// Show what would be replayed; change nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        filter: FilterArgs,
    },
    /// Remove dead events for good: shows what matches, and removes it only with --yes.
    /// Needs a filter, or --all for the whole dead queue.
    Purge {
        /// Really remove them.
        #[arg(long)]
        yes: bool,
        /// Purge the whole dead queue (only without a filter).
        #[arg(long)]
        all: bool,
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
    // Usage errors before anything touches the queue.
    if let Err(e) = check_usage(&args.command, &filter) {
        return fail(&e.to_string(), e.exit_code());
    }
    // A bad --out fails before anything touches the queue.
    let out_file = match &args.command {
        DlqCommand::Export { out, .. } => match export::create(out) {
            Ok(file) => Some(file),
            Err(e) => return fail(&e.to_string(), e.exit_code()),
        },
        _ => None,
    };
    let queue = match DeadQueue::open(&config.amqp, config.dlq.scan_batch).await {
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

/// The flags a command checks beyond its filter.
fn check_usage(command: &DlqCommand, filter: &Filter) -> Result<(), DlqError> {
    match command {
        DlqCommand::Replay {
            rate: Some(rate), ..
        } => Rate::new(*rate).map(drop),
        DlqCommand::Purge {
            filter: args, all, ..
        } => PurgeScope::new(args, filter, *all).map(drop),
        _ => Ok(()),
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
            Ok(show(json, &stats, || output::stats(&stats)))
        }
        DlqCommand::Peek {
            limit, show_data, ..
        } => {
            if *limit == 0 {
                return Err(DlqError::Usage("--limit must be at least 1".into()));
            }
            let peeked = peek::peek(queue, filter, *limit, *show_data).await?;
            Ok(show(json, &peeked.json(), || output::peek(&peeked)))
        }
        DlqCommand::Export { out, remove, .. } => {
            let file = match out_file {
                Some(file) => file,
                None => export::create(out)?,
            };
            let exported = export::export_to_file(queue, filter, (file, out), *remove).await?;
            Ok(show(json, &exported, || output::exported(&exported)))
        }
        DlqCommand::Replay {
            limit,
            rate,
            dry_run,
            ..
        } => {
            let options = ReplayOptions {
                limit: *limit,
                rate: rate.map(Rate::new).transpose()?,
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
    let replayed = replay::replay(queue, filter, options, true).await?;
    let shown = show(json, &replayed, || output::replayed(&replayed));
    Ok(if replayed.incomplete() { 1 } else { shown })
}

async fn run_purge(
    queue: &DeadQueue,
    filter: &Filter,
    yes: bool,
    json: bool,
) -> Result<i32, DlqError> {
    let plan = purge::plan(queue, filter).await?;
    let previewed = match json {
        true => 0,
        false => print(&output::purge_preview(plan.preview())),
    };
    let purged = match yes {
        true => plan.execute(queue).await?,
        false => plan.refuse(queue).await?,
    };
    let shown = show(json, &purged, || output::purged(&purged));
    Ok(if purged.refused {
        EXIT_BAD_CONFIG
    } else {
        previewed.max(shown)
    })
}

/// Prints `value` as JSON, or the text `human` makes; the exit status so far
/// (1 when stdout failed).
fn show<T: Serialize>(json: bool, value: &T, human: impl FnOnce() -> String) -> i32 {
    let text = match json {
        true => match serde_json::to_string_pretty(value) {
            Ok(text) => format!("{text}\n"),
            Err(e) => return fail(&format!("cannot write the result as JSON: {e}"), 1),
        },
        false => human(),
    };
    print(&text)
}

/// Writes to stdout: 0, or 1 (said on stderr) when stdout failed. A closed
/// pipe (`| head`) is the reader's choice, not a failure.
fn print(text: &str) -> i32 {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => 0,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => 0,
        Err(e) => fail(
            &format!(
                "the command ran, but writing its result to stdout failed: {e}; \
                 nothing was undone"
            ),
            1,
        ),
    }
}

fn fail(message: &str, code: i32) -> i32 {
    eprintln!("sluice-worker dlq: {message}");
    code
}
