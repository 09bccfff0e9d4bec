//! `get` and `list`: read throughput and latency with N invocations stored (seeded into a data
//! directory, then served by `sai serve --durability sync`), beside the baseline server
//! holding the same number of ready-made answers (get only: the baseline has no list).

use std::time::Duration;

use serde_json::json;

use super::history::seed;
use super::load::{closed_loop, Call, Clients, Run};
use super::report::{median_index, runs_column, Report};
use super::server::{Mode, ScratchDir, ServerProcess};
use super::{micros_per, BenchError};

/// Flags of `sai bench get` and `sai bench list`.
#[derive(Debug, clap::Args)]
pub struct ReadArgs {
    /// Stored invocation counts to measure at (all in one function).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "10000,1000000",
        value_parser = super::at_least_one()
    )]
    pub stored: Vec<usize>,
    /// Who calls.
    #[command(flatten)]
    pub clients: Clients,
    /// Measured time per run (after a 1 s warm-up).
    #[arg(long, default_value = "5s", value_parser = super::more_than_zero)]
    pub duration: Duration,
    /// Page size (list only).
    #[arg(long, default_value_t = 50)]
    pub limit: i32,
}

/// Which read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    /// GetStatefulAsyncInvocation.
    Get,
    /// ListStatefulAsyncInvocations.
    List,
}

/// Measure `read` at every stored count.
pub async fn run(read: Read, args: &ReadArgs, runs: usize) -> Result<Report, BenchError> {
    let name = match read {
        Read::Get => "get",
        Read::List => "list",
    };
    let mut report = Report::new(
        name,
        json!({ "clients": args.clients.clients, "connections": args.clients.connections, "duration_s": args.duration.as_secs_f64(),
                "limit": args.limit, "runs": runs, "durability": "sync" }),
        vec![
            "stored",
            "server",
            "calls/s",
            "server CPU µs/call",
            "p50 ms",
            "p99 ms",
            "% of baseline",
            "runs (calls/s)",
        ],
    );
    for &stored in &args.stored {
        let dir = ScratchDir::new(name)?;
        let seeded = seed(dir.path(), stored, 0, 1).await?;
        let call = match read {
            Read::Get => Call::Get {
                stored,
                functions: 1,
                start_ms: seeded.start_ms,
            },
            Read::List => Call::List {
                stored,
                functions: 1,
                limit: args.limit,
                start_ms: seeded.start_ms,
            },
        };
        // Both servers stay up and runs alternate between them, so that the machine's drift
        // over the minutes of a benchmark weighs on both alike.
        let mut servers = vec![("sai", ServerProcess::start(Mode::Sync, dir.path()).await?)];
        if read == Read::Get {
            servers.push((
                "baseline",
                ServerProcess::start_baseline(stored, seeded.start_ms).await?,
            ));
        }
        let mut measured: Vec<Vec<(Run, f64)>> = servers.iter().map(|_| Vec::new()).collect();
        for _ in 0..runs.max(1) {
            for (at, (_, server)) in servers.iter().enumerate() {
                let cpu_before = server.cpu_time();
                let run =
                    closed_loop(&server.url, args.clients, args.duration, call.clone()).await?;
                let cpu = server.cpu_time().saturating_sub(cpu_before);
                let cpu_us = micros_per(cpu, run.calls);
                measured[at].push((run, cpu_us));
            }
        }
        let mut medians = Vec::new();
        for runs in measured {
            let all: Vec<f64> = runs.iter().map(|(r, _)| r.throughput).collect();
            let mut runs = runs;
            medians.push((runs.swap_remove(median_index(&all)), all));
        }
        let baseline = medians.get(1).map(|((b, _), _)| b.throughput);
        for ((name, _), ((mut median, cpu_us), all)) in servers.iter().zip(medians) {
            let share = baseline
                .map(|b| json!((median.throughput / b * 100.0).round()))
                .unwrap_or(json!("-"));
            report.row(row(stored, name, &mut median, cpu_us, &all, share));
        }
    }
    Ok(report)
}

fn row(
    stored: usize,
    server: &str,
    run: &mut Run,
    cpu_us: f64,
    all: &[f64],
    share: serde_json::Value,
) -> Vec<serde_json::Value> {
    vec![
        json!(stored),
        json!(server),
        json!(run.throughput.round() as u64),
        json!((cpu_us * 10.0).round() / 10.0),
        json!(run.latencies.percentile_ms(50.0)),
        json!(run.latencies.percentile_ms(99.0)),
        share,
        runs_column(all),
    ]
}
