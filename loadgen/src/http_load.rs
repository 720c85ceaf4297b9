//! Driving the gateway over HTTP with raw keep-alive connections: closed loop
//! (N connections, each sends as soon as it is answered) and open loop (a fixed rate; latency counted from
//! the intended send time, so a slow gateway cannot hide queueing).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use std::net::SocketAddr;

use bytes::Bytes;
use tokio::sync::{Mutex, Semaphore};
use tokio::time::Instant;

use crate::raw_http;
use crate::requests::Prepared;
use crate::stats::RunStats;

/// N connections share the prepared list; stops at its end or after `limit`.
pub async fn closed(
    name: &str,
    addr: SocketAddr,
    path: &str,
    requests: Vec<Prepared>,
    connections: usize,
    limit: Duration,
) -> RunStats {
    let wire: Arc<Vec<Bytes>> = Arc::new(
        requests
            .iter()
            .map(|r| raw_http::serialise(addr, path, r))
            .collect(),
    );
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let deadline = started + limit;
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (wire, next, name) = (wire.clone(), next.clone(), name.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut stats = RunStats::new(&name);
            let mut connection = None;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= wire.len() || Instant::now() >= deadline {
                    return stats;
                }
                let t0 = Instant::now();
                let answer = match connection.take() {
                    Some(open) => Ok(open),
                    None => raw_http::Connection::open(addr).await,
                };
                let Ok(mut open) = answer else {
                    stats.record(t0.elapsed(), None, 0);
                    continue;
                };
                match open.exchange(&wire[i]).await {
                    Ok(answer) => {
                        stats.record(t0.elapsed(), Some(answer.status), accepted(&answer.body));
                        connection = Some(open);
                    }
                    Err(_) => stats.record(t0.elapsed(), None, 0),
                }
            }
        }));
    }
    let mut total = RunStats::new(name);
    for task in tasks {
        if let Ok(stats) = task.await {
            total.merge(&stats);
        }
    }
    total.elapsed = started.elapsed();
    total
}

/// The `accepted` count of a gateway answer.
fn accepted(body: &[u8]) -> u64 {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["accepted"].as_u64())
        .unwrap_or(0)
}

/// Sends at `rate` per second for `limit`; each latency starts at the intended send time.
pub async fn open(
    name: &str,
    addr: SocketAddr,
    path: &str,
    requests: Vec<Prepared>,
    rate: f64,
    limit: Duration,
) -> RunStats {
    let stats = Arc::new(Mutex::new(RunStats::new(name)));
    // Idle keep-alive connections; a request opens a new one only when none is free.
    let idle: Arc<Mutex<Vec<raw_http::Connection>>> = Arc::default();
    // Bounds memory if the gateway stalls; waiting for a permit still counts as latency.
    let in_flight = Arc::new(Semaphore::new(4096));
    let started = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / rate.max(1e-6));
    let mut handles = Vec::new();
    for (i, request) in requests.iter().enumerate() {
        let intended = started + interval.mul_f64(i as f64);
        if intended >= started + limit {
            break;
        }
        let wire = raw_http::serialise(addr, path, request);
        tokio::time::sleep_until(intended).await;
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            break;
        };
        let (stats, idle) = (stats.clone(), idle.clone());
        handles.push(tokio::spawn(async move {
            let pooled = idle.lock().await.pop();
            let connection = match pooled {
                Some(connection) => Ok(connection),
                None => raw_http::Connection::open(addr).await,
            };
            let (status, accepted) = match connection {
                Ok(mut connection) => match connection.exchange(&wire).await {
                    Ok(answer) => {
                        idle.lock().await.push(connection);
                        (Some(answer.status), accepted(&answer.body))
                    }
                    Err(_) => (None, 0),
                },
                Err(_) => (None, 0),
            };
            stats
                .lock()
                .await
                .record(intended.elapsed(), status, accepted);
            drop(permit);
        }));
    }
    for handle in handles {
        let _ = handle.await;
    }
    let mut total = RunStats::new(name);
    total.merge(&*stats.lock().await);
    total.elapsed = started.elapsed();
    total
}
