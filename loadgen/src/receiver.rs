//! A fast downstream for the worker: answers 200 at once, counts deliveries
//! and measures end-to-end latency (the envelope's `time`, set when the
//! gateway received the event, to arrival here). A burst ends after an idle
//! gap; each burst prints one report row.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::stats::RunStats;

#[derive(Default)]
struct Burst {
    first: Option<Instant>,
    last: Option<Instant>,
    stats: Option<RunStats>,
}

pub async fn run(listen: &str, idle: Duration, bursts: usize, label: &str) -> anyhow::Result<()> {
    let state = Arc::new(Mutex::new(Burst::default()));
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let app = Router::new()
        .route("/deliver", post(receive))
        .with_state(state.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    eprintln!("receiving on http://{listen}/deliver");
    for n in 1..=bursts {
        let stats = wait_for_burst(&state, idle).await;
        println!("{}", RunStats::header());
        let mut stats = stats;
        stats.name = format!("{label} {n}: worker delivery (e2e latency)");
        println!("{}", stats.row());
    }
    Ok(())
}

async fn wait_for_burst(state: &Arc<Mutex<Burst>>, idle: Duration) -> RunStats {
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut burst = state.lock().await;
        if let (Some(first), Some(last)) = (burst.first, burst.last)
            && last.elapsed() >= idle
        {
            let mut stats = burst.stats.take().unwrap_or_else(|| RunStats::new("burst"));
            stats.elapsed = last - first;
            *burst = Burst::default();
            return stats;
        }
    }
}

async fn receive(State(state): State<Arc<Mutex<Burst>>>, body: Bytes) -> StatusCode {
    let latency = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| {
            v["time"]
                .as_str()
                .and_then(|t| humantime::parse_rfc3339(t).ok())
        })
        .and_then(|sent| SystemTime::now().duration_since(sent).ok())
        .unwrap_or_default();
    let mut burst = state.lock().await;
    let now = Instant::now();
    burst.first.get_or_insert(now);
    burst.last = Some(now);
    burst
        .stats
        .get_or_insert_with(|| RunStats::new("burst"))
        .record(latency, Some(200), 1);
    StatusCode::OK
}
