//! Traces and logs of a running `sai serve`: with `--otlp-endpoint`, each RPC is a span sent
//! over OTLP/gRPC to a collector, a child of the caller's W3C `traceparent`, carrying the FC
//! trace id and the invocation; with `--log-format json`, every log line is a JSON object.
//!
//! The collector is a real OTLP trace receiver: the `TraceService` of OpenTelemetry's own
//! protos (the `opentelemetry-proto` crate) served by tonic, which keeps what it is sent.

mod support;

use std::collections::HashMap;
use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use sai::pb;
use support::*;
use tokio::sync::mpsc;

/// An OTLP trace receiver that forwards every span it is sent, with its resource's
/// attributes.
struct Collector {
    spans: mpsc::UnboundedSender<(HashMap<String, String>, Span)>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        for resource_spans in request.into_inner().resource_spans {
            let resource = resource_spans
                .resource
                .map(|r| attributes(&r.attributes))
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    let _ = self.spans.send((resource.clone(), span));
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// OTLP attributes as text.
fn attributes(
    attributes: &[opentelemetry_proto::tonic::common::v1::KeyValue],
) -> HashMap<String, String> {
    attributes
        .iter()
        .map(|kv| {
            let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(Value::StringValue(s)) => s.clone(),
                Some(Value::IntValue(i)) => i.to_string(),
                Some(Value::BoolValue(b)) => b.to_string(),
                Some(Value::DoubleValue(d)) => d.to_string(),
                other => format!("{other:?}"),
            };
            (kv.key.clone(), value)
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_spans_reach_an_otlp_collector_in_the_callers_trace() {
    let (spans_tx, mut spans) = mpsc::unbounded_channel();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the collector");
    let collector = listener.local_addr().expect("collector address");
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(Collector { spans: spans_tx }))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );

    let mut server = SaiProcess::start(
        Command::new(env!("CARGO_BIN_EXE_sai"))
            .args(["serve", "--in-memory", "--listen", "127.0.0.1:0"])
            .args(["--otlp-endpoint", &format!("http://{collector}")])
            .args(["--log-format", "json"])
            // Export each span as soon as it ends: a batch of one is full at once, so the
            // export waits on no timer (under libfaketime, a timed wait of the exporter's
            // thread reads a moved monotonic clock and may never wake).
            .env("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "1")
            .env("OTEL_BSP_SCHEDULE_DELAY", "10")
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped()),
    );
    let logs = server.child.stderr.take().expect("piped stderr");
    let log_lines = std::thread::spawn(move || {
        std::io::BufReader::new(logs)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<String>>()
    });

    let mut client = pb::stateful_async_invocation_service_client::StatefulAsyncInvocationServiceClient::connect(server.url())
        .await
        .expect("connect");
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let mut request = tonic::Request::new(pb::InvokeFunctionRequest {
        service_name: SERVICE.into(),
        function_name: FUNCTION.into(),
        invocation_id: "traced-1".into(),
        ..Default::default()
    });
    let headers = request.metadata_mut();
    headers.insert(
        "traceparent",
        format!("00-{trace_id}-{caller_span}-01")
            .parse()
            .expect("ascii"),
    );
    headers.insert("x-fc-trace-id", "fc-trace-42".parse().expect("ascii"));
    client.invoke_function(request).await.expect("invoke");
    // A call without a traceparent starts a trace of its own.
    let refused = client
        .get_stateful_async_invocation(pb::GetStatefulAsyncInvocationRequest {
            service_name: SERVICE.into(),
            function_name: FUNCTION.into(),
            invocation_id: "no-such-invocation".into(),
            ..Default::default()
        })
        .await
        .expect_err("an unknown id is NOT_FOUND");
    assert_eq!(refused.code(), tonic::Code::NotFound);

    let mut invoke = None;
    let mut get = None;
    while invoke.is_none() || get.is_none() {
        let (resource, span) = tokio::time::timeout(Duration::from_secs(60), spans.recv())
            .await
            .expect("the collector receives the RPC spans")
            .expect("the collector runs");
        assert_eq!(
            resource.get("service.name").map(String::as_str),
            Some("sai")
        );
        match span.name.as_str() {
            "sai.v1.StatefulAsyncInvocationService/InvokeFunction" => invoke = Some(span),
            "sai.v1.StatefulAsyncInvocationService/GetStatefulAsyncInvocation" => get = Some(span),
            _ => {}
        }
    }
    let invoke = invoke.expect("an InvokeFunction span");
    assert_eq!(hex(&invoke.trace_id), trace_id, "joins the caller's trace");
    assert_eq!(
        hex(&invoke.parent_span_id),
        caller_span,
        "under the caller's span"
    );
    assert_eq!(
        invoke.kind,
        opentelemetry_proto::tonic::trace::v1::span::SpanKind::Server as i32
    );
    let attrs = attributes(&invoke.attributes);
    assert_eq!(attrs["rpc.system"], "grpc");
    assert_eq!(
        attrs["rpc.service"],
        "sai.v1.StatefulAsyncInvocationService"
    );
    assert_eq!(attrs["rpc.method"], "InvokeFunction");
    assert_eq!(attrs["rpc.grpc.status_code"], "0");
    assert_eq!(attrs["trace_id"], "fc-trace-42");
    assert_eq!(attrs["invocation.id"], "traced-1");
    assert_eq!(attrs["function.name"], format!("{SERVICE}/{FUNCTION}"));
    assert!(!attrs["request_id"].is_empty());

    let get = get.expect("a GetStatefulAsyncInvocation span");
    assert_ne!(hex(&get.trace_id), trace_id, "a trace of its own");
    assert!(get.parent_span_id.is_empty(), "a root span");
    let attrs = attributes(&get.attributes);
    assert_eq!(attrs["rpc.grpc.status_code"], "5", "NOT_FOUND");
    assert_eq!(attrs["invocation.id"], "no-such-invocation");

    // Every line on standard error is a JSON object; the serving line names its address.
    server.kill();
    let lines = log_lines
        .join()
        .expect("the log reader ends with the process");
    assert!(!lines.is_empty(), "sai logged at info");
    for line in &lines {
        let value: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|err| panic!("a log line that is not JSON ({err}): {line}"));
        assert!(value["timestamp"].is_string(), "{line}");
        assert!(value["level"].is_string(), "{line}");
    }
    assert!(
        lines.iter().any(|line| line.contains("\"sai serving\"")),
        "{lines:?}"
    );
}
