//! Logs (`tracing`, one line per event, text or JSON) and metrics (Prometheus text on `/metrics`).

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use relaycast_core::config::{LogFormat, Settings};
use tracing_subscriber::EnvFilter;

/// Installs the global log subscriber once; later calls (tests starting several hosts) keep the
/// first one.
pub fn init_logging(settings: &Settings) {
    static INIT: OnceLock<()> = OnceLock::new();
    INIT.get_or_init(|| {
        let filter =
            EnvFilter::try_new(&settings.log_filter).unwrap_or_else(|_| EnvFilter::new("info"));
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr);
        let _ = match settings.log_format {
            LogFormat::Json => builder.json().flatten_event(true).try_init(),
            LogFormat::Text => builder.try_init(),
        };
    });
}

/// The process-wide Prometheus recorder; every host in the process renders the same registry.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (e.g. by a test harness); then this
            // handle still renders what this recorder would have seen, which is nothing: fine
            // for tests, and in the binary we are always first.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}
