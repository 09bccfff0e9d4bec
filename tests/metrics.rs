//! `GET /metrics` of a running `sai serve`, read with a Prometheus text-format parser: the
//! RPC counters and latency histograms, status changes, queue gauges per function, writes
//! and their group sizes, and the working-set gauges.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::{Command, Stdio};

use prometheus_parse::{Sample, Scrape, Value};
use sai::pb;
use support::*;

/// `GET /metrics` over HTTP/1.1; the body, parsed.
fn scrape(http: SocketAddr) -> Scrape {
    let (status, head, body) = http_get(http, "/metrics");
    assert_eq!(status, 200, "{head}");
    assert!(
        head.contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    Scrape::parse(body.lines().map(|line| Ok(line.to_string()))).expect("valid text format")
}

/// The samples named `name` whose labels include `labels`.
fn samples<'a>(scrape: &'a Scrape, name: &str, labels: &[(&str, &str)]) -> Vec<&'a Sample> {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .collect()
}

/// The one counter or gauge value named `name` with `labels`.
fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let found = samples(scrape, name, labels);
    assert_eq!(
        found.len(),
        1,
        "one {name} with {labels:?} among {:?}",
        scrape
            .samples
            .iter()
            .map(|s| (&s.metric, &s.labels))
            .collect::<Vec<_>>()
    );
    match found[0].value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
        ref other => panic!("{name} is not a single value: {other:?}"),
    }
}

