//! Logs and traces of the process: log lines on standard error as text or JSON
//! (`--log-format`), and, with `--otlp-endpoint`, a span per RPC exported over OTLP/gRPC to an
//! OpenTelemetry collector, joined to the caller's trace by W3C `traceparent`.
//!
//! The RPC span (target [`RPC_SPAN_TARGET`], debug level) is enabled for the exporter only:
//! the log output keeps its own filter (`RUST_LOG`, `info` by default), so that exporting
//! traces does not also print a line per call, and a server without an endpoint pays nothing
//! for the span.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::{EnvFilter, LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// The target of the span each RPC runs in.
pub const RPC_SPAN_TARGET: &str = "sai::rpc";

/// The log filter when `RUST_LOG` is not set: the storage engine narrates every flush and
/// write stall at info.
const DEFAULT_LOG_FILTER: &str = "info,fjall=warn,lsm_tree=warn";

/// How long an export to the collector may take before it is abandoned (spans are dropped,
/// calls never wait on it).
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line: timestamp, level, target, fields and the spans it is in.
    Json,
}

/// Why telemetry could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The OTLP exporter could not be built (a malformed endpoint, say).
    #[error("--otlp-endpoint {endpoint}: {source}")]
    Exporter {
        /// The endpoint given.
        endpoint: String,
        /// Why.
        source: opentelemetry_otlp::ExporterBuildError,
    },
    /// A subscriber was already installed in this process.
    #[error("cannot install the log subscriber: {0}")]
    Subscriber(#[from] tracing_subscriber::util::TryInitError),
}

/// Whether RPC spans are exported; read on every call to skip parsing `traceparent` when not.
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// What [`init`] set up; [`Telemetry::shutdown`] sends the spans still buffered.
#[must_use = "shut it down before the runtime stops, or buffered spans are lost"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Export what is buffered and stop the exporter. Blocks until the export returns (at
    /// most [`EXPORT_TIMEOUT`]); call it outside the runtime's tasks, with the runtime alive.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider {
            EXPORTING.store(false, Ordering::Relaxed);
            if let Err(err) = provider.shutdown() {
                eprintln!("sai: exporting the last spans failed: {err}");
            }
        }
    }
}

/// Install the process's subscriber: log lines in `format` on standard error, and spans to
/// `otlp_endpoint` (e.g. `http://127.0.0.1:4317`) when given. With an endpoint it must run
/// inside a Tokio runtime, which the exporter's connection lives on.
pub fn init(format: LogFormat, otlp_endpoint: Option<&str>) -> Result<Telemetry, TelemetryError> {
    let log_filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG_FILTER));
    let logs = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_filter(log_filter)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .with_filter(log_filter)
            .boxed(),
    };
    let Some(endpoint) = otlp_endpoint else {
        tracing_subscriber::registry().with(logs).try_init()?;
        return Ok(Telemetry { provider: None });
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(|source| TelemetryError::Exporter {
            endpoint: endpoint.to_string(),
            source,
        })?;
    let provider = SdkTracerProvider::builder()
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name("sai")
                .build(),
        )
        // Bounded: the processor holds at most its queue (2,048 spans by default) and drops
        // the rest when the collector is slow or away.
        .with_batch_exporter(exporter)
        .build();
    let spans = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("sai"))
        .with_filter(Targets::new().with_target(RPC_SPAN_TARGET, LevelFilter::DEBUG));
    tracing_subscriber::registry()
        .with(logs)
        .with(spans)
        .try_init()?;
    EXPORTING.store(true, Ordering::Relaxed);
    Ok(Telemetry {
        provider: Some(provider),
    })
}

/// Make `span` a child of the trace the caller's W3C `traceparent` (and `tracestate`) names;
/// without one, or when spans are not exported, the span stays a root.
pub fn join_callers_trace(span: &tracing::Span, headers: &http::HeaderMap) {
    if !EXPORTING.load(Ordering::Relaxed) || !headers.contains_key("traceparent") {
        return;
    }
    let parent = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    // Refused only when the span is disabled, when there is nothing to join.
    let _ = span.set_parent(parent);
}

/// Reads W3C trace context from HTTP (and so gRPC) headers.
struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}
