//! `rest-get`: GetStatefulAsyncInvocation over FC's REST API beside the same get over gRPC,
//! on one server (`--http`) with N invocations seeded into its data directory, runs
//! alternating between the two. REST callers share a pool of HTTP/1.1 keep-alive connections
//! (as an SDK's HTTP client does); gRPC callers share connections as `sai bench get`'s do.

use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rand::Rng;
use serde_json::json;

use super::history::{seed, seed_function, seed_id, SEED_ACCOUNT, SEED_SERVICE};
use super::load::{closed_loop, drive, Call, Clients, Run};
use super::report::{median_index, runs_column, Report};
use super::server::{Mode, ScratchDir, ServerProcess};
use super::{micros_per, BenchError};

/// Flags of `sai bench rest-get`.
#[derive(Debug, clap::Args)]
pub struct RestGetArgs {
    /// Invocations stored (in one function).
    #[arg(long, default_value_t = 10_000, value_parser = super::at_least_one())]
    pub stored: usize,
    /// Who calls (`--connections` applies to gRPC; REST opens what its pool needs).
    #[command(flatten)]
    pub clients: Clients,
    /// Measured time per run (after a 1 s warm-up).
    #[arg(long, default_value = "5s", value_parser = super::more_than_zero)]
    pub duration: Duration,
}

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>;

/// Gets of random invocations seeded from `start_ms` over REST, from `clients` callers
/// sharing one pool.
async fn rest_loop(
    http: &str,
    stored: usize,
    start_ms: i64,
    clients: usize,
    duration: Duration,
) -> Result<Run, BenchError> {
    let pool: HttpClient = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(clients)
        .build_http();
    let base = format!(
        "{http}/2021-04-06/services/{SEED_SERVICE}/functions/{}/stateful-async-invocations/",
        seed_function(0)
    );
    drive(
        clients,
        duration,
        |_| pool.clone(),
        move |pool: HttpClient, _, _| {
            let url = format!(
                "{base}{}",
                seed_id(start_ms, rand::rng().random_range(0..stored))
            );
            async move {
                let request = hyper::Request::get(url)
                    .header("x-fc-account-id", SEED_ACCOUNT)
                    .body(Empty::<Bytes>::new())
                    .map_err(|e| e.to_string())?;
                let response = pool.request(request).await.map_err(|e| e.to_string())?;
                let status = response.status();
                let body = response
                    .into_body()
                    .collect()
                    .await
                    .map_err(|e| e.to_string())?
                    .to_bytes();
                if status != hyper::StatusCode::OK {
                    return Err(format!("{status}: {}", String::from_utf8_lossy(&body)));
                }
                Ok(())
            }
        },
    )
    .await
}

/// Measure both, `runs` times each, alternating; report the medians.
pub async fn run(args: &RestGetArgs, runs: usize) -> Result<Report, BenchError> {
    let mut report = Report::new(
        "rest-get",
        json!({ "stored": args.stored, "clients": args.clients.clients, "connections": args.clients.connections,
                "duration_s": args.duration.as_secs_f64(), "runs": runs, "durability": "sync" }),
        vec![
            "api",
            "calls/s",
            "server CPU µs/call",
            "p50 ms",
            "p99 ms",
            "% of gRPC",
            "runs (calls/s)",
        ],
    );
    let dir = ScratchDir::new("rest-get")?;
    let seeded = seed(dir.path(), args.stored, 0, 1).await?;
    let server =
        ServerProcess::start_with(Mode::Sync, dir.path(), &["--http", "127.0.0.1:0"]).await?;
    let http = server
        .http_url
        .clone()
        .ok_or_else(|| BenchError::Server("no HTTP listener in the ready line".into()))?;
    let call = Call::Get {
        stored: args.stored,
        functions: 1,
        start_ms: seeded.start_ms,
    };
    let mut measured: [Vec<(Run, f64)>; 2] = [Vec::new(), Vec::new()];
    for _ in 0..runs.max(1) {
        for (at, runs_of) in measured.iter_mut().enumerate() {
            let cpu_before = server.cpu_time();
            let run = if at == 0 {
                closed_loop(&server.url, args.clients, args.duration, call.clone()).await?
            } else {
                rest_loop(
                    &http,
                    args.stored,
                    seeded.start_ms,
                    args.clients.clients,
                    args.duration,
                )
                .await?
            };
            let cpu = server.cpu_time().saturating_sub(cpu_before);
            let cpu_us = micros_per(cpu, run.calls);
            runs_of.push((run, cpu_us));
        }
    }
    let mut grpc_throughput = None;
    for (api, runs_of) in ["gRPC", "REST"].into_iter().zip(measured) {
        let all: Vec<f64> = runs_of.iter().map(|(r, _)| r.throughput).collect();
        let mut runs_of = runs_of;
        let (mut median, cpu_us) = runs_of.swap_remove(median_index(&all));
        let grpc = *grpc_throughput.get_or_insert(median.throughput);
        report.row(vec![
            json!(api),
            json!(median.throughput.round() as u64),
            json!((cpu_us * 10.0).round() / 10.0),
            json!(median.latencies.percentile_ms(50.0)),
            json!(median.latencies.percentile_ms(99.0)),
            json!((median.throughput / grpc * 100.0).round()),
            runs_column(&all),
        ]);
    }
    Ok(report)
}
