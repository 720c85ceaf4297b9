//! Latency histograms, status counts and process samples, and the report line.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;

/// What one run measured.
pub struct RunStats {
    pub name: String,
    /// Microseconds, 1 µs to 60 s.
    pub latency: Histogram<u64>,
    pub statuses: BTreeMap<u16, u64>,
    pub errors: u64,
    pub accepted_events: u64,
    pub elapsed: Duration,
}

impl RunStats {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            latency: Histogram::new_with_bounds(1, 60_000_000, 3)
                .unwrap_or_else(|_| unreachable!("valid bounds")),
            statuses: BTreeMap::new(),
            errors: 0,
            accepted_events: 0,
            elapsed: Duration::ZERO,
        }
    }

    pub fn record(&mut self, latency: Duration, status: Option<u16>, accepted: u64) {
        let micros = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        let _ = self.latency.record(micros.min(60_000_000));
        match status {
            Some(code) => *self.statuses.entry(code).or_default() += 1,
            None => self.errors += 1,
        }
        self.accepted_events += accepted;
    }

    pub fn merge(&mut self, other: &RunStats) {
        let _ = self.latency.add(&other.latency);
        for (code, n) in &other.statuses {
            *self.statuses.entry(*code).or_default() += n;
        }
        self.errors += other.errors;
        self.accepted_events += other.accepted_events;
    }

    pub fn requests(&self) -> u64 {
        self.latency.len()
    }

    pub fn per_second(&self, n: u64) -> f64 {
        n as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn ms(&self, quantile: f64) -> f64 {
        self.latency.value_at_quantile(quantile) as f64 / 1000.0
    }

    /// One table row: name, req/s, events/s, latency quantiles, statuses.
    pub fn row(&self) -> String {
        let statuses: Vec<String> = self
            .statuses
            .iter()
            .map(|(code, n)| format!("{code}:{n}"))
            .chain((self.errors > 0).then(|| format!("err:{}", self.errors)))
            .collect();
        format!(
            "| {} | {:.0} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {} |",
            self.name,
            self.per_second(self.requests()),
            self.per_second(self.accepted_events),
            self.ms(0.5),
            self.ms(0.9),
            self.ms(0.99),
            self.ms(0.999),
            self.latency.max() as f64 / 1000.0,
            statuses.join(" "),
        )
    }

    pub fn header() -> &'static str {
        "| run | req/s | events/s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | statuses |\n|---|---|---|---|---|---|---|---|---|"
    }
}

/// CPU seconds and peak RSS of a process, from /proc.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcSample {
    pub cpu_seconds: f64,
    pub peak_rss_kib: u64,
    pub rss_kib: u64,
}

impl ProcSample {
    pub fn read(pid: u32) -> Option<Self> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Fields after the command name (which may hold spaces) start after ") ".
        let after = stat.rsplit_once(") ")?.1;
        let fields: Vec<&str> = after.split(' ').collect();
        let ticks: f64 =
            fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let kib = |key: &str| {
            status
                .lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        Some(Self {
            // USER_HZ is 100 on Linux.
            cpu_seconds: ticks / 100.0,
            peak_rss_kib: kib("VmHWM:"),
            rss_kib: kib("VmRSS:"),
        })
    }
}
