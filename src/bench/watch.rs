//! `watch`: W watchers, each on its own WatchInvocation stream of one invocation (spread over
//! connections), while a worker runs all W invocations to Succeeded. Reports the delay from
//! an event's commit (its timestamp) to its arrival at the watcher, and the server's resident
//! memory per open watcher.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::task::JoinSet;

use crate::clock::Clock;
use crate::pb;
use crate::pb::stateful_async_invocation_service_client::StatefulAsyncInvocationServiceClient;
use crate::pb::worker_service_client::WorkerServiceClient;

use super::load::connect;
use super::report::{Latencies, Report};
use super::server::{Mode, ScratchDir, ServerProcess};
use super::{poll_request, server_error, succeeded, BenchError};

/// Flags of `sai bench watch`.
#[derive(Debug, clap::Args)]
pub struct WatchArgs {
    /// Concurrent watchers, one invocation each.
    #[arg(long, default_value_t = 10_000, value_parser = super::at_least_one())]
    pub watchers: usize,
    /// Watchers per connection.
    #[arg(long, default_value_t = 100, value_parser = super::at_least_one())]
    pub per_connection: usize,
}

const SERVICE: &str = "bench";
const FUNCTION: &str = "watched";

/// One run (watch runs once: its setup is long and its figures are per event).
pub async fn run(args: &WatchArgs) -> Result<Report, BenchError> {
    let dir = ScratchDir::new("watch")?;
    let server = ServerProcess::start(Mode::Sync, dir.path()).await?;
    let url = server.url.clone();
    let mut client = StatefulAsyncInvocationServiceClient::connect(url.clone())
        .await
        .map_err(server_error)?;
    for i in 0..args.watchers {
        client
            .invoke_function(pb::InvokeFunctionRequest {
                service_name: SERVICE.into(),
                function_name: FUNCTION.into(),
                invocation_id: format!("w{i}"),
                payload: "x".repeat(100),
                ..Default::default()
            })
            .await
            .map_err(server_error)?;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (rss_before, _) = server.memory();

    // Open every stream and read its replayed first event before measuring memory.
    let connections = args.watchers.div_ceil(args.per_connection.max(1));
    let channels = connect(&url, args.watchers, connections).await?;
    let (opened_tx, mut opened_rx) = tokio::sync::mpsc::channel::<()>(args.watchers.max(1));
    let mut watchers = JoinSet::new();
    for i in 0..args.watchers {
        let channel = channels[i / args.per_connection.max(1)].clone();
        let opened = opened_tx.clone();
        watchers.spawn(async move {
            let mut client = StatefulAsyncInvocationServiceClient::new(channel);
            let mut stream = client
                .watch_invocation(pb::WatchInvocationRequest {
                    service_name: SERVICE.into(),
                    function_name: FUNCTION.into(),
                    qualifier: String::new(),
                    invocation_id: format!("w{i}"),
                    from_event_id: 0,
                })
                .await
                .map_err(server_error)?
                .into_inner();
            let mut latencies = Latencies::default();
            let mut first = true;
            while let Some(message) = stream.message().await.map_err(server_error)? {
                let received_us = super::wall_us();
                if first {
                    // Event 1 is replayed history, not a live delivery.
                    first = false;
                    let _ = opened.send(()).await;
                    continue;
                }
                if let Some(event) = message.event {
                    let committed_us = event.timestamp.saturating_mul(1_000);
                    latencies.record(Duration::from_micros(
                        u64::try_from(received_us - committed_us).unwrap_or(0),
                    ));
                }
            }
            Ok::<_, BenchError>(latencies)
        });
    }
    drop(opened_tx);
    for _ in 0..args.watchers {
        opened_rx
            .recv()
            .await
            .ok_or_else(|| server_error("a watcher ended before its first event"))?;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (rss_watching, _) = server.memory();

    // Run every watched invocation to Succeeded: 3 live events per watcher.
    let started = Instant::now();
    let load_started_ms = Clock::system().now_ms();
    let mut worker = WorkerServiceClient::connect(url.clone())
        .await
        .map_err(server_error)?;
    let mut done = 0;
    while done < args.watchers {
        let leases = worker
            .poll_invocations(poll_request(
                SERVICE,
                FUNCTION,
                "bench-watch-worker".into(),
                100,
                1_000,
            ))
            .await
            .map_err(server_error)?
            .into_inner()
            .leases;
        if leases.is_empty() {
            continue;
        }
        done += leases.len();
        let completions = leases.iter().map(succeeded).collect();
        worker
            .complete_invocations(pb::CompleteInvocationsRequest { completions })
            .await
            .map_err(server_error)?;
    }
    let mut latencies = Latencies::default();
    while let Some(watcher) = watchers.join_next().await {
        latencies.merge(watcher.map_err(server_error)??);
    }
    let elapsed = started.elapsed();
    let deliveries = latencies.len();
    let per_watcher = rss_watching.saturating_sub(rss_before) / args.watchers.max(1) as u64;
    let mut report = Report::new(
        "watch",
        json!({ "watchers": args.watchers, "per_connection": args.per_connection,
                "durability": "sync", "load_started_ms": load_started_ms }),
        vec![
            "watchers",
            "live deliveries",
            "deliveries/s",
            "p50 ms",
            "p99 ms",
            "server memory per watcher KiB",
        ],
    );
    report.row(vec![
        json!(args.watchers),
        json!(deliveries),
        json!((deliveries as f64 / elapsed.as_secs_f64()).round() as u64),
        json!(latencies.percentile_ms(50.0)),
        json!(latencies.percentile_ms(99.0)),
        json!((per_watcher as f64 / 1024.0 * 10.0).round() / 10.0),
    ]);
    Ok(report)
}