/// The sample count of the histogram named `name` with `labels`.
fn histogram_count(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> u64 {
    let found = samples(scrape, name, labels);
    assert_eq!(found.len(), 1, "one {name} with {labels:?}: {found:?}");
    match &found[0].value {
        Value::Histogram(buckets) => {
            let counts: Vec<f64> = buckets.iter().map(|b| b.count).collect();
            assert!(
                counts.windows(2).all(|w| w[0] <= w[1]),
                "cumulative buckets: {counts:?}"
            );
            buckets.last().map_or(0, |b| b.count as u64)
        }
        other => panic!("{name} is not a histogram: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_the_server_did_in_prometheus_text_format() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = SaiProcess::start(
        Command::new(env!("CARGO_BIN_EXE_sai"))
            .args(["serve", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(dir.path())
            .env("RUST_LOG", "error")
            .stderr(Stdio::null()),
    );
    let http = server.http.expect("the ready line names the HTTP listener");
    let mut client = pb::stateful_async_invocation_service_client::StatefulAsyncInvocationServiceClient::connect(server.url())
        .await
        .expect("connect");
    let mut worker = pb::worker_service_client::WorkerServiceClient::connect(server.url())
        .await
        .expect("connect worker");

    for id in ["m-1", "m-2", "m-3"] {
        invoke(&mut client, "default", FUNCTION, id).await;
    }
    let refused = client
        .invoke_function(pb::InvokeFunctionRequest {
            service_name: SERVICE.into(),
            function_name: "not a valid name!".into(),
            ..Default::default()
        })
        .await
        .expect_err("an invalid function name is refused");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    let leases = poll(&mut worker, "default", FUNCTION, 1, 0).await;
    assert_eq!(leases.len(), 1);
    complete(
        &mut worker,
        "default",
        &leases[0].lease_token,
        success("done"),
    )
    .await
    .expect("complete");

    // A watch stream held open while scraped.
    let _watch = client
        .watch_invocations(pb::WatchInvocationsRequest {
            service_name: SERVICE.into(),
            ..Default::default()
        })
        .await
        .expect("watch");

    let scrape = tokio::task::spawn_blocking(move || scrape(http))
        .await
        .expect("scrape");
    assert_eq!(value(&scrape, "sai_watch_streams", &[]), 1.0);
    assert_eq!(value(&scrape, "sai_invoke_streams", &[]), 0.0);
    let invoke_method = "/sai.v1.StatefulAsyncInvocationService/InvokeFunction";
    let requests = "sai_grpc_requests_total";
    assert_eq!(
        value(
            &scrape,
            requests,
            &[("method", invoke_method), ("code", "Ok")]
        ),
        3.0
    );
    assert_eq!(
        value(
            &scrape,
            requests,
            &[("method", invoke_method), ("code", "InvalidArgument")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &scrape,
            requests,
            &[
                ("method", "/sai.v1.WorkerService/CompleteInvocation"),
                ("code", "Ok")
            ]
        ),
        1.0
    );
    assert_eq!(
        histogram_count(
            &scrape,
            "sai_grpc_request_duration_seconds",
            &[("method", invoke_method)]
        ),
        4
    );

    let transitions: HashMap<&str, f64> = ["Enqueued", "Dequeued", "Running", "Succeeded"]
        .into_iter()
        .map(|status| {
            (
                status,
                value(
                    &scrape,
                    "sai_invocation_transitions_total",
                    &[("status", status)],
                ),
            )
        })
        .collect();
    assert_eq!(transitions["Enqueued"], 3.0);
    assert_eq!(transitions["Dequeued"], 1.0);
    assert_eq!(transitions["Running"], 1.0);
    assert_eq!(transitions["Succeeded"], 1.0);

    let function = format!("default/{SERVICE}/{FUNCTION}");
    assert_eq!(
        value(&scrape, "sai_queue_depth", &[("function", &function)]),
        2.0
    );
    assert!(
        value(
            &scrape,
            "sai_queue_oldest_age_seconds",
            &[("function", &function)]
        ) >= 0.0
    );
    assert_eq!(value(&scrape, "sai_queued_invocations", &[]), 2.0);
    assert_eq!(value(&scrape, "sai_open_invocations", &[]), 2.0);
    assert_eq!(value(&scrape, "sai_pending_timers", &[]), 2.0);
    assert_eq!(value(&scrape, "sai_active_leases", &[]), 0.0);
    assert_eq!(value(&scrape, "sai_write_in_progress_seconds", &[]), 0.0);
    // Every status change so far is kept for resuming watches, each with its snapshot.
    let changes = transitions.values().sum::<f64>();
    assert_eq!(value(&scrape, "sai_watch_history_changes", &[]), changes);
    let kept_bytes = value(&scrape, "sai_watch_history_bytes", &[]);
    assert!(
        kept_bytes >= changes * 400.0 && kept_bytes < 64.0 * 1024.0,
        "{kept_bytes} bytes for {changes} changes"
    );
    assert!(value(&scrape, "sai_block_cache_bytes", &[]) >= 0.0);
    for block in ["data", "index", "filter"] {
        for from in ["cache", "file"] {
            let labels = [("block", block), ("from", from)];
            assert!(value(&scrape, "sai_block_loads_total", &labels) >= 0.0);
        }
    }
    assert!(value(&scrape, "sai_write_buffer_bytes", &[]) > 0.0);
    // Every commit (3 invokes, a dispatch, a completion) was written in some group.
    assert!(histogram_count(&scrape, "sai_commit_group_size", &[]) >= 1);
    assert!(histogram_count(&scrape, "sai_write_duration_seconds", &[]) >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_say_what_retention_purged_and_how_far_it_has_got() {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = sai::clock::ManualClock::starting_at(TEST_EPOCH_MS);
    let config = sai::server::ServerConfig {
        storage: sai::server::Storage::disk(dir.path(), sai::server::Durability::Sync),
        retention: std::time::Duration::from_secs(60),
        http: Some("127.0.0.1:0".parse().expect("an address")),
        clock: clock.clock(),
        ..Default::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let (bound_tx, bound_rx) = tokio::sync::oneshot::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(sai::server::serve_and_announce(
        listener,
        config,
        async {
            let _ = stop_rx.await;
        },
        move |bound| {
            let _ = bound_tx.send(bound);
        },
    ));
    let bound = bound_rx
        .await
        .expect("the server announces where it answers");
    let http = bound.http.expect("an HTTP listener");
    let url = format!("http://{}", bound.grpc);
    let mut client = pb::stateful_async_invocation_service_client::StatefulAsyncInvocationServiceClient::connect(url.clone())
        .await
        .expect("connect");
    let mut worker = pb::worker_service_client::WorkerServiceClient::connect(url)
        .await
        .expect("connect worker");

    for id in ["r-1", "r-2", "r-3"] {
        invoke(&mut client, "default", FUNCTION, id).await;
    }
    for lease in poll(&mut worker, "default", FUNCTION, 2, 0).await {
        complete(&mut worker, "default", &lease.lease_token, success("done"))
            .await
            .expect("complete");
    }
    let scrape_now = || async {
        tokio::task::spawn_blocking(move || scrape(http))
            .await
            .expect("scrape")
    };

    // The first pass, at start, had nothing to purge and got through at its cutoff. Once
    // the two completed have left the open records, they are in the history.
    let start_s = TEST_EPOCH_MS as f64 / 1000.0;
    let caught_up = "sai_retention_caught_up_timestamp_seconds";
    let before = eventually("the first pass, and the completed settled", || async {
        let scrape = scrape_now().await;
        let settled = value(&scrape, "sai_open_invocations", &[]) == 1.0;
        (settled && !samples(&scrape, caught_up, &[]).is_empty()).then_some(scrape)
    })
    .await;
    assert_eq!(value(&before, caught_up, &[]), start_s - 60.0);
    assert_eq!(value(&before, "sai_retention_purged_total", &[]), 0.0);

    // A minute and a second later the two that ended are past the retention; the one still
    // queued is kept, and looked at again each pass.
    clock.advance(std::time::Duration::from_secs(61));
    let after = eventually("retention purges the two that ended", || async {
        let scrape = scrape_now().await;
        (value(&scrape, caught_up, &[]) == start_s + 1.0).then_some(scrape)
    })
    .await;
    assert_eq!(value(&after, "sai_retention_purged_total", &[]), 2.0);
    assert_eq!(
        value(&after, "sai_retention_failed_batches_total", &[]),
        0.0
    );
    assert_eq!(value(&after, "sai_retention_rechecked_records", &[]), 1.0);
    assert!(histogram_count(&after, "sai_retention_batch_duration_seconds", &[]) >= 2);
    assert_eq!(value(&after, "sai_open_invocations", &[]), 1.0);

    let _ = stop_tx.send(());
    server
        .await
        .expect("server task")
        .expect("server stops cleanly");
}

/// Every `sai_...` name in `text`, as far as the name goes.
fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("sai_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        names.insert(name);
    }
    names
}

#[test]
fn the_readme_documents_every_metric_and_names_no_other() {
    let read = |path: &str| {
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path))
            .unwrap_or_else(|err| panic!("read {path}: {err}"))
    };
    let defined: std::collections::BTreeSet<String> = read("src/metrics/names.rs")
        .lines()
        .filter(|line| line.starts_with("pub const"))
        .flat_map(metric_names)
        .collect();
    assert!(defined.len() > 20, "{defined:?}");
    let readme = read("README.md");
    let section = readme
        .split("\n## ")
        .find(|section| section.starts_with("Metrics\n"))
        .expect("a Metrics section");
    let tabled: std::collections::BTreeSet<String> = section
        .lines()
        .filter(|line| line.starts_with("| `sai_"))
        .flat_map(metric_names)
        .collect();
    assert_eq!(tabled, defined, "the table lists each metric once");
    // The alerts use only names the server exports (a histogram's series end in `_bucket`,
    // `_sum`, `_count`).
    for name in metric_names(section) {
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .filter(|base| defined.contains(*base))
            .unwrap_or(&name);
        assert!(defined.contains(base), "{name} is not a metric sai exports");
    }
}
