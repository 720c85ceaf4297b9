//! A progress bar for long replays, drawn only when stderr is a terminal
//! (never into a log file, a pipe or an HTTP answer).

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

/// A bar, or nothing.
pub struct Progress(Option<ProgressBar>);

impl Progress {
    /// No bar (HTTP, scripts).
    pub fn hidden() -> Self {
        Self(None)
    }

    /// A bar of `len` steps on stderr, when stderr is a terminal.
    pub fn on_terminal(len: u64, message: &'static str) -> Self {
        if !std::io::stderr().is_terminal() {
            return Self::hidden();
        }
        let bar = ProgressBar::new(len).with_message(message);
        if let Ok(style) = ProgressStyle::with_template(
            "{msg} [{bar:40}] {pos}/{len} ({elapsed} so far, {eta} left)",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        Self(Some(bar))
    }

    pub fn step(&self) {
        if let Some(bar) = &self.0 {
            bar.inc(1);
        }
    }

    /// Removes the bar; the summary follows on stdout.
    pub fn finish(&self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}
