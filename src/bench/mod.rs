//! `sai bench`: named load scenarios against a `sai serve` child process on this machine,
//! each printing a table and writing JSON. The server runs in its own process (started from
//! this same binary) so that the load generator never shares its runtime.

pub mod baseline;
mod e2e;
mod history;
mod http;
mod invoke;
mod load;
mod machine;
mod metrics_cost;
mod page_cache;
mod read;
mod report;
mod rest;
mod server;
mod soak;
mod watch;

use std::path::PathBuf;
use std::time::Duration;

// The counts a scenario needs at least one of (runs, clients, records to read), refused at 0
// rather than divided by or sampled from nothing.
use crate::cli::at_least_one;

pub use history::{seed_function, SEED_SERVICE};

/// Which scenario to run.
#[derive(Debug, clap::Subcommand)]
pub enum Scenario {
    /// InvokeFunction throughput and latency at C concurrent clients, per storage mode.
    Invoke(invoke::InvokeArgs),
    /// A data directory with N finished and M open invocations: time to serving, memory,
    /// disk per invocation, get and list of records read from disk.
    History(history::HistoryArgs),
    /// GetStatefulAsyncInvocation throughput and latency with N stored, beside the baseline.
    Get(read::ReadArgs),
    /// ListStatefulAsyncInvocations page throughput and latency with N stored.
    List(read::ReadArgs),
    /// invoke -> poll -> complete -> Succeeded through W workers: throughput and latency.
    E2e(e2e::E2eArgs),
    /// W watchers of invocations being run: commit-to-receive latency, memory per watcher.
    Watch(watch::WatchArgs),
    /// A constant rate end to end for a long time: what the server holds, sampled.
    Soak(soak::SoakArgs),
    /// Synced invoke and end to end with metrics off and on (scraped): what metrics cost.
    Metrics(metrics_cost::MetricsArgs),
    /// GetStatefulAsyncInvocation over FC's REST API beside gRPC, on one server.
    RestGet(rest::RestGetArgs),
}

/// The parser of a measured time or a sampling interval: 0 is refused by name.
fn more_than_zero(text: &str) -> Result<Duration, String> {
    crate::cli::parse_duration_above_zero(text, "a rate over no time is not a number")
}

/// Flags every scenario shares.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// The scenario.
    #[command(subcommand)]
    pub scenario: Scenario,
    /// Where the JSON report goes.
    #[arg(long, global = true, default_value = "target/bench")]
    pub out: PathBuf,
    /// Runs per figure; the median run is reported.
    #[arg(long, global = true, default_value_t = 3, value_parser = at_least_one())]
    pub runs: usize,
    /// Run the server on this PostgreSQL database (`postgres://...`) instead of a data
    /// directory. sai's tables in it are dropped before each server starts: give it a
    /// database of its own.
    #[arg(long, global = true, env = "SAI_BENCH_STORE")]
    pub store: Option<String>,
}

/// Why a benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Starting or talking to the server failed.
    #[error("server: {0}")]
    Server(String),
    /// Reading or writing files failed.
    #[error("{0}")]
    Io(String),
    /// Flags that cannot go together.
    #[error("{0}")]
    Usage(String),
}

/// Run the chosen scenario.
pub async fn run(args: BenchArgs) -> Result<(), BenchError> {
    if let Some(url) = &args.store {
        server::use_store(url);
    }
    let report = match &args.scenario {
        Scenario::Invoke(scenario) => invoke::run(scenario, args.runs).await?,
        Scenario::History(scenario) => history::run(scenario, args.runs).await?,
        Scenario::Get(scenario) => read::run(read::Read::Get, scenario, args.runs).await?,
        Scenario::List(scenario) => read::run(read::Read::List, scenario, args.runs).await?,
        Scenario::E2e(scenario) => e2e::run(scenario, args.runs).await?,
        Scenario::Watch(scenario) => watch::run(scenario).await?,
        Scenario::Soak(scenario) => soak::run(scenario).await?,
        Scenario::Metrics(scenario) => metrics_cost::run(scenario, args.runs).await?,
        Scenario::RestGet(scenario) => rest::run(scenario, args.runs).await?,
    };
    println!("{}", report.table());
    let path = report.write_json(&args.out)?;
    println!("JSON: {}", path.display());
    Ok(())
}

/// Wall-clock microseconds since the epoch, to compare with the servers' event timestamps.
fn wall_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

fn server_error(err: impl std::fmt::Display) -> BenchError {
    BenchError::Server(err.to_string())
}

/// A poll of `service/function` for up to `max` leases, waiting at most `wait_ms`.
fn poll_request(
    service: &str,
    function: &str,
    worker_id: String,
    max: i32,
    wait_ms: i32,
) -> crate::pb::PollInvocationsRequest {
    crate::pb::PollInvocationsRequest {
        functions: vec![crate::pb::FunctionRef {
            service_name: service.into(),
            function_name: function.into(),
            qualifier: String::new(),
        }],
        worker_id,
        max_invocations: max,
        wait_time_ms: wait_ms,
    }
}

/// The completion a bench worker reports: succeeded, returning "ok".
fn succeeded(lease: &crate::pb::InvocationLease) -> crate::pb::CompleteInvocationRequest {
    crate::pb::CompleteInvocationRequest {
        lease_token: lease.lease_token.clone(),
        outcome: Some(crate::pb::complete_invocation_request::Outcome::Success(
            crate::pb::CompleteSuccess {
                return_payload: "ok".into(),
            },
        )),
    }
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1_000.0
}

/// CPU time spread over `items` (calls or invocations), in microseconds each.
fn micros_per(cpu: Duration, items: u64) -> f64 {
    cpu.as_secs_f64() * 1e6 / items.max(1) as f64
}
