//! Spans to an OpenTelemetry collector over OTLP/HTTP with protobuf (`log.otlp`, off by
//! default). Where they go and with which headers is the standard environment's business
//! (`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`,
//! `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_EXPORTER_OTLP_TIMEOUT`, `OTEL_SERVICE_NAME`,
//! `OTEL_TRACES_SAMPLER`), read by the OpenTelemetry crates themselves.
//!
//! A job's span takes its producer's `traceparent` as its parent, and a delivery report's span
//! links to the trace of the job it tells about. Both are no-ops while nothing is exported.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::export::{self, Shipping};
use crate::types::TraceHeaders;

/// Set once spans are exported: until then a job's trace costs nothing beyond its echo.
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// The service name when `OTEL_SERVICE_NAME` does not give one.
const SERVICE: &str = "wxcourier";
/// The collector's default answer time, as the OTLP exporter has it.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why spans cannot be exported as configured.
#[derive(Debug, thiserror::Error)]
#[error("log.otlp: cannot set up the OTLP exporter: {0}")]
pub(crate) struct SetupError(String);

/// What keeps spans going out: the tracer for the `tracing` layer, and the shipping task to
/// finish when the worker stops.
pub(crate) struct Export {
    pub(crate) tracer: SdkTracer,
    provider: SdkTracerProvider,
    shipping: Shipping,
}

impl Export {
    /// Sends the spans still queued, for a moment at most, and stops exporting.
    pub(crate) async fn finish(self) {
        EXPORTING.store(false, Ordering::SeqCst);
        self.shipping.finish().await;
        let _ = self.provider.shutdown();
    }
}

/// Sets up the exporter from the standard environment. Needs the tokio runtime.
pub(crate) fn start() -> Result<Export, SetupError> {
    let mut exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .build()
        .map_err(|e| SetupError(e.to_string()))?;
    // The exporter's own client gives up at its timeout; this bound only keeps a stuck request
    // from holding the queue for longer.
    let limit = export_timeout() + Duration::from_secs(1);
    let resource = resource();
    opentelemetry_sdk::trace::SpanExporter::set_resource(&mut exporter, &resource);
    let (processor, shipping) = export::start(exporter, limit);
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_resource(resource)
        .build();
    let tracer = provider.tracer(SERVICE);
    EXPORTING.store(true, Ordering::SeqCst);
    Ok(Export {
        tracer,
        provider,
        shipping,
    })
}

/// `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES` as the SDK reads them, and `wxcourier`
/// when no service name is given.
fn resource() -> Resource {
    let named = std::env::var("OTEL_SERVICE_NAME").is_ok_and(|n| !n.is_empty())
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|a| a.contains("service.name="));
    let builder = Resource::builder();
    match named {
        true => builder.build(),
        false => builder.with_service_name(SERVICE).build(),
    }
}

/// The export timeout the environment sets, in milliseconds as the specification has it.
fn export_timeout() -> Duration {
    [
        "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
        "OTEL_EXPORTER_OTLP_TIMEOUT",
    ]
    .iter()
    .find_map(|name| std::env::var(name).ok()?.trim().parse::<u64>().ok())
    .map_or(DEFAULT_TIMEOUT, Duration::from_millis)
}

/// Whether spans are exported.
pub(crate) fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// Makes the producer's span `trace` names the parent of `span`, before `span` is first
/// entered.
pub(crate) fn adopt_parent(span: &tracing::Span, trace: &TraceHeaders) {
    if !exporting() {
        return;
    }
    let _ = span.set_parent(context_of(trace));
}

/// Links `span` to the span `trace` names: a later event that belongs to that trace.
pub(crate) fn link_to(span: &tracing::Span, trace: &TraceHeaders) {
    if !exporting() {
        return;
    }
    let cx = context_of(trace);
    span.add_link(cx.span().span_context().clone());
}

/// The remote span context of checked trace headers, read as W3C Trace Context.
fn context_of(trace: &TraceHeaders) -> opentelemetry::Context {
    TraceContextPropagator::new().extract(&Headers(trace))
}

/// Trace headers as the propagator reads a carrier.
struct Headers<'a>(&'a TraceHeaders);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            "traceparent" => Some(&self.0.traceparent),
            "tracestate" => self.0.tracestate.as_deref(),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        vec!["traceparent", "tracestate"]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checked_trace_headers_read_as_the_producers_remote_span() {
        let trace = TraceHeaders {
            traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
            tracestate: Some("rojo=00f067aa0ba902b7".into()),
        };
        let cx = context_of(&trace);
        let span = cx.span();
        let sc = span.span_context();
        assert!(sc.is_valid() && sc.is_remote() && sc.is_sampled());
        assert_eq!(
            sc.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(sc.span_id().to_string(), "00f067aa0ba902b7");
        assert_eq!(sc.trace_state().header(), "rojo=00f067aa0ba902b7");
    }
}
