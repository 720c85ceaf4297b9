//! What a person reads: each operation's result as plain text for a
//! terminal. (`--json` prints the same results as JSON instead, for scripts.)

use std::collections::BTreeMap;
use std::fmt::Write;

use super::event::DeadEvent;
use super::export::Exported;
use super::peek::Peeked;
use super::purge::Purged;
use super::record::rfc3339;
use super::replay::Replayed;
use super::stats::Stats;

/// `dlq stats`.
pub fn stats(stats: &Stats) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "dead queue  {}", stats.queue);
    let _ = writeln!(out, "messages    {}", stats.in_queue);
    let _ = writeln!(
        out,
        "matching    {} ({} not Sluice envelopes, {} replayed before)",
        stats.count, stats.raw, stats.replayed_before
    );
    let _ = writeln!(
        out,
        "oldest      {}",
        stats.oldest.as_deref().unwrap_or("-")
    );
    let _ = writeln!(
        out,
        "newest      {}",
        stats.newest.as_deref().unwrap_or("-")
    );
    for (title, counts) in [
        ("by source", &stats.by_source),
        ("by type", &stats.by_type),
        ("by route", &stats.by_route),
        ("by reason", &stats.by_reason),
        ("by last status", &stats.by_status),
    ] {
        counts_block(&mut out, title, counts);
    }
    out
}

fn counts_block(out: &mut String, title: &str, counts: &BTreeMap<String, u64>) {
    let _ = writeln!(out, "\n{title}");
    if counts.is_empty() {
        let _ = writeln!(out, "  -");
    }
    let width = counts.keys().map(|k| k.chars().count()).max().unwrap_or(0);
    for (key, count) in counts {
        let _ = writeln!(out, "  {key:<width$}  {count:>7}");
    }
}

/// `dlq peek`: one row per event, the payload under it with `--show-data`.
pub fn peek(peeked: &Peeked) -> String {
    let mut out = format!(
        "{} holds {} messages; the first {} that match, head first:\n\n",
        peeked.queue,
        peeked.in_queue,
        peeked.events.len()
    );
    let _ = writeln!(
        out,
        "{:>5}  {:<28}  {:<10}  {:<20}  {:<18}  {:>6}  {:>3}  {:<24}  LAST ERROR",
        "#", "ID", "SOURCE", "TYPE", "REASON", "STATUS", "ATT", "LAST FAILURE"
    );
    for event in &peeked.events {
        let _ = writeln!(out, "{}", row(event));
        if peeked.show_data {
            let _ = writeln!(out, "       data: {}", payload(event));
        }
    }
    out
}

fn row(event: &DeadEvent) -> String {
    let dash = || "-".to_owned();
    let id = match (&event.id, event.is_envelope()) {
        (Some(id), _) => id.clone(),
        (None, false) => format!("(raw, {} bytes)", event.body.len()),
        (None, true) => dash(),
    };
    format!(
        "{:>5}  {:<28}  {:<10}  {:<20}  {:<18}  {:>6}  {:>3}  {:<24}  {}",
        event.position,
        clip(&id, 28),
        clip(event.source.as_deref().unwrap_or("-"), 10),
        clip(event.event_type.as_deref().unwrap_or("-"), 20),
        clip(event.reason.as_str(), 18),
        event.last_status.map_or_else(dash, |s| s.to_string()),
        event.attempts.map_or_else(dash, |a| a.to_string()),
        event.failed_at_ms().map_or_else(dash, rfc3339),
        clip(event.last_error.as_deref().unwrap_or("-"), 60),
    )
}

/// The envelope's data, or the raw body (text, else its size).
fn payload(event: &DeadEvent) -> String {
    if let Some(envelope) = &event.envelope {
        let data = envelope.get("data").or_else(|| envelope.get("data_base64"));
        return data.map_or_else(|| "-".to_owned(), |d| d.to_string());
    }
    match std::str::from_utf8(&event.body) {
        Ok(text) => format!("(raw) {text}"),
        Err(_) => format!(
            "(raw, {} bytes, not UTF-8: see dlq export)",
            event.body.len()
        ),
    }
}

/// At most `width` characters, with `…` when cut.
fn clip(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_owned();
    }
    let mut clipped: String = text.chars().take(width.saturating_sub(1)).collect();
    clipped.push('…');
    clipped
}

/// `dlq export`.
pub fn exported(exported: &Exported) -> String {
    let file = exported
        .file
        .as_ref()
        .map_or_else(|| "-".to_owned(), |f| f.display().to_string());
    format!(
        "exported {} of {} messages to {file} (flushed and synced); removed {} from {}\n",
        exported.exported, exported.in_queue, exported.removed, exported.queue
    )
}

/// `dlq replay`: the summary.
pub fn replayed(r: &Replayed) -> String {
    let mut out = String::new();
    let verb = if r.dry_run {
        "would replay"
    } else {
        "replayed"
    };
    let count = if r.dry_run { r.picked } else { r.replayed };
    let _ = writeln!(
        out,
        "{verb} {count} of {} matching events ({} messages in {})",
        r.matched, r.in_queue, r.queue
    );
    let _ = writeln!(
        out,
        "  not replayable (raw, no id, no source or type): {}",
        r.not_replayable
    );
    let _ = writeln!(out, "  refused by RabbitMQ (still dead): {}", r.failed);
    let _ = writeln!(out, "  duplicate ids among the matching: {}", r.duplicates);
    let _ = writeln!(out, "  left in the dead queue: {}", r.left_in_queue);
    let _ = writeln!(out, "  took {:.1} s", r.elapsed_ms as f64 / 1000.0);
    if r.dry_run {
        let _ = writeln!(out, "dry run: nothing was changed");
    }
    if r.failed > 0 && r.stopped.is_none() {
        let _ = writeln!(
            out,
            "NOT EVERYTHING MOVED: RabbitMQ refused {} copies (see the warnings above); those \
             events are still dead, in order: fix the cause and run the same command again",
            r.failed
        );
    }
    if let Some(why) = &r.stopped {
        let _ = writeln!(
            out,
            "STOPPED EARLY: {why}\nthe rest is still dead, in order: run the same command again"
        );
    }
    out
}

/// `dlq purge`, before anything is removed: what matches.
pub fn purge_preview(matched: &Stats) -> String {
    format!(
        "events that match (these are removed with --yes):\n{}",
        stats(matched)
    )
}

/// `dlq purge`, at the end: what was removed, or why nothing was.
pub fn purged(p: &Purged) -> String {
    if p.refused {
        format!(
            "\nrefused: nothing was removed. Run the same command with --yes to remove these {} events.\n",
            p.matched.count
        )
    } else {
        format!("\nremoved {} events from {}\n", p.removed, p.matched.queue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_text_is_clipped_with_an_ellipsis() {
        assert_eq!(clip("abcdef", 4), "abc…");
        assert_eq!(clip("abc", 4), "abc");
        assert_eq!(clip("ñañaña", 3), "ña…");
    }

    #[test]
    fn a_dry_run_says_nothing_changed() {
        let text = replayed(&Replayed {
            dry_run: true,
            picked: 3,
            matched: 4,
            not_replayable: 1,
            ..Replayed::default()
        });
        assert!(text.starts_with("would replay 3 of 4"), "{text}");
        assert!(text.contains("nothing was changed"), "{text}");
    }
}
