//! Logging: JSON lines for collectors, or a human format for a terminal.
//!
//! What is logged is decided where events are handled: ids, sources, types and
//! outcomes, never a payload, a phone number or a secret. In JSON each line is
//! one object: `timestamp`, `level`, `target`, the event's own fields
//! flattened (`message`, `event_id`, `outcome`...) and a `span` object with
//! the fields of the unit of work it belongs to (the gateway's `webhook`
//! span: `source`, `request_id`, `trace_id`; the worker's `delivery` span:
//! `event_id`, `source`, `type`, `route`, `attempt`, `request_id`,
//! `trace_id`).

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::config::{LogFormat, TelemetryConfig};

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
}
