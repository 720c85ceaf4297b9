//! The providers' side of a fault test, and its books. A dozen clients send
//! signed events as providers do: each event is retried, the same bytes
//! every time, after every 503, timeout or refused connection, until it is
//! answered 200 or the test ends. The ledger keeps every answer and the ids
//! answered 200; [`audit`] then checks them against what reached the
//! downstream and the dead queue.
//!
//! Each attempt carries an `x-request-id` of its own (`<event id>.<attempt>`),
//! which the gateway puts on the message it publishes (`x-sluice-request-id`)
//! and the worker sends downstream (`x-request-id`) on every delivery of that
//! message. So two copies of an event with different request ids were
//! published twice by the gateway, while two with the same one are one
//! message delivered twice by the worker (a redelivery, at-least-once).

pub mod audit;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{signature, upsert_body};

/// How the providers send.
#[derive(Debug, Clone, Copy)]
pub struct LoadProfile {
    /// Providers sending at once, each one event at a time.
    pub clients: usize,
    /// A provider's pause between one event's 200 and its next event.
    pub pace: Duration,
    /// The longest `Retry-After` a provider honours: the gateway asks for
    /// 5 s by default; waiting less covers more retries in a short test.
    pub retry_wait_cap: Duration,
    /// Pause after a timeout or a failed connection.
    pub error_wait: Duration,
    /// The providers' HTTP timeout.
    pub timeout: Duration,
    /// Bytes of text in each event (its size on the wire).
    pub text_bytes: usize,
}

impl LoadProfile {
    /// Twelve providers, each about ten events a second when all is well.
    pub const DEFAULT: Self = Self {
        clients: 12,
        pace: Duration::from_millis(100),
        retry_wait_cap: Duration::from_secs(1),
        error_wait: Duration::from_millis(200),
        timeout: Duration::from_secs(5),
        text_bytes: 4,
    };
}

impl Default for LoadProfile {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// What became of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Outcome {
    Status(u16),
    /// The connection was refused (nothing listens).
    Refused,
    /// Sent, and the connection failed before an answer.
    Dropped,
    /// No answer within the providers' timeout.
    TimedOut,
}

/// One request's answer.
#[derive(Debug, Clone, Copy)]
pub struct Answer {
    pub at: Instant,
    pub took: Duration,
    pub outcome: Outcome,
}

/// An event's 200.
#[derive(Debug, Clone, Copy)]
pub struct Acked {
    pub at: Instant,
    pub attempt: u32,
}

/// Everything the providers saw.
#[derive(Debug, Default, Clone)]
pub struct Book {
    pub answers: Vec<Answer>,
    /// Event id → when it was answered 200, and which attempt was.
    pub acked: HashMap<String, Acked>,
    /// Events still unanswered with a 200 when the test ended.
    pub unacked: Vec<String>,
    /// Event id → what each of its attempts got, for events tried more than once.
    pub retried: HashMap<String, Vec<Outcome>>,
}

pub struct Ledger {
    book: Arc<Mutex<Book>>,
    /// Cancelled: providers start no new event.
    no_new: CancellationToken,
    /// Cancelled: providers stop retrying.
    give_up: CancellationToken,
    providers: Vec<JoinHandle<()>>,
}

impl Ledger {
    /// Starts `profile.clients` providers posting events named
    /// `<prefix>-p<client>-<n>` to `url`.
    pub fn start(url: &str, prefix: &str, profile: LoadProfile) -> Self {
        let book = Arc::new(Mutex::new(Book::default()));
        let (no_new, give_up) = (CancellationToken::new(), CancellationToken::new());
        let providers = (0..profile.clients)
            .map(|n| {
                let provider = Provider {
                    client: reqwest::Client::builder()
                        .timeout(profile.timeout)
                        .build()
                        .expect("an HTTP client"),
                    url: url.to_owned(),
                    name: format!("{prefix}-p{n}"),
                    profile,
                    book: book.clone(),
                    give_up: give_up.clone(),
                };
                tokio::spawn(provider.run(no_new.clone()))
            })
            .collect();
        Self {
            book,
            no_new,
            give_up,
            providers,
        }
    }

