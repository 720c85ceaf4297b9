//! The worker as a whole: [`Worker::build`] prepares everything that can fail
//! at start-up, [`Worker::run_until_stopped`] serves and consumes until told
//! to stop, then drains.
//!
//! Everything lives in the instance (metrics registry included), so tests
//! can run several workers in one process, each on its own admin port
//! (port 0 allowed) and its own `amqp.prefix`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use sluice_shared::admin;
use sluice_shared::config::{Config, ConfigError, RouteConfig};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::backoff::ReconnectBackoff;
use crate::broker::{BrokerSettings, Session};
use crate::consumer::Lane;
use crate::copies::CopyCheck;
use crate::dead_lettering::{self, DeadLettering};
use crate::dispatch::Dispatcher;
use crate::dlq::http::{DlqApi, with_dlq};
use crate::error::{StartError, WorkerError};
use crate::http_target;
use crate::metrics::WorkerMetrics;
use crate::ordered::OrderedSettings;
use crate::queue_depth::QueueDepthPoller;
use crate::readiness::BrokerStatus;
use crate::retry::RetryPolicy;
use crate::route_gate::RouteGate;
use crate::route_status::RouteBoard;
use crate::routes::RouteTable;
use crate::supervisor::Supervisor;

/// A built worker, ready to run.
pub struct Worker {
    supervisor: Supervisor,
    /// The first session, opened by `build` when the broker was reachable.
    session: Option<Session>,
    admin: TcpListener,
    admin_addr: SocketAddr,
    registry: prometheus::Registry,
    shutdown_grace: Duration,
    depths: QueueDepthPoller,
    /// The `/dlq` routes, when `dlq.http.enabled`.
    dlq: Option<DlqApi>,
    /// `GET /routes`: each route's breaker.
    board: RouteBoard,
}

impl Worker {
    /// Resolves route secrets, builds routes, binds the admin listener and
    /// makes a first attempt to connect and declare the topology. A topology
    /// mismatch is an error; an unreachable broker is not (the worker keeps
    /// trying in the background and `/readyz` says why it is not ready).
    pub async fn build(config: Config) -> Result<Worker, StartError> {
        let routes = RouteTable::from_config(&config.routes)?;
        let mut settings = BrokerSettings::new(&config.amqp);
        // Ordered routes get partition queues (fed by the gateway), the
        // others a queue each (fed by the router).
        settings.topology = settings.topology.with_worker_routes(&config.routes);
        settings.copy_channels = copy_channels(&config);
        let policy = RetryPolicy::new(settings.topology.retry_tiers());
        let dlq = DlqApi::from_config(&config)?;
        let metrics = WorkerMetrics::new(routes.names())?;
        let client = http_target::client().map_err(StartError::HttpClient)?;
        match dead_lettering::check(&config.amqp, &client).await? {
            DeadLettering::Verified => metrics.set_dead_lettering_verified(true),
            DeadLettering::Unverified(why) => {
                tracing::warn!(
                    why = %why,
                    "not verified that RabbitMQ dead-letters at-least-once (it needs the \
                     stream_queue feature flag): set amqp.management_url to check at start"
                );
                metrics.set_dead_lettering_verified(false);
            }
        }
        let status = BrokerStatus::new(metrics.clone());
        let addr = config.worker.admin_listen;
        let admin = TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::AdminBind { addr, source })?;
        let admin_addr = admin
            .local_addr()
            .map_err(|source| StartError::AdminBind { addr, source })?;
        let copies = CopyCheck::new(&config)
            .map_err(|e| ConfigError::invalid("redis.url", e.to_string()))?;
        let session = first_session(&settings, &status).await?;
        let interval = config.worker.queue_depth_interval;
        let depths = QueueDepthPoller::new(&settings, interval, &metrics.registry())?;
        // Ordered routes have no gate: their partitions hold a key's events in place.
        let gates: Vec<_> = unordered(&config)
            .map(|route| Arc::new(RouteGate::new(route, metrics.clone())))
            .collect();
        let lanes = lanes(&config, &settings, &gates);
        let dispatcher = Dispatcher::new(
            routes,
            client,
            policy,
            metrics.clone(),
            copies,
            settings.topology.clone(),
        )
        .with_direct_attempts(&gates, direct_share(&config));
        let supervisor = Supervisor {
            dispatcher: Arc::new(dispatcher),
            settings,
            status,
            lanes,
            backoff: ReconnectBackoff::default(),
            ordered: Arc::new(OrderedSettings {
                hold_limit: config.worker.ordered_hold_limit,
            }),
            grace: config.worker.shutdown_grace,
        };
        Ok(Worker {
            supervisor,
            session,
            admin,
            admin_addr,
            registry: metrics.registry(),
            shutdown_grace: config.worker.shutdown_grace,
            depths,
            dlq,
            board: RouteBoard::new(gates),
        })
    }

    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// Serves admin and consumes until `shutdown` is cancelled; then stops
    /// consuming, waits up to `worker.shutdown_grace` for deliveries in
    /// flight, closes the channels and the connection, and returns.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<(), WorkerError> {
        let Worker {
            mut supervisor,
            session,
            admin,
            registry,
            shutdown_grace,
            depths,
            dlq,
            board,
            ..
        } = self;
        // A child token: the admin port also closes when consuming fails for good.
        let admin_stop = shutdown.child_token();
        let router = with_dlq(admin::router(registry, supervisor.status.clone()), dlq);
        let router = board.serve_on(router);
        let server =
            axum::serve(admin, router).with_graceful_shutdown(admin_stop.clone().cancelled_owned());
        let server = tokio::spawn(async move { server.await });
        tokio::spawn(depths.run(admin_stop.clone()));

        let consumed = supervisor.run(session, &shutdown).await;
        supervisor.status.set_down("shutting down");
        tracing::info!("stopped consuming; draining");
        supervisor.drain(shutdown_grace).await;
        if let Ok(Some(session)) = &consumed {
            session.close().await;
        }
        admin_stop.cancel();
        let served = server.await;
        consumed.map_err(WorkerError::Topology)?;
        served
            .map_err(WorkerError::AdminTask)?
            .map_err(WorkerError::Admin)?;
        tracing::info!("worker stopped");
        Ok(())
    }
}

