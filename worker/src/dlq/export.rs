//! `dlq export`: every matching dead event as one JSON line (see
//! [`super::record`]), optionally removed from the queue.
//!
//! With `--remove`, nothing is acknowledged until the whole file is written,
//! flushed and `fsync`ed (and its directory too, so the file's name survives
//! a power cut): a crash or a full disk before then leaves every event in the
//! dead queue, in order; a crash while acknowledging leaves some events both
//! in the file and in the queue, never in neither.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use lapin::Acker;
use serde::Serialize;

use super::error::DlqError;
use super::filter::Filter;
use super::record::record;
use super::scan::{DeadQueue, Scan};

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
    for acker in &taken {
        scan.ack(acker).await?;
    }
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

/// The matching events as JSON lines in memory (the HTTP export; never removes).
pub async fn export_to_memory(queue: &DeadQueue, filter: &Filter) -> Result<Vec<u8>, DlqError> {
    let mut scan = queue.scan().await?;
    let mut lines = Vec::new();
    let written = write_matching(&mut scan, filter, &mut lines, false).await?;
    scan.finish(queue).await?;
    written.map_err(|source| DlqError::Write {
        path: PathBuf::from("(memory)"),
        source,
    })?;
    Ok(lines)
}

/// Writes every matching event of the pass; keeps their ackers when `take`.
/// The outer error is the broker's, the inner one the writer's.
async fn write_matching(
    scan: &mut Scan,
    filter: &Filter,
    writer: &mut impl Write,
    take: bool,
) -> Result<std::io::Result<(u64, Vec<Acker>)>, DlqError> {
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
            taken.push(held.acker);
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