    /// Events answered 200 so far.
    pub fn acked(&self) -> usize {
        self.book.lock().expect("the book").acked.len()
    }

    /// Events answered 200 after `moment`.
    pub fn acked_after(&self, moment: Instant) -> Vec<String> {
        let book = self.book.lock().expect("the book");
        let after = book.acked.iter().filter(|(_, acked)| acked.at >= moment);
        after.map(|(id, _)| id.clone()).collect()
    }

    /// A copy of the books as they stand.
    pub fn book(&self) -> Book {
        self.book.lock().expect("the book").clone()
    }

    /// Ends the load: no new events; each event still retried gets up to
    /// `limit` to be answered 200. Returns the books.
    pub async fn finish(self, limit: Duration) -> Book {
        self.no_new.cancel();
        let give_up = self.give_up.clone();
        let deadline = tokio::spawn(async move {
            tokio::time::sleep(limit).await;
            give_up.cancel();
        });
        for provider in self.providers {
            provider.await.expect("a provider ran to its end");
        }
        deadline.abort();
        self.book.lock().expect("the book").clone()
    }
}

/// One provider: its own connections, its own events.
struct Provider {
    client: reqwest::Client,
    url: String,
    name: String,
    profile: LoadProfile,
    book: Arc<Mutex<Book>>,
    give_up: CancellationToken,
}

impl Provider {
    async fn run(self, no_new: CancellationToken) {
        for n in 0.. {
            if no_new.is_cancelled() {
                break;
            }
            self.deliver(&format!("{}-{n}", self.name)).await;
            tokio::select! {
                () = tokio::time::sleep(self.profile.pace) => {}
                () = no_new.cancelled() => break,
            }
        }
    }

    /// Sends one event until it is answered 200 or the provider gives up.
    async fn deliver(&self, id: &str) {
        let body = upsert_body(id).replace("hola", &"a".repeat(self.profile.text_bytes));
        for attempt in 1_u32.. {
            let (answer, retry_after) = self.send(&body, &format!("{id}.{attempt}")).await;
            if self.record(id, attempt, answer) {
                return;
            }
            let wait = match answer.outcome {
                Outcome::Status(_) => retry_after.min(self.profile.retry_wait_cap),
                _ => self.profile.error_wait,
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.give_up.cancelled() => {}
            }
        }
    }

    /// Writes an answer down; true when the event is done with (answered
    /// 200, or given up on).
    fn record(&self, id: &str, attempt: u32, answer: Answer) -> bool {
        let mut book = self.book.lock().expect("the book");
        book.answers.push(answer);
        if attempt > 1 || answer.outcome != Outcome::Status(200) {
            let tries = book.retried.entry(id.to_owned()).or_default();
            tries.push(answer.outcome);
        }
        if answer.outcome == Outcome::Status(200) {
            let acked = Acked {
                at: answer.at,
                attempt,
            };
            book.acked.insert(id.to_owned(), acked);
            return true;
        }
        if self.give_up.is_cancelled() {
            book.unacked.push(id.to_owned());
            return true;
        }
        false
    }

    /// One attempt; its answer and the `Retry-After` it asked for.
    async fn send(&self, body: &str, request_id: &str) -> (Answer, Duration) {
        let started = Instant::now();
        let sent = self
            .client
            .post(&self.url)
            .header("X-Signature", signature(body.as_bytes()))
            .header("Content-Type", "application/json")
            .header("x-request-id", request_id)
            .body(body.to_owned())
            .send()
            .await;
        let (outcome, retry_after) = match sent {
            Ok(response) => {
                let retry_after = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok()?.parse().ok())
                    .map_or(Duration::ZERO, Duration::from_secs);
                let status = response.status().as_u16();
                // Read to the end, so the connection is kept for the next request.
                let _ = response.bytes().await;
                (Outcome::Status(status), retry_after)
            }
            Err(e) if e.is_timeout() => (Outcome::TimedOut, Duration::ZERO),
            Err(e) if e.is_connect() => (Outcome::Refused, Duration::ZERO),
            Err(_) => (Outcome::Dropped, Duration::ZERO),
        };
        let answer = Answer {
            at: Instant::now(),
            took: started.elapsed(),
            outcome,
        };
        (answer, retry_after)
    }
}
