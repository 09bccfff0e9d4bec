//! `get` and `list`: read throughput and latency with N invocations stored (seeded into a data
//! directory, then served by `sai serve --durability sync`), beside the baseline server
//! holding the same number of ready-made answers (get only: the baseline has no list).

use std::time::Duration;

use serde_json::json;

use super::load::{closed_loop, Call, Run};
use super::report::{median_index, Report};
use super::restart::seed;
use super::server::{Mode, ScratchDir, ServerProcess};
use super::BenchError;

/// Flags of `sai bench get` and `sai bench list`.
#[derive(Debug, clap::Args)]
pub struct ReadArgs {
    /// Stored invocation counts to measure at (all in one function).
    #[arg(long, value_delimiter = ',', default_value = "10000,1000000")]
    pub stored: Vec<usize>,
    /// Concurrent clients, one connection each.
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// Measured time per run (after a 1 s warm-up).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
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

async fn median_of(
    runs: usize,
    url: &str,
    args: &ReadArgs,
    call: Call,
) -> Result<(Run, Vec<f64>), BenchError> {
    let mut measured = Vec::new();
    for _ in 0..runs.max(1) {
        measured.push(closed_loop(url, args.clients, args.duration, call.clone()).await?);
    }
    let throughputs: Vec<f64> = measured.iter().map(|r| r.throughput).collect();
    let median = measured.swap_remove(median_index(&throughputs));
    Ok((median, throughputs))
}

/// Measure `read` at every stored count.
pub async fn run(read: Read, args: &ReadArgs, runs: usize) -> Result<Report, BenchError> {
    let name = match read {
        Read::Get => "get",
        Read::List => "list",
    };
    let mut report = Report::new(
        name,
        json!({ "clients": args.clients, "duration_s": args.duration.as_secs_f64(),
                "limit": args.limit, "runs": runs, "durability": "sync" }),
        vec![
            "stored",
            "server",
            "calls/s",
            "p50 ms",
            "p99 ms",
            "% of baseline",
            "runs (calls/s)",
        ],
    );
    for &stored in &args.stored {
        let dir = ScratchDir::new(name)?;
        let seeded = seed(dir.path(), stored, 1).await?;
        let call = match read {
            Read::Get => Call::Get(stored),
            Read::List => Call::List {
                stored,
                limit: args.limit,
                start_ms: seeded.start_ms,
            },
        };
        let sai = ServerProcess::start(Mode::Sync, dir.path()).await?;
        let (mut measured, all) = median_of(runs, &sai.url, args, call.clone()).await?;
        drop(sai);
        let baseline = if read == Read::Get {
            let server = ServerProcess::start_baseline(stored).await?;
            let result = median_of(runs, &server.url, args, call).await?;
            Some(result)
        } else {
            None
        };
        let share = baseline
            .as_ref()
            .map(|(b, _)| json!((measured.throughput / b.throughput * 100.0).round()))
            .unwrap_or(json!("-"));
        report.row(row(stored, "sai", &mut measured, &all, share));
        if let Some((mut b, all)) = baseline {
            report.row(row(stored, "baseline", &mut b, &all, json!(100)));
        }
    }
    Ok(report)
}

fn row(
    stored: usize,
    server: &str,
    run: &mut Run,
    all: &[f64],
    share: serde_json::Value,
) -> Vec<serde_json::Value> {
    vec![
        json!(stored),
        json!(server),
        json!(run.throughput.round() as u64),
        json!(run.latencies.percentile_ms(50.0)),
        json!(run.latencies.percentile_ms(99.0)),
        share,
        json!(all
            .iter()
            .map(|t| t.round().to_string())
            .collect::<Vec<_>>()
            .join(" ")),
    ]
}
