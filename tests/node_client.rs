//! Polyglot: the Node.js examples (examples/node/), with @grpc/grpc-js and
//! @grpc/proto-loader installed from npm by this test (from the examples' package-lock.json),
//! against the real server: the worker reports a plain failure, which is retried per the
//! function's config, and the watcher follows every change, including those made before it
//! opened, then cancels its stream.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sai::pb;
use support::*;

/// node_modules with the examples' dependencies.
fn node_modules() -> PathBuf {
    support::npm_ci("examples/node", "node-examples")
}

/// `node examples/node/<script> <target>` against `server`, with `env`.
fn node(server: &TestServer, script: &str, target: &str, env: &[(&str, &str)]) -> Output {
    let modules = node_modules();
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/node");
    let mut command = Command::new("node");
    command
        .arg(examples.join(script))
        .arg(target)
        .env("NODE_PATH", &modules)
        .env("SAI_SERVER", server.addr.to_string());
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().expect("node runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_examples_run_a_worker_whose_plain_failure_is_retried_and_a_watcher() {
    tokio::task::spawn_blocking(node_modules)
        .await
        .expect("npm install");
    let server = std::sync::Arc::new(TestServer::start_with(fast_engine()).await);
    let mut client = server.client().await;
    invoke_for_an_example_worker(
        &mut client,
        &[("node-1", "hello"), ("node-2", "world"), ("node-3", "fail")],
    )
    .await;
    let target = format!("{SERVICE}/{FUNCTION}");
    // Opened after the invocations: it replays them from the oldest kept change.
    let watcher = {
        let (server, target) = (server.clone(), target.clone());
        tokio::task::spawn_blocking(move || {
            node(&server, "watcher.js", &target, &[("SAI_UNTIL_ENDED", "3")])
        })
    };
    // Two successes, and the plain failure twice: its first attempt and the config's retry.
    let worker = {
        let (server, target) = (server.clone(), target.clone());
        tokio::task::spawn_blocking(move || {
            node(
                &server,
                "worker.js",
                &target,
                &[("SAI_MAX_INVOCATIONS", "4")],
            )
        })
    };
    wait_for(&mut client, "default", FUNCTION, "node-3", |i| {
        status_of(i) == pb::InvocationStatus::Retrying
    })
    .await;
    server.advance(std::time::Duration::from_millis(50));
    let worker = worker.await.expect("worker");
    assert!(worker.status.success(), "worker.js failed: {worker:?}");
    let worked = text(&worker.stdout);
    assert!(worked.contains("node-3 attempt 2: failure"), "{worked}");

    for (id, expected) in [("node-1", "HELLO"), ("node-2", "WORLD")] {
        let got = get(&mut client, "default", FUNCTION, id)
            .await
            .expect("get");
        assert_eq!(status_of(&got), pb::InvocationStatus::Succeeded, "{id}");
        assert_eq!(got.return_payload, expected);
        assert!(got.instance_id.starts_with("node-"));
    }
    let failed = get(&mut client, "default", FUNCTION, "node-3")
        .await
        .expect("get");
    assert_eq!(status_of(&failed), pb::InvocationStatus::Failed);
    assert_eq!(failed.already_retried_times, 1, "retried per the config");
    assert_eq!(failed.invocation_error_message, "asked to fail");

    let watcher = watcher.await.expect("watcher");
    assert!(watcher.status.success(), "watcher.js failed: {watcher:?}");
    let watched = text(&watcher.stdout);
    for line in [
        "node-1 ENQUEUED",
        "node-1 SUCCEEDED",
        "node-3 RETRYING",
        "node-3 FAILED",
    ] {
        assert!(watched.contains(line), "{line} in {watched}");
    }
}
