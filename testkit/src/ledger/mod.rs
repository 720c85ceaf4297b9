//! The providers' side of a fault or cluster test, and its books. A dozen
//! clients send signed events as providers do: each event is retried, the
//! same bytes every time, after every 503, timeout or refused connection,
//! until it is answered 200 or the test ends. Given several gateways, each
//! event starts at the next one and each retry moves on to the one after,
//! as a load balancer spreads them. A profile may also send every accepted
//! event once more after the next one ([`LoadProfile::redeliver`]), as
//! providers redeliver. The ledger keeps every answer (and which gateway
//! gave it) and the ids answered 200; [`audit`] then checks them against
//! what reached the downstream and the dead queue, and the [`Book`] tells
//! how long each gateway went without accepting a new event.
//!
//! Each attempt carries an `x-request-id` of its own (`<event id>.<attempt>`),
//! which the gateway puts on the message it publishes (`x-sluice-request-id`)
//! and the worker sends downstream (`x-request-id`) on every delivery of that
//! message. So two copies of an event with different request ids were
//! published twice by the gateway, while two with the same one are one
//! message delivered twice by the worker (a redelivery, at-least-once).

pub mod audit;

use std::collections::{BTreeMap, HashMap};
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
    /// Once an event is answered 200, send the one before it again (until
    /// it is answered 200 too), as providers redeliver what they sent.
    pub redeliver: bool,
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
        redeliver: false,
    };

    /// The cluster tests' load: twelve providers, each posting its next
    /// event 40 ms after the last 200, retrying every 200 ms, and
    /// redelivering each event once.
    pub const REDELIVERING: Self = Self {
        pace: Duration::from_millis(40),
        retry_wait_cap: Duration::from_millis(200),
        redeliver: true,
        ..Self::DEFAULT
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
    /// Which gateway (index in the URLs given) answered.
    pub gateway: usize,
    /// Whether the request redelivered an event answered 200 before.
    pub redelivery: bool,
}

/// An event's 200.
#[derive(Debug, Clone, Copy)]
pub struct Acked {
    pub at: Instant,
    pub attempt: u32,
    /// Which gateway answered it.
    pub gateway: usize,
}

/// Everything the providers saw.
#[derive(Debug, Default, Clone)]
pub struct Book {
    pub answers: Vec<Answer>,
    /// Event id → when it was first answered 200, which attempt was, and where.
    pub acked: HashMap<String, Acked>,
    /// Events still unanswered with a 200 when the test ended.
    pub unacked: Vec<String>,
    /// Event id → what each of its attempts got, for events tried more than once.
    pub retried: HashMap<String, Vec<Outcome>>,
    /// Redeliveries answered 200.
    pub resent: usize,
    /// Answers other than 200, by kind: the status and the gateway's
    /// message (`503 not accepted: ...`), or how the request failed.
    pub refusals: BTreeMap<String, usize>,
    /// How many gateways the load was spread over.
    pub gateways: usize,
}

/// One gateway's acceptance after a fault, from [`Book::per_gateway`].
#[derive(Debug, Clone, Copy)]
pub struct GatewayFigures {
    /// New events it accepted.
    pub accepted: usize,
    /// From the fault to its first.
    pub first: Option<Duration>,
    /// Its longest time without accepting a new event...
    pub longest_silence: Duration,
    /// ...which began this long after the fault.
    pub silence_began: Duration,
}

impl Book {
    /// Answers other than 200 (each retried).
    pub fn refused(&self) -> usize {
        self.refusals.values().sum()
    }

    /// The refusals by kind, most frequent first.
    pub fn refusals_by_count(&self) -> Vec<(String, usize)> {
        let mut kinds: Vec<(String, usize)> =
            self.refusals.iter().map(|(k, n)| (k.clone(), *n)).collect();
        kinds.sort_by_key(|kind| std::cmp::Reverse(kind.1));
        kinds
    }

    /// Events first answered 200 after `moment` (a fault): load went on.
    pub fn acked_since(&self, moment: Instant) -> usize {
        self.acked.values().filter(|a| a.at > moment).count()
    }

    /// Per gateway, from `from` (a fault) to `to` (the load's end): the new
    /// events it accepted, and its longest time without accepting one.
    pub fn per_gateway(&self, from: Instant, to: Instant) -> Vec<GatewayFigures> {
        (0..self.gateways)
            .map(|gateway| {
                let times = self.accepted_by(gateway, from, Some(to));
                let mut last = from;
                let mut silence = (Duration::ZERO, Duration::ZERO);
                for &at in times.iter().chain([&to]) {
                    if at - last > silence.0 {
                        silence = (at - last, last - from);
                    }
                    last = at;
                }
                GatewayFigures {
                    accepted: times.len(),
                    first: times.first().map(|at| *at - from),
                    longest_silence: silence.0,
                    silence_began: silence.1,
                }
            })
            .collect()
    }

