//! Logging: JSON lines for collectors, or a human format for a terminal.
//!
//! What is logged is decided where events are handled: id digests, sources,
//! types and outcomes, never an event id, a payload, a phone number or a
//! secret. In JSON each line is one object: `timestamp`, `level`, `target`,
//! the event's own fields flattened (`message`, `event_id_digest`,
//! `outcome`...) and a `span` object with the fields of the unit of work it
//! belongs to (the gateway's `webhook` span: `source`, `request_id`,
//! `trace_id`; the worker's `delivery` span: `event_id_digest`, `source`,
//! `type`, `route`, `attempt`, `request_id`, `trace_id`). The digests' key
//! is installed here with the subscriber ([`crate::id_digest`]).

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::config::{LogFormat, TelemetryConfig};
use crate::id_digest::{self, IdDigester};

/// Installs the global subscriber writing to stderr; `RUST_LOG` overrides
/// `telemetry.log_level`. A second call (tests start several apps in one
/// process) does nothing.
pub fn init(config: &TelemetryConfig) {
    init_with_writer(config, std::io::stderr);
}

/// [`init`] with another destination: the log test captures the lines the
/// binaries would print, in exactly their format.
pub fn init_with_writer<W>(config: &TelemetryConfig, writer: W)
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.log_level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let _ = match config.log_format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
    let digester = IdDigester::from_config(config.id_digest_key.as_ref());
    if !digester.is_configured() {
        tracing::warn!(
            "telemetry.id_digest_key is not set: event ids are logged as digests under a key of this process alone, \
             so they differ between the gateway, the worker and restarts and `sluice-worker id-digest` cannot compute them; \
             set it (an env: or file: reference) to the same secret for every process"
        );
    }
    id_digest::install(digester);
}
