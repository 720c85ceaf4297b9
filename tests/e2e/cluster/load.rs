//! Steady load as providers send it: a dozen clients, each posting new
//! events one after another and retrying any answer but 200 (a 503, a
//! refused connection) with the same event until it is accepted, then
//! sending the event it had before once more, as providers redeliver.
//! The ledger keeps every id answered 200, and when.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use sluice_testkit::{signature, upsert_body};

/// What the clients saw.
#[derive(Default)]
pub struct Ledger {
    /// Each id answered 200 the first time, with when and through which gateway.
    accepted: Mutex<Vec<(String, Instant, usize)>>,
    /// Answers other than 200 (and failed connections), each retried.
    pub refused: AtomicU64,
    /// Redeliveries answered 200.
    pub resent: AtomicU64,
    /// The refusals by status and error code (`503 unavailable`, `connect`).
    refusals: Mutex<HashMap<String, u64>>,
}

impl Ledger {
    /// The refusals by kind, most frequent first.
    pub fn refusals(&self) -> Vec<(String, u64)> {
        let refusals = self.refusals.lock().expect("lock");
        let mut kinds: Vec<(String, u64)> = refusals.iter().map(|(k, n)| (k.clone(), *n)).collect();
        kinds.sort_by_key(|kind| std::cmp::Reverse(kind.1));
        kinds
    }

    pub fn ids(&self) -> Vec<String> {
        let accepted = self.accepted.lock().expect("lock");
        accepted.iter().map(|(id, _, _)| id.clone()).collect()
    }

    /// Ids accepted after `after` (a fault), to show load went on.
    pub fn accepted_after(&self, after: Instant) -> usize {
        let accepted = self.accepted.lock().expect("lock");
        accepted.iter().filter(|(_, at, _)| *at > after).count()
    }

    /// Per gateway: 200s after `from`, and the time of its first one.
    pub fn per_gateway(&self, from: Instant, gateways: usize) -> Vec<(usize, Option<Duration>)> {
        let accepted = self.accepted.lock().expect("lock");
        (0..gateways)
            .map(|gateway| {
                let after = accepted
                    .iter()
                    .filter(|(_, at, g)| *g == gateway && *at > from);
                let first = after.clone().map(|(_, at, _)| *at - from).min();
                (after.count(), first)
            })
            .collect()
    }

    /// The longest time any one gateway went without a 200 from `from` to
    /// `to`: how long acceptance took to resume after a fault at `from`.
    pub fn longest_silence(&self, from: Instant, to: Instant, gateways: usize) -> Duration {
        let accepted = self.accepted.lock().expect("lock");
        (0..gateways)
            .map(|gateway| {
                let mut times: Vec<Instant> = accepted
                    .iter()
                    .filter(|(_, at, g)| *g == gateway && *at > from && *at < to)
                    .map(|(_, at, _)| *at)
                    .collect();
                times.sort();
                let mut last = from;
                let mut longest = Duration::ZERO;
                for at in times.into_iter().chain([to]) {
                    longest = longest.max(at - last);
                    last = at;
                }
                longest
            })
            .max()
            .unwrap_or_default()
    }
}

/// Clients posting until stopped.
pub struct Load {
    pub ledger: Arc<Ledger>,
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Load {
    /// `clients` clients spreading over the gateways at `urls`.
    pub fn start(clients: usize, urls: Vec<String>, prefix: &str) -> Self {
        let ledger = Arc::new(Ledger::default());
        let stop = CancellationToken::new();
        let urls = Arc::new(urls);
        let tasks = (0..clients)
            .map(|client| {
                let (ledger, stop, urls) = (ledger.clone(), stop.clone(), urls.clone());
                let prefix = format!("{prefix}-c{client}");
                tokio::spawn(
                    async move { run_client(client, &prefix, &urls, &ledger, &stop).await },
                )
            })
            .collect();
        Self {
            ledger,
            stop,
            tasks,
        }
    }

    /// Stops the clients (each finishes the event it is on) and returns the ledger.
    pub async fn finish(self) -> Arc<Ledger> {
        self.stop.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
        self.ledger
    }
}

async fn run_client(
    client: usize,
    prefix: &str,
    urls: &[String],
    ledger: &Ledger,
    stop: &CancellationToken,
) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let mut previous: Option<String> = None;
    for n in 0.. {
        // Each event starts at the next gateway, as a load balancer
        // spreads requests; a retry moves on to the one after.
        let mut attempt = client + n;
        if stop.is_cancelled() {
            return;
        }
        let id = format!("{prefix}-{n}");
        let gateway = send_until_accepted(&http, urls, &id, &mut attempt, ledger).await;
        ledger
            .accepted
            .lock()
            .expect("lock")
            .push((id.clone(), Instant::now(), gateway));
        if let Some(old) = previous.replace(id) {
            send_until_accepted(&http, urls, &old, &mut attempt, ledger).await;
            ledger.resent.fetch_add(1, Ordering::Relaxed);
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
}

/// Posts the event until a gateway answers 200, starting after gateway
/// `attempt`; returns which one answered.
/// Gives up after a minute, which fails the test.
async fn send_until_accepted(
    http: &reqwest::Client,
    urls: &[String],
    id: &str,
    attempt: &mut usize,
    ledger: &Ledger,
) -> usize {
    let body = upsert_body(id);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        *attempt += 1;
        let gateway = *attempt % urls.len();
        let answer = http
            .post(&urls[gateway])
            .header("X-Signature", signature(body.as_bytes()))
            .header("Content-Type", "application/json")
            .body(body.clone())
            .send()
            .await;
        let kind = match answer {
            Ok(answer) if answer.status() == 200 => return gateway,
            Ok(answer) => {
                let status = answer.status().as_u16();
                let body: serde_json::Value = answer.json().await.unwrap_or_default();
                format!("{status} {}", body["message"].as_str().unwrap_or_default())
            }
            Err(_) => "no answer".to_owned(),
        };
        *ledger
            .refusals
            .lock()
            .expect("lock")
            .entry(kind)
            .or_insert(0) += 1;
        ledger.refused.fetch_add(1, Ordering::Relaxed);
        assert!(Instant::now() < deadline, "{id} was never accepted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Copies delivered per id, from the downstream's record.
pub fn copies(deliveries: &[sluice_testkit::downstream::Delivered]) -> HashMap<String, usize> {
    let mut copies = HashMap::new();
    for delivery in deliveries {
        *copies.entry(delivery.id.clone()).or_insert(0) += 1;
    }
    copies
}
