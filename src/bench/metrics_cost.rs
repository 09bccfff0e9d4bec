//! `metrics`: what recording metrics costs. Synced InvokeFunction (closed loop) and invoke ->
//! poll -> complete -> Succeeded, each against a server without `--http` (nothing recorded)
//! and one with it while `/metrics` is scraped every second (Prometheus scrapes every 15 s by
//! default), the two alternating run by run so that drift weighs on both alike.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::e2e::{self, E2eArgs};
use super::load::{closed_loop, Call, Clients};
use super::report::{median_index, runs_column, Report};
use super::server::{Mode, ScratchDir, ServerProcess};
use super::BenchError;

/// Flags of `sai bench metrics`.
#[derive(Debug, clap::Args)]
pub struct MetricsArgs {
    /// Who invokes, in the invoke measurement.
    #[command(flatten)]
    pub clients: Clients,
    /// Measured time per invoke run (after a 1 s warm-up).
    #[arg(long, default_value = "5s", value_parser = super::more_than_zero)]
    pub duration: Duration,
    /// Invocations per end-to-end run (64 producers, 8 workers, as `sai bench e2e`).
    #[arg(long, default_value_t = 20_000, value_parser = super::at_least_one())]
    pub invocations: usize,
}

/// How often the "on" server is scraped.
const SCRAPE_EVERY: Duration = Duration::from_secs(1);

/// Measure both workloads with metrics off and on, `runs` times each; report the medians.
pub async fn run(args: &MetricsArgs, runs: usize) -> Result<super::report::Report, BenchError> {
    let mut report = Report::new(
        "metrics",
        json!({ "clients": args.clients.clients, "duration_s": args.duration.as_secs_f64(),
                "invocations": args.invocations, "scrape_every_s": SCRAPE_EVERY.as_secs_f64(), "runs": runs }),
        vec![
            "workload",
            "metrics off /s",
            "metrics on /s",
            "on ÷ off",
            "runs off",
            "runs on",
        ],
    );
    let e2e_args = E2eArgs {
        replicas: 1,
        watcher: false,
        server_threads: 0,
        payload_bytes: e2e::DEFAULT_PAYLOAD_BYTES,
        invocations: args.invocations,
        producers: 64,
        producer_connections: 1,
        workers: 8,
        worker_connections: 0,
        invoke_batch: 1,
        invoke_stream: false,
        batch: 32,
        complete: e2e::Completion::Batch,
        rate: 0,
        modes: vec![Mode::Sync],
    };
    let payload: Arc<str> = "x".repeat(100).into();
    // [workload][off/on] -> throughputs
    let mut measured = [[Vec::new(), Vec::new()], [Vec::new(), Vec::new()]];
    for _ in 0..runs.max(1) {
        for (workload, runs_of) in measured.iter_mut().enumerate() {
            for (on, throughputs) in runs_of.iter_mut().enumerate() {
                let dir = ScratchDir::new("metrics")?;
                let flags: &[&str] = if on == 1 {
                    &["--http", "127.0.0.1:0"]
                } else {
                    &[]
                };
                let server = ServerProcess::start_with(Mode::Sync, dir.path(), flags).await?;
                let scraper = server.http_url.clone().map(|http| {
                    tokio::spawn(async move {
                        let url = format!("{http}/metrics");
                        loop {
                            tokio::time::sleep(SCRAPE_EVERY).await;
                            if super::http::get(&url).await.is_err() {
                                return;
                            }
                        }
                    })
                });
                let throughput = if workload == 0 {
                    let call = Call::Invoke(payload.clone());
                    closed_loop(&server.url, args.clients, args.duration, call)
                        .await?
                        .throughput
                } else {
                    e2e::once(std::slice::from_ref(&server.url), &e2e_args)
                        .await?
                        .throughput
                };
                if let Some(scraper) = scraper {
                    scraper.abort();
                }
                throughputs.push(throughput);
            }
        }
    }
    for (name, [off, on]) in ["synced invoke", "e2e (sync)"].into_iter().zip(measured) {
        let median = |runs: &[f64]| runs[median_index(runs)];
        let (off_median, on_median) = (median(&off), median(&on));
        report.row(vec![
            json!(name),
            json!(off_median.round() as u64),
            json!(on_median.round() as u64),
            json!(format!("{:.1}%", on_median / off_median * 100.0)),
            runs_column(&off),
            runs_column(&on),
        ]);
    }
    Ok(report)
}
