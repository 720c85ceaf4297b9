//! `dlq export`: every matching dead event as one JSON line (see
//! [`super::record`]), optionally removed from the queue.
//!
//! Over HTTP ([`stream_matching`]) the lines go out as the pass reads them,
//! at most a limit of them, and never removed; the last line,
//! `{"end": {...}}` ([`ExportEnd`]), says whether the answer holds every
//! matching event, so an answer cut by the limit, by a failure or by a
//! dropped connection (no `end` line) is never taken for the whole queue.
//!
//! With `--remove`, nothing is acknowledged until the whole file is written,
//! flushed and `fsync`ed (and its directory too, so the file's name survives
//! a power cut): a crash or a full disk before then leaves every event in the
//! dead queue, in order; a crash while acknowledging leaves some events both
//! in the file and in the queue, never in neither.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use tokio::sync::mpsc;

use super::error::DlqError;
use super::filter::Filter;
use super::queue::DeadQueue;
use super::record::record;
use super::scan::{Mark, Scan};

/// Event lines in an HTTP export when the request gives no `limit`.
pub const DEFAULT_STREAMED: u64 = 1_000;
/// The largest `limit` of an HTTP export: a larger one is refused (400), not
/// lowered. Beyond that, `sluice-worker dlq export` writes a file.
pub const MAX_STREAMED: u64 = 100_000;

/// What an export did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Exported {
    pub queue: String,
    /// The file written, when there is one.
    pub file: Option<PathBuf>,
    pub in_queue: u32,
    /// Lines written, one per matching event.
    pub exported: u64,
    /// Events removed from the dead queue (only with `--remove`).
    pub removed: u64,
}

/// Writes the matching events to `file` (just made by [`create`] at
/// `out`); with `remove`, removes them from the queue once the file is
/// safely on disk.
pub async fn export_to_file(
    queue: &DeadQueue,
    filter: &Filter,
    (file, out): (File, &Path),
    remove: bool,
) -> Result<Exported, DlqError> {
    let mut writer = BufWriter::new(file);
    let mut scan = queue.scan().await?;
    let write_failed = |source| DlqError::Write {
        path: out.to_owned(),
        source,
    };
    let (exported, taken) = write_matching(&mut scan, filter, &mut writer, remove)
        .await?
        .map_err(write_failed)?;
    sync(writer, out).map_err(write_failed)?;
    scan.ack(&taken).await?;
    let in_queue = scan.snapshot();
    scan.finish(queue).await?;
    Ok(Exported {
        queue: queue.name(),
        file: Some(out.to_owned()),
        in_queue,
        exported,
        removed: taken.len() as u64,
    })
}

/// How an HTTP export ended: its last line, `{"end": {...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExportEnd {
    pub queue: String,
    /// Messages in the dead queue when the pass started.
    pub in_queue: u32,
    /// Event lines before this one.
    pub exported: u64,
    /// The most event lines this answer could hold.
    pub limit: u64,
    /// True when every matching event of the pass is in the answer.
    pub complete: bool,
    /// Why not: `limit` (more events match than the limit) or `error`.
    pub stopped: Option<&'static str>,
    /// What to do about it.
    pub message: Option<String>,
}

impl ExportEnd {
    /// The line itself, newline included.
    pub fn line(&self) -> Vec<u8> {
        let mut line = serde_json::json!({ "end": self }).to_string().into_bytes();
        line.push(b'\n');
        line
    }
}

/// Sends each matching event of `scan`, as a JSON line, to `lines`, at most
/// `limit` of them; then ends the pass. `None` when the reader went away
/// (dropped `lines`' receiver) before the end.
pub async fn stream_matching(
    queue: &DeadQueue,
    mut scan: Scan,
    filter: &Filter,
    limit: u64,
    lines: &mpsc::Sender<Vec<u8>>,
) -> Option<ExportEnd> {
    let mut end = ExportEnd {
        queue: queue.name(),
        in_queue: scan.snapshot(),
        exported: 0,
        limit,
        complete: false,
        stopped: None,
        message: None,
    };
    let mut reader_gone = false;
    loop {
        let held = match scan.next().await {
            Ok(Some(held)) => held,
            Ok(None) => {
                end.complete = true;
                break;
            }
            Err(e) => {
                end.stopped = Some("error");
                end.message = Some(e.to_string());
                break;
            }
        };
        if !filter.matches(&held.event) {
            continue;
        }
        if end.exported == limit {
            end.stopped = Some("limit");
            end.message = Some(format!(
                "more than {limit} events match: this answer holds the first {limit}; raise \
                 `limit` (at most {MAX_STREAMED}), narrow the filter (since, until), or use \
                 `sluice-worker dlq export`"
            ));
            break;
        }
        let mut line = record(&held.event, true).to_string().into_bytes();
        line.push(b'\n');
        if lines.send(line).await.is_err() {
            reader_gone = true;
            break;
        }
        end.exported += 1;
    }
    if let Err(e) = scan.finish(queue).await {
        tracing::warn!(error = %e, "the export's pass did not end cleanly; RabbitMQ returns its messages when the connection closes");
    }
    (!reader_gone).then_some(end)
}

/// Writes every matching event of the pass; keeps their marks when `take`.
/// The outer error is the broker's, the inner one the writer's.
async fn write_matching(
    scan: &mut Scan,
    filter: &Filter,
    writer: &mut impl Write,
    take: bool,
) -> Result<std::io::Result<(u64, Vec<Mark>)>, DlqError> {
    let mut exported = 0;
    let mut taken = Vec::new();
    while let Some(held) = scan.next().await? {
        if !filter.matches(&held.event) {
            continue;
        }
        let line = record(&held.event, true);
        let written = serde_json::to_writer(&mut *writer, &line)
            .map_err(std::io::Error::from)
            .and_then(|()| writer.write_all(b"\n"));
        if let Err(e) = written {
            return Ok(Err(e));
        }
        exported += 1;
        if take {
            taken.push(held.mark);
        }
    }
    Ok(Ok((exported, taken)))
}

/// A new file, made before the pass starts: an export never overwrites one.
pub fn create(out: &Path) -> Result<File, DlqError> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(out)
        .map_err(|e| DlqError::OutFile {
            path: out.to_owned(),
            problem: match e.kind() {
                std::io::ErrorKind::AlreadyExists => {
                    "it already exists; an export never overwrites: choose another --out".to_owned()
                }
                _ => e.to_string(),
            },
        })
}

/// Flushes, syncs the file, then its directory.
fn sync(writer: BufWriter<File>, out: &Path) -> std::io::Result<()> {
    let file = writer.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    let dir = match out.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}
