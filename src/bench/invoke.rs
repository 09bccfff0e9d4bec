//! `invoke`: InvokeFunction throughput and latency at C concurrent clients, each on its own
//! connection, against a fresh server per storage mode and run.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::task::JoinSet;

use crate::pb::stateful_async_invocation_service_client::StatefulAsyncInvocationServiceClient;
use crate::pb::InvokeFunctionRequest;

use super::report::{median_index, Latencies, Report};
use super::server::{Mode, ScratchDir, ServerProcess};
use super::BenchError;

/// Flags of `sai bench invoke`.
#[derive(Debug, clap::Args)]
pub struct InvokeArgs {
    /// Concurrent clients, one connection each.
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// Measured time per run (after a 1 s warm-up).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Payload size, bytes.
    #[arg(long, default_value_t = 100)]
    pub payload_bytes: usize,
    /// Storage modes to measure.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "sync,buffered,memory"
    )]
    pub modes: Vec<Mode>,
}

struct Run {
    throughput: f64,
    latencies: Latencies,
}

/// Measure every mode `runs` times; report the median run of each.
pub async fn run(args: &InvokeArgs, runs: usize) -> Result<Report, BenchError> {
    let mut report = Report::new(
        "invoke",
        json!({ "clients": args.clients, "duration_s": args.duration.as_secs_f64(),
                "payload_bytes": args.payload_bytes, "runs": runs }),
        vec![
            "mode",
            "invocations/s",
            "p50 ms",
            "p99 ms",
            "runs (invocations/s)",
        ],
    );
    for mode in &args.modes {
        let mut measured = Vec::new();
        for _ in 0..runs.max(1) {
            let dir = ScratchDir::new("invoke")?;
            let server = ServerProcess::start(*mode, dir.path()).await?;
            measured.push(load(&server.url, args).await?);
            drop(server);
        }
        let throughputs: Vec<f64> = measured.iter().map(|r| r.throughput).collect();
        let median = &mut measured[median_index(&throughputs)];
        report.row(vec![
            json!(mode.name()),
            json!(median.throughput.round() as u64),
            json!(median.latencies.percentile_ms(50.0)),
            json!(median.latencies.percentile_ms(99.0)),
            json!(throughputs
                .iter()
                .map(|t| t.round().to_string())
                .collect::<Vec<_>>()
                .join(" ")),
        ]);
    }
    Ok(report)
}

async fn load(url: &str, args: &InvokeArgs) -> Result<Run, BenchError> {
    let payload = "x".repeat(args.payload_bytes);
    let warm_up = Duration::from_secs(1);
    let start = Instant::now();
    let measure_from = start + warm_up;
    let stop_at = measure_from + args.duration;
    let mut clients = JoinSet::new();
    for client_no in 0..args.clients {
        let mut client = StatefulAsyncInvocationServiceClient::connect(url.to_string())
            .await
            .map_err(|e| BenchError::Server(e.to_string()))?;
        let payload = payload.clone();
        clients.spawn(async move {
            let mut latencies = Latencies::default();
            let mut errors = 0u64;
            for n in 0u64.. {
                let sent = Instant::now();
                if sent >= stop_at {
                    break;
                }
                let answer = client
                    .invoke_function(InvokeFunctionRequest {
                        service_name: "bench".into(),
                        function_name: "invoke".into(),
                        invocation_id: format!("c{client_no}-{n}"),
                        payload: payload.clone(),
                        ..Default::default()
                    })
                    .await;
                if answer.is_err() {
                    errors += 1;
                } else if sent >= measure_from {
                    latencies.record(sent.elapsed());
                }
            }
            (latencies, errors)
        });
    }
    let mut latencies = Latencies::default();
    let mut errors = 0;
    while let Some(done) = clients.join_next().await {
        let (client_latencies, client_errors) =
            done.map_err(|e| BenchError::Server(e.to_string()))?;
        latencies.merge(client_latencies);
        errors += client_errors;
    }
    if errors > 0 {
        return Err(BenchError::Server(format!("{errors} invocations failed")));
    }
    Ok(Run {
        throughput: latencies.len() as f64 / args.duration.as_secs_f64(),
        latencies,
    })
}
