//! FC's request metadata: the tenant (`x-fc-account-id`), the request id every answer carries
//! (`x-fc-request-id`) and the caller's trace id (`x-fc-trace-id`, echoed and logged).
//!
//! [`RequestContextLayer`] wraps every RPC: it makes the request id, hands it to the handler
//! as a request extension, logs the call in a span with both ids, puts the ids on the
//! answer's headers, whether the RPC succeeded or failed, and counts and times the call.
//!
//! The span is at debug level, with the per-call log lines it frames: an enabled span costs
//! every call the formatting of its fields and a slot in the subscriber's registry, about a
//! tenth of a synced InvokeFunction's server CPU at the default `info` (BENCHMARKS.md). With
//! `--otlp-endpoint` it is exported (see `telemetry`), as a child of the caller's
//! `traceparent`, with OpenTelemetry's RPC attributes, the FC trace id and the invocation.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{HeaderValue, Request, Response};
use tower::{Layer, Service};
use tracing::Instrument;

use crate::model::validate;

use super::ApiError;

/// Tenant header.
pub const ACCOUNT_HEADER: &str = "x-fc-account-id";
/// Request id header, on every answer.
pub const REQUEST_ID_HEADER: &str = "x-fc-request-id";
/// Trace id header, echoed.
pub const TRACE_ID_HEADER: &str = "x-fc-trace-id";
/// The account of a request without `x-fc-account-id`.
pub const DEFAULT_ACCOUNT: &str = "default";

/// The request id of one call, put in the request's extensions by the layer.
#[derive(Debug, Clone)]
pub struct RequestId(pub Arc<str>);

/// The account a request acts for: `x-fc-account-id`, or "default".
pub fn account<T>(request: &tonic::Request<T>) -> Result<Arc<str>, ApiError> {
    match request.metadata().get(ACCOUNT_HEADER) {
        None => Ok(DEFAULT_ACCOUNT.into()),
        Some(value) => {
            let value = value.to_str().map_err(|_| {
                validate::ValidationError::new(ACCOUNT_HEADER, "must be printable ASCII")
            })?;
            validate::account_id(ACCOUNT_HEADER, value)?;
            Ok(value.into())
        }
    }
}

/// The request id the layer gave this call (a fresh one if the layer was not installed).
pub fn request_id<T>(request: &tonic::Request<T>) -> Arc<str> {
    request
        .extensions()
        .get::<RequestId>()
        .map(|id| id.0.clone())
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string().into())
}

/// Name the invocation the current RPC acts on in its span (a no-op when the span is off).
pub fn record_invocation(key: &crate::model::InvocationKey) {
    let span = tracing::Span::current();
    if !span.is_disabled() {
        let function = &key.function;
        span.record(
            "function.name",
            format!("{}/{}", function.service, function.function),
        );
        span.record("invocation.id", &*key.id);
    }
}

/// Rewrite a status tonic answered before any handler ran (an undecodable or oversized
/// request, answered in the headers) as sai answers such requests: see
/// [`super::error::transport_status`].
fn remap_transport_status(headers: &mut http::HeaderMap) {
    if !headers.contains_key("grpc-status") {
        return;
    }
    let Some(made) = tonic::Status::from_header_map(headers) else {
        return;
    };
    let (code, message) = (made.code(), made.message().to_string());
    let remapped = super::error::transport_status(made);
    if remapped.code() == code && remapped.message() == message {
        return;
    }
    headers.remove("grpc-status");
    headers.remove("grpc-message");
    if let Err(err) = remapped.add_header(headers) {
        tracing::warn!(%err, "cannot rewrite a transport status");
    }
}

/// Count and time one answered RPC. The code is the one in the response's headers (a
/// refusal, answered before any message) or OK: for a unary call that is its outcome, for a
/// stream the way it opened. A path no service serves is counted as `unknown`, so that
/// callers cannot grow the label set.
fn record_call(path: &str, code: tonic::Code, took: std::time::Duration) {
    crate::metrics::names::record_rpc(
        path,
        code != tonic::Code::Unimplemented,
        code as i32,
        || format!("{code:?}"),
        took.as_secs_f64(),
    );
}

/// Tower layer adding FC's request metadata to every RPC.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestContextLayer;

impl<S> Layer<S> for RequestContextLayer {
    type Service = RequestContext<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestContext { inner }
    }
}

/// The service [`RequestContextLayer`] makes.
#[derive(Debug, Clone)]
pub struct RequestContext<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RequestContext<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let request_id: Arc<str> = uuid::Uuid::new_v4().to_string().into();
        let trace_id = request.headers().get(TRACE_ID_HEADER).cloned();
        let path = request.uri().path();
        let (service, method) = path
            .trim_start_matches('/')
            .split_once('/')
            .unwrap_or(("", path));
        let span = tracing::debug_span!(
            target: crate::telemetry::RPC_SPAN_TARGET,
            "rpc",
            otel.name = %path.trim_start_matches('/'),
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.service = %service,
            rpc.method = %method,
            rpc.grpc.status_code = tracing::field::Empty,
            request_id = %request_id,
            trace_id = trace_id.as_ref().and_then(|t| t.to_str().ok()).unwrap_or(""),
            invocation.id = tracing::field::Empty,
            function.name = tracing::field::Empty,
        );
        crate::telemetry::join_callers_trace(&span, request.headers());
        request
            .extensions_mut()
            .insert(RequestId(request_id.clone()));
        let timed = crate::metrics::names::recording()
            .then(|| (request.uri().path().to_string(), std::time::Instant::now()));
        let answer = self.inner.call(request);
        Box::pin(
            async move {
                let mut response = answer.await?;
                let headers = response.headers_mut();
                remap_transport_status(headers);
                let span = tracing::Span::current();
                if timed.is_some() || !span.is_disabled() {
                    // The code in the headers: a refusal, answered before any message; else OK.
                    let code = tonic::Status::from_header_map(headers)
                        .map_or(tonic::Code::Ok, |status| status.code());
                    span.record("rpc.grpc.status_code", code as i32);
                    if let Some((path, started)) = &timed {
                        record_call(path, code, started.elapsed());
                    }
                }
                if let Ok(value) = HeaderValue::from_str(&request_id) {
                    headers.insert(REQUEST_ID_HEADER, value);
                }
                if let Some(trace_id) = trace_id {
                    headers.insert(TRACE_ID_HEADER, trace_id);
                }
                tracing::debug!("answered");
                Ok(response)
            }
            .instrument(span),
        )
    }
}
