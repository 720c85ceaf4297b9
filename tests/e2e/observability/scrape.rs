//! Reading a `/metrics` page the way Prometheus would: samples by name and
//! exact label set, and `promtool check metrics` when it is installed.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};

/// One scrape of an admin port.
pub struct Scrape {
    pub text: String,
}

impl Scrape {
    pub async fn fetch(admin: SocketAddr) -> Self {
        let text = reqwest::get(format!("http://{admin}/metrics"))
            .await
            .expect("the admin port answers")
            .text()
            .await
            .expect("a text body");
        Self { text }
    }

    /// The value of the sample named `name` with exactly these labels.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let wanted: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.samples()
            .find(|(n, l, _)| n == name && *l == wanted)
            .map(|(_, _, v)| v)
    }

    /// [`Self::value`], or a panic naming the missing sample.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.value(name, labels)
            .unwrap_or_else(|| panic!("no sample {name}{labels:?} in:\n{}", self.text))
    }

    /// Every sample name (histograms give their `_bucket`, `_sum`, `_count`).
    pub fn names(&self) -> BTreeSet<String> {
        self.samples().map(|(name, _, _)| name).collect()
    }

    fn samples(&self) -> impl Iterator<Item = (String, BTreeMap<String, String>, f64)> + '_ {
        self.text
            .lines()
            .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
            .filter_map(parse_sample)
    }
}

/// `name{a="x",b="y"} 1` → (name, labels, value). Sluice's label values hold
/// no quotes or commas, so a plain split is enough.
fn parse_sample(line: &str) -> Option<(String, BTreeMap<String, String>, f64)> {
    let (series, value) = line.rsplit_once(' ')?;
    let value = value.parse().ok()?;
    let (name, labels) = match series.split_once('{') {
        Some((name, rest)) => (name, rest.strip_suffix('}')?),
        None => (series, ""),
    };
    let labels = labels
        .split(',')
        .filter(|pair| !pair.is_empty())
        .filter_map(|pair| {
            let (key, value) = pair.split_once('=')?;
            Some((key.to_owned(), value.trim_matches('"').to_owned()))
        })
        .collect();
    Some((name.to_owned(), labels, value))
}

/// Runs `promtool check metrics` on `text`; `None` when promtool is not
/// installed (scripts/test.sh installs it), else its verdict and output.
pub fn promtool_check_metrics(text: &str) -> Option<(bool, String)> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(text.as_bytes())
        .expect("promtool reads the page");
    let output = child.wait_with_output().expect("promtool runs");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Some((output.status.success(), said))
}

#[test]
fn samples_are_read_by_name_and_exact_labels() {
    let scrape = Scrape {
        text: "# HELP x h\nx_total{a=\"1\",b=\"2\"} 3\nx_total{a=\"1\"} 4\ny 5\n".into(),
    };
    assert_eq!(
        scrape.value("x_total", &[("a", "1"), ("b", "2")]),
        Some(3.0)
    );
    assert_eq!(scrape.value("x_total", &[("a", "1")]), Some(4.0));
    assert_eq!(scrape.value("y", &[]), Some(5.0));
    assert_eq!(scrape.value("x_total", &[("b", "2")]), None);
    assert!(scrape.names().contains("y"));
}
