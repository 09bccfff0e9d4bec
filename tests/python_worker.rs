//! Polyglot: the Python examples (examples/python/), with stubs generated from proto/ by
//! grpcio-tools in a virtual environment this test creates, against the real server: the
//! worker runs invocations to Succeeded (and a failure to Failed), the producer streams
//! invocations over InvokeFunctionStream.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use sai::pb;
use support::*;

/// The venv's python, with grpcio and grpcio-tools, created on first use.
fn python_with_grpc() -> PathBuf {
    let requirements =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/python/requirements.txt");
    let requirements = requirements.to_string_lossy().into_owned();
    python_venv("python-worker-venv", &["-r", &requirements])
        .join("bin")
        .join("python")
}

/// Generate the Python stubs from proto/ into a fresh directory `name` (one per test: tests
/// run in parallel).
fn generate_stubs(python: &Path, name: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).expect("gen dir");
    let protos: Vec<PathBuf> = [
        "invocation",
        "async_invoke_config",
        "invocation_service",
        "worker_service",
    ]
    .iter()
    .map(|name| root.join(format!("proto/sai/v1/{name}.proto")))
    .collect();
    let generated = Command::new(python)
        .args(["-m", "grpc_tools.protoc"])
        .arg(format!("-I{}", root.join("proto").display()))
        .arg(format!("--python_out={}", out.display()))
        .arg(format!("--grpc_python_out={}", out.display()))
        .args(&protos)
        .status()
        .expect("grpc_tools.protoc runs");
    assert!(generated.success(), "stub generation failed");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_example_worker_runs_invocations_to_the_end() {
    let python = tokio::task::spawn_blocking(python_with_grpc)
        .await
        .expect("venv");
    let stubs = generate_stubs(&python, "python-worker-gen");
    let worker_py = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/python/worker.py");
    let lines = std::fs::read_to_string(&worker_py)
        .expect("worker.py")
        .lines()
        .count();
    assert!(lines < 60, "the example stays short: {lines} lines");

    let server = TestServer::start_with(fast_engine()).await;
    let mut client = server.client().await;
    invoke_for_an_example_worker(
        &mut client,
        &[("py-1", "hello"), ("py-2", "world"), ("py-3", "fail")],
    )
    .await;

    // Two successes, and the failing one twice (first attempt and its one retry).
    let addr = server.addr.to_string();
    let worker = tokio::task::spawn_blocking(move || {
        Command::new(&python)
            .arg(&worker_py)
            .arg("demo-service/demo-function")
            .env("SAI_SERVER", addr)
            .env("SAI_PY_GEN", &stubs)
            .env("SAI_MAX_INVOCATIONS", "4")
            .output()
            .expect("run worker.py")
    });
    // The plain failure is retried once its backoff has passed.
    wait_for(&mut client, "default", FUNCTION, "py-3", |i| {
        status_of(i) == pb::InvocationStatus::Retrying
    })
    .await;
    server.advance(std::time::Duration::from_millis(50));
    let output = worker.await.expect("worker");
    assert!(output.status.success(), "worker.py failed: {output:?}");

    for (id, expected) in [("py-1", "HELLO"), ("py-2", "WORLD")] {
        let got = get(&mut client, "default", FUNCTION, id)
            .await
            .expect("get");
        assert_eq!(status_of(&got), pb::InvocationStatus::Succeeded, "{id}");
        assert_eq!(got.return_payload, expected);
        assert!(got.instance_id.starts_with("python-"));
    }
    let failed = wait_for(&mut client, "default", FUNCTION, "py-3", |i| i.end_time > 0).await;
    assert_eq!(status_of(&failed), pb::InvocationStatus::Failed);
    assert_eq!(failed.invocation_error_message, "asked to fail");
    assert_eq!(failed.already_retried_times, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_example_producer_streams_invocations() {
    let python = tokio::task::spawn_blocking(python_with_grpc)
        .await
        .expect("venv");
    let stubs = generate_stubs(&python, "python-producer-gen");
    let producer_py = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/python/producer.py");
    let server = TestServer::start().await;

    // 300 payloads; the 100th is over the 128 KiB payload limit.
    let mut stdin = String::new();
    for i in 0..300 {
        if i == 99 {
            stdin.push_str(&"x".repeat(200 * 1024));
        } else {
            stdin.push_str(&format!("{{\"n\":{i}}}"));
        }
        stdin.push('\n');
    }
    let addr = server.addr.to_string();
    let output = tokio::task::spawn_blocking(move || {
        let mut child = Command::new(&python)
            .arg(&producer_py)
            .arg("demo-service/demo-function")
            .env("SAI_SERVER", addr)
            .env("SAI_PY_GEN", &stubs)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run producer.py");
        let mut input = child.stdin.take().expect("stdin");
        std::io::Write::write_all(&mut input, stdin.as_bytes()).expect("write payloads");
        drop(input);
        child.wait_with_output().expect("producer.py ends")
    })
    .await
    .expect("producer");
    assert!(output.status.success(), "producer.py failed: {output:?}");

    let lines: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(lines.len(), 300, "a result per message");
    assert!(
        lines[99].starts_with("refused INVALID_ARGUMENT") && lines[99].contains("payload"),
        "{}",
        lines[99]
    );
    let accepted: Vec<&str> = lines
        .iter()
        .filter_map(|line| line.strip_prefix("accepted "))
        .collect();
    assert_eq!(accepted.len(), 299);

    let mut client = server.client().await;
    let stored = list_all(&mut client, "default", list_request(FUNCTION)).await;
    assert_eq!(stored.len(), 299);
    let first = get(&mut client, "default", FUNCTION, accepted[0])
        .await
        .expect("the first accepted invocation");
    assert_eq!(first.invocation_payload, "{\"n\":0}");
}
