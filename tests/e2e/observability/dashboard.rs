//! Every `sluice_*` name the Grafana dashboard, the alert rules and their
//! unit tests use is one the binaries really export: both are scraped after
//! traffic and every name found in `deploy/grafana/**/*.json` and
//! `deploy/prometheus/**/*.yml` must be among the scraped sample names
//! (histograms export `_bucket`, `_sum` and `_count`, which is what queries
//! use; a histogram's base name in a runbook text counts through its
//! `_bucket`). A renamed metric therefore fails here instead of leaving an
//! empty panel or an alert that can never fire.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::scrape::Scrape;
use sluice_testkit::downstream::Plan;
use sluice_testkit::{OneEvent, eventually, one_event};

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// Files under `dir` (recursively) whose names end with `suffix`.
fn files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            found.extend(files(&path, suffix));
        } else if path.to_string_lossy().ends_with(suffix) {
            found.push(path);
        }
    }
    found
}

/// Every `sluice_[a-z0-9_]+` word in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("sluice_") {
        let starts_word = rest[..at]
            .chars()
            .next_back()
            .is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_'));
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        if starts_word {
            names.insert(tail[..end].to_owned());
        }
        rest = &tail[end..];
    }
    names
}

/// A sample name, a histogram's base name (its `_bucket` is exported) or,
/// for a name ending in `_` (a comment's `sluice_worker_*`), a prefix of one.
fn is_exported(name: &str, exported: &BTreeSet<String>) -> bool {
    exported.contains(name)
        || exported.contains(&format!("{name}_bucket"))
        || (name.ends_with('_') && exported.iter().any(|e| e.starts_with(name)))
}

/// Names used by the files, with the file each was first found in.
fn used_names(paths: &[PathBuf]) -> Vec<(String, PathBuf)> {
    let mut seen = BTreeSet::new();
    let mut used = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(path).expect("a readable deploy file");
        for name in metric_names(&text) {
            if seen.insert(name.clone()) {
                used.push((name, path.clone()));
            }
        }
    }
    used
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_and_the_alerts_use_is_exported() {
    let dashboards = files(&deploy_dir().join("grafana"), ".json");
    let rules = files(&deploy_dir().join("prometheus"), ".yml");
    assert!(!dashboards.is_empty(), "a provisioned dashboard exists");
    assert!(
        rules
            .iter()
            .any(|p| p.to_string_lossy().ends_with(".rules.yml")),
        "alert rules exist"
    );
    let used = used_names(&[dashboards, rules].concat());
    assert!(
        used.len() >= 15,
        "the deploy files use Sluice's metrics: {used:?}"
    );

    let OneEvent {
        env,
        downstream,
        gateway,
        worker,
        id,
    } = one_event("dashboard", Plan::Succeed, |config| {
        config.worker.queue_depth_interval = Duration::from_millis(200);
    })
    .await;
    let polled = eventually(Duration::from_secs(20), || async {
        downstream.delivered_ids().contains(&id)
            && Scrape::fetch(worker.admin_addr)
                .await
                .value("sluice_worker_queue_depth", &[("queue", "dead")])
                .is_some()
    })
    .await;
    assert!(
        polled,
        "the event was delivered and the queue depths polled"
    );

    let mut exported = Scrape::fetch(gateway.admin_addr).await.names();
    exported.extend(Scrape::fetch(worker.admin_addr).await.names());
    let missing: Vec<String> = used
        .iter()
        .filter(|(name, _)| !is_exported(name, &exported))
        .map(|(name, path)| format!("{name} (in {})", path.display()))
        .collect();
    assert!(
        missing.is_empty(),
        "used in deploy/ but exported by neither binary: {missing:#?}\nexported: {exported:#?}"
    );

    worker.stop().await;
    gateway.stop().await;
    env.assert_queues_empty_and_delete().await;
}

#[test]
fn histogram_base_names_and_family_prefixes_count_as_exported() {
    let exported: BTreeSet<String> = ["sluice_a_seconds_bucket", "sluice_b_total"]
        .map(str::to_owned)
        .into();
    assert!(is_exported("sluice_a_seconds", &exported));
    assert!(is_exported("sluice_a_seconds_bucket", &exported));
    assert!(is_exported("sluice_b_", &exported));
    assert!(!is_exported("sluice_b", &exported));
    assert!(!is_exported("sluice_c_", &exported));
}

#[test]
fn names_are_found_whole_and_only_with_the_prefix() {
    let names = metric_names(
        r#"rate(sluice_gateway_requests_total{x="y"}[5m]) / not_sluice_x + sluice_worker_in_flight"#,
    );
    let names: Vec<_> = names.iter().map(String::as_str).collect();
    assert_eq!(
        names,
        ["sluice_gateway_requests_total", "sluice_worker_in_flight"]
    );
}
