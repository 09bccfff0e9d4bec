//! The built `sai` binary end to end: `sai worker --exec` runs invocations that `sai invoke`
//! submits, and `sai watch` follows them live with an exit code telling how they ended.

mod support;

use std::process::{Command, Stdio};

use sai::pb;
use support::*;

fn sai(server: &TestServer, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_sai"))
        .args(args)
        .env("SAI_SERVER", server.url())
        .env("RUST_LOG", "warn")
        .output()
        .expect("run sai")
}

fn stdout(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_invoke_and_watch_through_the_binary() {
    let server = TestServer::start_with(fast_engine()).await;
    let mut client = server.client().await;
    configure(
        &mut client,
        "default",
        FUNCTION,
        pb::AsyncInvokeConfig {
            max_async_retry_attempts: Some(0),
            ..Default::default()
        },
    )
    .await;
    let mut worker = Command::new(env!("CARGO_BIN_EXE_sai"))
        .args([
            "worker",
            "--function",
            "demo-service/demo-function",
            "--concurrency",
            "2",
            "--worker-id",
            "cli-worker",
            "--exec",
            r#"read input; if [ "$input" = fail ]; then echo "bad input" >&2; exit 7; fi; echo "$SAI_INVOCATION_ID:$input" | tr a-z A-Z"#,
        ])
        .env("SAI_SERVER", server.url())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the worker");

    let binary_check = tokio::task::spawn_blocking({
        let url = server.url();
        move || {
            let server_url = url;
            let run = |args: &[&str]| {
                Command::new(env!("CARGO_BIN_EXE_sai"))
                    .args(args)
                    .env("SAI_SERVER", &server_url)
                    .env("RUST_LOG", "warn")
                    .output()
                    .expect("run sai")
            };
            let invoked = run(&[
                "invoke",
                "demo-service/demo-function",
                "--id",
                "job-1",
                "--payload",
                "hello",
            ]);
            assert!(invoked.status.success(), "{invoked:?}");
            assert_eq!(String::from_utf8_lossy(&invoked.stdout).trim(), "job-1");
            let watched = run(&["watch", "demo-service/demo-function", "job-1"]);
            assert_eq!(watched.status.code(), Some(0), "{watched:?}");
            let text = String::from_utf8_lossy(&watched.stdout).into_owned();
            for status in ["Enqueued", "Dequeued", "Running", "Succeeded"] {
                assert!(text.contains(status), "{status} in {text}");
            }

            let failing = run(&[
                "invoke",
                "demo-service/demo-function",
                "--id",
                "job-2",
                "--payload",
                "fail",
            ]);
            assert!(failing.status.success());
            let watched = run(&["watch", "demo-service/demo-function", "job-2"]);
            assert_eq!(
                watched.status.code(),
                Some(2),
                "Failed exits with 2: {watched:?}"
            );

            let listed = run(&[
                "--output",
                "json",
                "list",
                "demo-service/demo-function",
                "--all",
            ]);
            let listed: serde_json::Value =
                serde_json::from_slice(&listed.stdout).expect("list --output json is JSON");
            assert_eq!(listed["invocations"].as_array().map(Vec::len), Some(2));

            let missing = run(&["get", "demo-service/demo-function", "nope"]);
            assert_eq!(missing.status.code(), Some(1));
            let err = String::from_utf8_lossy(&missing.stderr).into_owned();
            assert!(err.starts_with("sai: NotFound"), "{err}");
            assert_eq!(err.trim_end().lines().count(), 1, "one clear line: {err}");

            let refused = run(&["list", "demo-service/demo-function", "--limit", "101"]);
            assert_eq!(refused.status.code(), Some(1));
            let err = String::from_utf8_lossy(&refused.stderr).into_owned();
            assert!(
                err.starts_with("sai: InvalidArgument: invalid limit: must be between 1 and 100"),
                "the code once, then the field and the rule: {err}"
            );
        }
    });
    let result = binary_check.await;
    let _ = worker.kill();
    let _ = worker.wait();
    result.expect("binary checks");

    let ok = get(&mut client, "default", FUNCTION, "job-1")
        .await
        .expect("get");
    assert_eq!(ok.return_payload, "JOB-1:HELLO\n");
    assert_eq!(ok.instance_id, "cli-worker");
    let failed = get(&mut client, "default", FUNCTION, "job-2")
        .await
        .expect("get");
    assert!(
        failed.invocation_error_message.contains("bad input"),
        "{}",
        failed.invocation_error_message
    );
    assert!(
        failed.invocation_error_message.contains("exit status: 7"),
        "{}",
        failed.invocation_error_message
    );
    let functions = stdout(&sai(&server, &["functions"]));
    assert!(functions.contains("demo-function"), "{functions}");
    let config = stdout(&sai(
        &server,
        &[
            "--output",
            "json",
            "config",
            "get",
            "demo-service/demo-function",
        ],
    ));
    let config: serde_json::Value = serde_json::from_str(&config).expect("config JSON");
    assert_eq!(config["maxAsyncRetryAttempts"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn threads_sets_the_runtime_and_a_bad_count_is_refused_by_name() {
    let server = TestServer::start().await;
    let checked = tokio::task::spawn_blocking(move || {
        let invoked = sai(
            &server,
            &[
                "--threads",
                "1",
                "invoke",
                "demo-service/demo-function",
                "--id",
                "one-thread",
            ],
        );
        assert!(invoked.status.success(), "{invoked:?}");
        assert_eq!(stdout(&invoked).trim(), "one-thread");
        for (flag, env) in [(Some("0"), None), (None, Some("many"))] {
            let mut command = Command::new(env!("CARGO_BIN_EXE_sai"));
            if let Some(count) = flag {
                command.args(["--threads", count]);
            }
            if let Some(count) = env {
                command.env("SAI_THREADS", count);
            }
            let refused = command
                .args(["invoke", "demo-service/demo-function", "--id", "never"])
                .env("SAI_SERVER", server.url())
                .output()
                .expect("run sai");
            assert_eq!(refused.status.code(), Some(2), "{refused:?}");
            let error = String::from_utf8_lossy(&refused.stderr);
            assert!(error.contains("'--threads <THREADS>'"), "{error}");
        }
        server
    })
    .await
    .expect("the binary checks ran");
    let mut client = checked.client().await;
    for (id, stored) in [("one-thread", true), ("never", false)] {
        let got = client
            .get_stateful_async_invocation(pb::GetStatefulAsyncInvocationRequest {
                service_name: "demo-service".into(),
                function_name: "demo-function".into(),
                invocation_id: id.into(),
                ..Default::default()
            })
            .await;
        match stored {
            true => assert!(got.is_ok(), "{id}: {got:?}"),
            false => assert_eq!(
                got.err().map(|status| status.code()),
                Some(tonic::Code::NotFound)
            ),
        }
    }
}

/// `sai serve` on `dir` with `args`, its standard error captured.
fn serve_command(dir: &std::path::Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sai"));
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .args(args)
        .env("RUST_LOG", "warn")
        .stderr(Stdio::piped());
    command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flags_that_would_fail_every_call_or_be_ignored_are_refused_by_name() {
    let dir = tempfile::tempdir().expect("temp dir");
    let checked = tokio::task::spawn_blocking({
        let dir = dir.path().to_path_buf();
        move || {
            for (args, named, rule) in [
                (
                    vec!["--lease-timeout", "0s"],
                    "--lease-timeout",
                    "must be more than 0",
                ),
                (
                    vec!["--retry-backoff-initial", "5s", "--retry-backoff-max", "1s"],
                    "--retry-backoff-max (1s)",
                    "must be at least --retry-backoff-initial (5s)",
                ),
                (
                    vec!["--max-open-per-function", "0"],
                    "--max-open-per-function",
                    "0 is not in 1..",
                ),
                (
                    vec!["--max-polls-per-account", "0"],
                    "--max-polls-per-account",
                    "0 is not in 1..",
                ),
                (
                    vec!["--keepalive-interval", "0s"],
                    "--keepalive-interval",
                    "must be more than 0",
                ),
                (
                    vec!["--max-request-bytes", "100000"],
                    "--max-payload-bytes (131072)",
                    "must be less than --max-request-bytes (100000)",
                ),
            ] {
                let refused = serve_command(&dir, &args).output().expect("run sai serve");
                assert_eq!(refused.status.code(), Some(2), "{args:?}: {refused:?}");
                let error = String::from_utf8_lossy(&refused.stderr);
                assert!(error.contains(named), "{args:?}: {error}");
                assert!(error.contains(rule), "{args:?}: {error}");
            }
            // Nothing was opened: the data directory is as it was.
            assert_eq!(std::fs::read_dir(&dir).expect("read dir").count(), 0);
        }
    })
    .await;
    checked.expect("the binary checks ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_cannot_be_reached_is_reported_with_its_cause() {
    let refused = tokio::task::spawn_blocking(|| {
        // Port 1: privileged, so never handed out to the other tests' servers, and unused.
        Command::new(env!("CARGO_BIN_EXE_sai"))
            .args(["serve", "--listen", "127.0.0.1:0", "--store"])
            .arg("postgres://sai@127.0.0.1:1/sai")
            .env("RUST_LOG", "warn")
            .output()
            .expect("run sai serve")
    })
    .await
    .expect("sai serve ran");
    assert!(!refused.status.success(), "{refused:?}");
    let error = String::from_utf8_lossy(&refused.stderr);
    let cause = error
        .split_once("PostgreSQL: error connecting to server: ")
        .map(|(_, cause)| cause.trim());
    assert!(
        cause.is_some_and(|cause| !cause.is_empty()),
        "the driver's kind and what went wrong: {error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_cache_size_serves_history_and_a_bad_size_is_refused_by_name() {
    let dir = tempfile::tempdir().expect("temp dir");
    let checked = tokio::task::spawn_blocking({
        let dir = dir.path().to_path_buf();
        move || {
            for (args, rule) in [
                (vec!["--block-cache-size", "512KiB"], "at least 1MiB"),
                (vec!["--block-cache-size", "lots"], "is not a size"),
                (
                    vec!["--block-cache-size", "8MiB", "--in-memory"],
                    "cannot be used",
                ),
            ] {
                let refused = serve_command(&dir, &args).output().expect("run sai serve");
                assert_eq!(refused.status.code(), Some(2), "{args:?}: {refused:?}");
                let error = String::from_utf8_lossy(&refused.stderr);
                assert!(error.contains("--block-cache-size"), "{args:?}: {error}");
                assert!(error.contains(rule), "{args:?}: {error}");
            }
            // Refused flags left nothing behind: the directory was never opened.
            assert_eq!(std::fs::read_dir(&dir).expect("read dir").count(), 0);
            let client = |server: &SaiProcess, args: &[&str]| {
                let output = Command::new(env!("CARGO_BIN_EXE_sai"))
                    .args(args)
                    .env("SAI_SERVER", server.url())
                    .env("RUST_LOG", "warn")
                    .output()
                    .expect("run sai");
                assert!(output.status.success(), "{args:?}: {output:?}");
                stdout(&output)
            };
            let small_cache = ["--block-cache-size", "1MiB"];
            let first = SaiProcess::start(&mut serve_command(&dir, &small_cache));
            let target = "demo-service/demo-function";
            client(&first, &["invoke", target, "--id", "kept"]);
            client(&first, &["stop", target, "kept"]);
            let before = client(&first, &["get", target, "kept", "--output", "json"]);
            drop(first);
            // After a restart the finished record is read from the data directory.
            let second = SaiProcess::start(&mut serve_command(&dir, &small_cache));
            let after = client(&second, &["get", target, "kept", "--output", "json"]);
            assert_eq!(before, after);
            let record: serde_json::Value = serde_json::from_str(&after).expect("get JSON");
            assert_eq!(record["status"], "Stopped", "{record}");
        }
    })
    .await;
    checked.expect("the binary checks ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_a_directory_of_other_files_and_writes_nothing_in_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let checked = tokio::task::spawn_blocking({
        let dir = dir.path().to_path_buf();
        move || {
            drop(SaiProcess::start(&mut serve_command(&dir, &[])));
            // The storage engine's own folder, given by mistake for the data directory.
            let store = dir.join("store");
            let entries = || -> Vec<_> {
                std::fs::read_dir(&store)
                    .expect("the store folder")
                    .map(|entry| entry.expect("entry").file_name())
                    .collect()
            };
            let before = entries();
            let refused = serve_command(&store, &[]).output().expect("run sai serve");
            assert!(!refused.status.success(), "{refused:?}");
            let error = String::from_utf8_lossy(&refused.stderr);
            assert!(error.contains("is not a sai data directory"), "{error}");
            assert!(error.contains(&store.display().to_string()), "{error}");
            assert_eq!(
                before,
                entries(),
                "nothing written in the refused directory"
            );
            // The data directory itself still opens.
            drop(SaiProcess::start(&mut serve_command(&dir, &[])));
        }
    })
    .await;
    checked.expect("the binary checks ran");
}