/// The router's lane on the work queue, then one lane per route on its queue.
fn lanes(config: &Config, settings: &BrokerSettings, gates: &[Arc<RouteGate>]) -> Vec<Lane> {
    let worker = &config.worker;
    let router = Lane::router(settings.topology.work_queue(), worker.prefetch());
    let routes = unordered(config).zip(gates).map(|(route, gate)| {
        let queue = settings.topology.route_queue(&route.name);
        Lane::route(gate, queue, route.concurrency)
    });
    std::iter::once(router).chain(routes).collect()
}

/// The router's tasks that may be direct attempts at once: half of its
/// `prefetch` (none with a prefetch of 1), so the other half always routes.
fn direct_share(config: &Config) -> usize {
    usize::from(config.worker.prefetch()) / 2
}

/// The routes the router feeds (an ordered route's partitions are fed by
/// the gateway and delivered by their own consumers).
fn unordered(config: &Config) -> impl Iterator<Item = &RouteConfig> {
    config.routes.iter().filter(|route| route.ordered.is_none())
}

/// Copies published at once: one per task that may be settling (the
/// router's and every route's), at most 1,024 channels on the publish
/// connection (RabbitMQ allows 2,047 by default); past that a task waits
/// for a channel.
fn copy_channels(config: &Config) -> usize {
    let routes: usize = config
        .routes
        .iter()
        .map(|route| usize::from(route.concurrency))
        .sum();
    config.worker.concurrency.saturating_add(routes).min(1024)
}

/// The first attempt to reach RabbitMQ: only a topology mismatch is fatal.
async fn first_session(
    settings: &BrokerSettings,
    status: &BrokerStatus,
) -> Result<Option<Session>, StartError> {
    match settings.open().await {
        Ok(session) => {
            tracing::info!(url = %settings.redacted_url(), "connected to RabbitMQ");
            Ok(Some(session))
        }
        Err(e) if e.is_mismatch() => Err(StartError::Topology(e)),
        Err(e) => {
            tracing::warn!(
                url = %settings.redacted_url(),
                error = %e,
                "RabbitMQ is not reachable yet; retrying in the background"
            );
            status.set_down(e.to_string());
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send<T: Send>(_: &T) {}

    /// Tests and binaries spawn the worker on a multi-threaded runtime.
    #[allow(dead_code)]
    fn the_worker_and_its_run_future_can_move_between_threads(worker: Worker) {
        assert_send(&worker);
        assert_send(&worker.run_until_stopped(CancellationToken::new()));
    }

    #[tokio::test]
    async fn an_unreachable_broker_is_not_a_start_error_and_readyz_says_why() {
        // Through the loader: connects use the nodes it resolves from the URL.
        let toml =
            "[amqp]\nurl = \"amqp://guest:guest@127.0.0.1:1/%2f\"\nconnect_timeout = \"500ms\"";
        let mut config = Config::from_toml(toml).unwrap();
        config.worker.admin_listen = ([127, 0, 0, 1], 0).into();
        let worker = Worker::build(config).await.unwrap();
        let addr = worker.admin_addr();
        assert_ne!(addr.port(), 0);
        let stop = CancellationToken::new();
        let running = tokio::spawn(worker.run_until_stopped(stop.clone()));
        let readyz = reqwest::get(format!("http://{addr}/readyz")).await.unwrap();
        assert_eq!(readyz.status(), 503);
        let body = readyz.text().await.unwrap();
        assert!(body.contains("cannot connect to RabbitMQ"), "{body}");
        assert!(!body.contains("guest:guest"), "{body}");
        stop.cancel();
        running.await.unwrap().unwrap();
    }
}