    /// The longest time any one gateway went without accepting a new event
    /// from `from` to `to`: how long acceptance took to resume after a
    /// fault at `from`. Only new events count: a redelivery is answered 200
    /// from the dedup store without a publish, so it would hide a broker
    /// that refuses every publish.
    pub fn longest_silence(&self, from: Instant, to: Instant) -> Duration {
        let figures = self.per_gateway(from, to);
        figures
            .iter()
            .map(|g| g.longest_silence)
            .max()
            .unwrap_or_default()
    }

    /// When `gateway` accepted new events after `from` (and before `to`), in order.
    fn accepted_by(&self, gateway: usize, from: Instant, to: Option<Instant>) -> Vec<Instant> {
        let mut times: Vec<Instant> = self
            .acked
            .values()
            .filter(|a| a.gateway == gateway && a.at > from && to.is_none_or(|to| a.at < to))
            .map(|a| a.at)
            .collect();
        times.sort();
        times
    }
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
    /// `<prefix>-p<client>-<n>` to the gateways at `urls` (one or more).
    pub fn start(urls: &[String], prefix: &str, profile: LoadProfile) -> Self {
        assert!(!urls.is_empty(), "a load needs a gateway to send to");
        let book = Arc::new(Mutex::new(Book {
            gateways: urls.len(),
            ..Book::default()
        }));
        let urls: Arc<[String]> = Arc::from(urls);
        let (no_new, give_up) = (CancellationToken::new(), CancellationToken::new());
        let providers = (0..profile.clients)
            .map(|n| {
                let provider = Provider {
                    client: reqwest::Client::builder()
                        .timeout(profile.timeout)
                        .build()
                        .expect("an HTTP client"),
                    urls: urls.clone(),
                    index: n,
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
    urls: Arc<[String]>,
    /// The provider's number: where its rotation over the gateways starts.
    index: usize,
    name: String,
    profile: LoadProfile,
    book: Arc<Mutex<Book>>,
    give_up: CancellationToken,
}

/// The attempts of one event so far: each has an `x-request-id` of its own.
struct Sent {
    id: String,
    attempts: u32,
}

impl Provider {
    async fn run(self, no_new: CancellationToken) {
        let mut previous: Option<Sent> = None;
        for n in 0.. {
            if no_new.is_cancelled() {
                break;
            }
            // Each event starts at the next gateway, as a load balancer spreads them.
            let mut turn = self.index + n;
            let mut sent = Sent {
                id: format!("{}-{n}", self.name),
                attempts: 0,
            };
            let accepted = self.deliver(&mut sent, &mut turn, false).await;
            if accepted && self.profile.redeliver {
                if let Some(mut old) = previous.take() {
                    self.deliver(&mut old, &mut turn, true).await;
                }
                previous = Some(sent);
            }
            tokio::select! {
                () = tokio::time::sleep(self.profile.pace) => {}
                () = no_new.cancelled() => break,
            }
        }
    }

    /// Sends one event until it is answered 200 (true) or the provider
    /// gives up (false); each attempt goes to the gateway after the last.
    async fn deliver(&self, sent: &mut Sent, turn: &mut usize, redelivery: bool) -> bool {
        let body = upsert_body(&sent.id).replace("hola", &"a".repeat(self.profile.text_bytes));
        loop {
            sent.attempts += 1;
            let gateway = *turn % self.urls.len();
            *turn += 1;
            let request_id = format!("{}.{}", sent.id, sent.attempts);
            let (answer, retry_after) = self.send(gateway, &body, &request_id, redelivery).await;
            match self.record(&sent.id, sent.attempts, answer) {
                Recorded::Accepted => return true,
                Recorded::GivenUp => return false,
                Recorded::Refused => {}
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

    /// Writes an answer down and says what it means for the event.
    fn record(&self, id: &str, attempt: u32, answer: Answer) -> Recorded {
        let mut book = self.book.lock().expect("the book");
        book.answers.push(answer);
        let accepted = answer.outcome == Outcome::Status(200);
        if answer.redelivery {
            if accepted {
                book.resent += 1;
                return Recorded::Accepted;
            }
            // A redelivery is not owed a 200: the event was accepted before.
            return match self.give_up.is_cancelled() {
                true => Recorded::GivenUp,
                false => Recorded::Refused,
            };
        }
        if attempt > 1 || !accepted {
            let tries = book.retried.entry(id.to_owned()).or_default();
            tries.push(answer.outcome);
        }
        if accepted {
            let acked = Acked {
                at: answer.at,
                attempt,
                gateway: answer.gateway,
            };
            book.acked.insert(id.to_owned(), acked);
            return Recorded::Accepted;
        }
        if self.give_up.is_cancelled() {
            book.unacked.push(id.to_owned());
            return Recorded::GivenUp;
        }
        Recorded::Refused
    }

    /// One attempt; its answer and the `Retry-After` it asked for. A
    /// refusal is counted by kind in the book.
    async fn send(
        &self,
        gateway: usize,
        body: &str,
        request_id: &str,
        redelivery: bool,
    ) -> (Answer, Duration) {
        let started = Instant::now();
        let sent = self
            .client
            .post(&self.urls[gateway])
            .header("X-Signature", signature(body.as_bytes()))
            .header("Content-Type", "application/json")
            .header("x-request-id", request_id)
            .body(body.to_owned())
            .send()
            .await;
        let (outcome, retry_after, message) = match sent {
            Ok(response) => {
                let retry_after = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok()?.parse().ok())
                    .map_or(Duration::ZERO, Duration::from_secs);
                let status = response.status().as_u16();
                // Read to the end, so the connection is kept for the next request.
                let bytes = response.bytes().await.unwrap_or_default();
                let message = (status != 200).then(|| {
                    let json: serde_json::Value =
                        serde_json::from_slice(&bytes).unwrap_or_default();
                    json["message"].as_str().unwrap_or_default().to_owned()
                });
                (Outcome::Status(status), retry_after, message)
            }
            Err(e) if e.is_timeout() => (Outcome::TimedOut, Duration::ZERO, None),
            Err(e) if e.is_connect() => (Outcome::Refused, Duration::ZERO, None),
            Err(_) => (Outcome::Dropped, Duration::ZERO, None),
        };
        if outcome != Outcome::Status(200) {
            let kind = match (outcome, message) {
                (Outcome::Status(status), Some(message)) => format!("{status} {message}"),
                (other, _) => format!("{other:?}"),
            };
            let mut book = self.book.lock().expect("the book");
            *book.refusals.entry(kind).or_insert(0) += 1;
        }
        let answer = Answer {
            at: Instant::now(),
            took: started.elapsed(),
            outcome,
            gateway,
            redelivery,
        };
        (answer, retry_after)
    }
}

/// What an answer meant for its event.
enum Recorded {
    Accepted,
    Refused,
    GivenUp,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silences_are_per_gateway_and_count_new_events_only() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut book = Book {
            gateways: 2,
            ..Book::default()
        };
        for (id, at, gateway) in [("a", 100, 0), ("b", 200, 1), ("c", 1200, 0), ("d", 300, 1)] {
            let acked = Acked {
                at: ms(at),
                attempt: 1,
                gateway,
            };
            book.acked.insert(id.into(), acked);
        }
        // A redelivery answered 200 is no new event: it ends no silence.
        book.answers.push(Answer {
            at: ms(900),
            took: Duration::ZERO,
            outcome: Outcome::Status(200),
            gateway: 1,
            redelivery: true,
        });
        let figures = book.per_gateway(t0, ms(1500));
        assert_eq!(figures[0].accepted, 2);
        assert_eq!(figures[0].first, Some(Duration::from_millis(100)));
        assert_eq!(figures[0].longest_silence, Duration::from_millis(1100));
        assert_eq!(figures[0].silence_began, Duration::from_millis(100));
        assert_eq!(figures[1].longest_silence, Duration::from_millis(1200));
        assert_eq!(figures[1].silence_began, Duration::from_millis(300));
        assert_eq!(
            book.longest_silence(t0, ms(1500)),
            Duration::from_millis(1200)
        );
        assert_eq!(book.acked_since(ms(250)), 2);
    }

    #[test]
    fn refusals_are_counted_by_kind_most_frequent_first() {
        let mut book = Book::default();
        book.refusals.insert("503 not accepted: nack".into(), 3);
        book.refusals.insert("Refused".into(), 5);
        assert_eq!(book.refused(), 8);
        assert_eq!(book.refusals_by_count()[0], ("Refused".into(), 5));
    }
}
