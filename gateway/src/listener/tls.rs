//! `[gateway.tls]`: HTTPS on the public port with rustls, from PEM files
//! that are read again when they change (checked every `reload_interval`)
//! or on SIGHUP. A reload swaps the configuration that new handshakes use;
//! connections already open keep theirs, so none is dropped. A reload that
//! fails (a half-written file, a key that does not match) keeps the old
//! certificate, logs the cause and counts in `sluice_gateway_tls_reloads_total`.

use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use sluice_shared::config::TlsConfig;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::crypto::aws_lc_rs;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_util::sync::CancellationToken;

use crate::metrics::GatewayMetrics;

/// Why the certificate or key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("gateway.tls.cert {path}: {problem}")]
    Cert { path: String, problem: String },
    #[error("gateway.tls.key {path}: {problem}")]
    Key { path: String, problem: String },
    #[error("gateway.tls: the certificate and key do not make a TLS configuration: {0}")]
    Config(#[from] tokio_rustls::rustls::Error),
}

/// The TLS configuration in force, and where it comes from.
pub struct ReloadableTls {
    files: TlsConfig,
    current: RwLock<Arc<ServerConfig>>,
    /// Modification times of the cert and key last loaded.
    stamps: RwLock<(Option<SystemTime>, Option<SystemTime>)>,
    metrics: GatewayMetrics,
}

impl ReloadableTls {
    /// Loads the files; an error here stops the gateway (exit 64).
    pub fn load(files: TlsConfig, metrics: GatewayMetrics) -> Result<Self, TlsError> {
        let stamps = stamps(&files);
        let config = server_config(&files)?;
        Ok(Self {
            files,
            current: RwLock::new(Arc::new(config)),
            stamps: RwLock::new(stamps),
            metrics,
        })
    }

    /// An acceptor with the configuration in force now.
    pub fn acceptor(&self) -> TlsAcceptor {
        let current = self.current.read().unwrap_or_else(|p| p.into_inner());
        TlsAcceptor::from(current.clone())
    }

    /// Reads the files again and swaps them in; on failure keeps the old ones.
    pub fn reload(&self, why: &str) {
        let outcome = match server_config(&self.files) {
            Ok(config) => {
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(config);
                tracing::info!(trigger = why, "TLS certificate reloaded");
                "ok"
            }
            Err(e) => {
                tracing::error!(trigger = why, error = %e, "TLS reload failed: still serving the previous certificate; fix the files and send SIGHUP");
                "error"
            }
        };
        *self.stamps.write().unwrap_or_else(|p| p.into_inner()) = stamps(&self.files);
        self.metrics.tls_reloads.with_label_values(&[outcome]).inc();
    }

    /// Reloads on SIGHUP and when a file's modification time changes, until `stop`.
    pub async fn watch(self: Arc<Self>, stop: CancellationToken) {
        let mut ticks = tokio::time::interval(self.files.reload_interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        #[cfg(unix)]
        let mut hangup =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        loop {
            #[cfg(unix)]
            let sighup = async {
                match hangup.as_mut() {
                    Some(signal) => signal.recv().await,
                    None => std::future::pending().await,
                }
            };
            #[cfg(not(unix))]
            let sighup = std::future::pending::<Option<()>>();
            tokio::select! {
                () = stop.cancelled() => return,
                _ = sighup => self.reload("sighup"),
                _ = ticks.tick() => {
                    let seen = *self.stamps.read().unwrap_or_else(|p| p.into_inner());
                    if stamps(&self.files) != seen {
                        self.reload("file_changed");
                    }
                }
            }
        }
    }
}

fn stamps(files: &TlsConfig) -> (Option<SystemTime>, Option<SystemTime>) {
    let modified = |path: &Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    (modified(&files.cert), modified(&files.key))
}

fn server_config(files: &TlsConfig) -> Result<ServerConfig, TlsError> {
    let cert_error = |problem: String| TlsError::Cert {
        path: files.cert.display().to_string(),
        problem,
    };
    let certs = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| cert_error(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_error(e.to_string()))?;
    if certs.is_empty() {
        return Err(cert_error("no PEM certificate in the file".into()));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| TlsError::Key {
        path: files.key.display().to_string(),
        problem: e.to_string(),
    })?;
    let mut config = ServerConfig::builder_with_provider(Arc::new(aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    // The gateway speaks HTTP/1.1 only.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}
