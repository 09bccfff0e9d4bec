//! `invoke`: InvokeFunction throughput and latency at C concurrent clients (sharing one
//! connection unless told otherwise), against a fresh server per storage mode and run, and
//! against the baseline.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::load::{closed_loop, Call, Clients, Run};
use super::report::{median_index, runs_column, Report};
use super::server::{Mode, ScratchDir, ServerProcess};
use super::{micros_per, BenchError};

/// Flags of `sai bench invoke`.
#[derive(Debug, clap::Args)]
pub struct InvokeArgs {
    /// Who calls.
    #[command(flatten)]
    pub clients: Clients,
    /// Measured time per run (after a 1 s warm-up).
    #[arg(long, default_value = "5s", value_parser = super::more_than_zero)]
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

/// Measure every mode, then the baseline, `runs` times each; report the median run of each.
pub async fn run(args: &InvokeArgs, runs: usize) -> Result<Report, BenchError> {
    let mut report = Report::new(
        "invoke",
        json!({ "clients": args.clients.clients, "connections": args.clients.connections, "duration_s": args.duration.as_secs_f64(),
                "payload_bytes": args.payload_bytes, "runs": runs }),
        vec![
            "server",
            "invocations/s",
            "server CPU µs/call",
            "p50 ms",
            "p99 ms",
            "% of baseline",
            "runs (invocations/s)",
        ],
    );
    let payload: Arc<str> = "x".repeat(args.payload_bytes).into();
    let servers: Vec<Option<Mode>> = args.modes.iter().copied().map(Some).chain([None]).collect();
    // Rounds visit every server in turn, so that the machine's drift weighs on all alike.
    let mut measured: Vec<Vec<(Run, f64)>> = servers.iter().map(|_| Vec::new()).collect();
    for _ in 0..runs.max(1) {
        for (at, mode) in servers.iter().enumerate() {
            let dir = ScratchDir::new("invoke")?;
            let server = match mode {
                Some(mode) => ServerProcess::start(*mode, dir.path()).await?,
                None => ServerProcess::start_baseline(0, 0).await?,
            };
            let call = Call::Invoke(payload.clone());
            let cpu_before = server.cpu_time();
            let run = closed_loop(&server.url, args.clients, args.duration, call).await?;
            let cpu = server.cpu_time().saturating_sub(cpu_before);
            let cpu_us = micros_per(cpu, run.calls);
            measured[at].push((run, cpu_us));
        }
    }
    let mut rows = Vec::new();
    for (mode, mut runs) in servers.iter().zip(measured) {
        let throughputs: Vec<f64> = runs.iter().map(|(r, _)| r.throughput).collect();
        let median = runs.swap_remove(median_index(&throughputs));
        rows.push((mode.map_or("baseline", Mode::name), median, throughputs));
    }
    let baseline = rows.last().map_or(1.0, |(_, (run, _), _)| run.throughput);
    for (name, (mut median, cpu_us), throughputs) in rows {
        report.row(vec![
            json!(name),
            json!(median.throughput.round() as u64),
            json!((cpu_us * 10.0).round() / 10.0),
            json!(median.latencies.percentile_ms(50.0)),
            json!(median.latencies.percentile_ms(99.0)),
            json!((median.throughput / baseline * 100.0).round()),
            runs_column(&throughputs),
        ]);
    }
    Ok(report)
}
