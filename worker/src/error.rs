//! How the worker fails to start or to keep running.
//!
//! Each variant's message names what to fix. [`StartError::exit_code`] keeps
//! the process's exit status honest: 64 when the configuration (a route's
//! secret, the dlq token) is at fault, 1 for everything else.

use std::net::SocketAddr;

use sluice_shared::config::{ConfigError, EXIT_BAD_CONFIG};

use crate::broker::SessionError;
use crate::dead_lettering::AtMostOnce;

/// Why [`crate::Worker::build`] failed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A setting the worker cannot use, a route's secret among them (exit 64).
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot register the worker's metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("cannot build the HTTP client: {0}")]
    HttpClient(#[source] reqwest::Error),
    #[error("cannot listen on worker.admin_listen {addr}: {source}")]
    AdminBind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// The broker holds queues or exchanges declared with other arguments.
    #[error(transparent)]
    Topology(SessionError),
    /// The broker would dead-letter at-most-once (its `stream_queue` flag is off).
    #[error(transparent)]
    DeadLettering(#[from] AtMostOnce),
}

impl StartError {
    /// The process exit status for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Config(_) => EXIT_BAD_CONFIG,
            _ => 1,
        }
    }
}

/// Why [`crate::Worker::run_until_stopped`] returned early.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// Found on a reconnect: the topology changed under the worker.
    #[error(transparent)]
    Topology(SessionError),
    #[error("the admin server failed: {0}")]
    Admin(#[source] std::io::Error),
    #[error("the admin server task ended abnormally: {0}")]
    AdminTask(#[source] tokio::task::JoinError),
}
