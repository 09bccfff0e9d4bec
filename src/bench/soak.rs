//! `soak`: a constant offered rate end to end (invoke -> worker -> Succeeded) for a long time,
//! with the server's default retention and max event age, sampling what it holds every few
//! seconds: resident memory and CPU (from /proc); from its `/metrics`, open invocations,
//! queued ones, pending timers, leases, cache bytes and the allocator's heap; and how long a
//! list page takes, oldest first and newest first. A shorter
//! `--retention` shows the steady state a long run reaches, purging as fast as it invokes. What the server holds
//! must follow what is open, not what was ever invoked: flat while the rate is, and back to
//! where it started once the last invocation ended.

use std::time::{Duration, Instant};

use serde_json::json;
use tonic::transport::Channel;

use super::e2e::{self, Completion, E2eArgs};
use super::http;
use super::report::Report;
use super::server::{Mode, ScratchDir, ServerProcess};
use super::{server_error, BenchError};
use crate::metrics;
use crate::pb;
use crate::pb::stateful_async_invocation_service_client::StatefulAsyncInvocationServiceClient;
use crate::server::DEFAULT_RETENTION;

/// First pages of 50 each sample lists each way, of the function the load invokes. Retention
/// purges at the oldest end, where the deletion markers it leaves lie until compaction drops
/// them: a list oldest first meets them, one newest first does not.
const LIST_PROBE_PAGES: usize = 5;

/// What must be back at its count before the load once the last invocation ended.
const LEFT_OVER: [&str; 3] = [
    metrics::PENDING_TIMERS,
    metrics::ACTIVE_LEASES,
    metrics::OPEN_INVOCATIONS,
];

/// Longest wait for those gauges to settle after the load.
const SETTLE_WAIT: Duration = Duration::from_secs(10);

/// Flags of `sai bench soak`.
#[derive(Debug, clap::Args)]
pub struct SoakArgs {
    /// Offered rate, invocations/s.
    #[arg(long, default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub rate: u64,
    /// How long the load runs.
    #[arg(long, default_value = "30m", value_parser = super::more_than_zero)]
    pub duration: Duration,
    /// Producers (calls in flight at most).
    #[arg(long, default_value_t = 64, value_parser = super::at_least_one())]
    pub producers: usize,
    /// Workers.
    #[arg(long, default_value_t = 8, value_parser = super::at_least_one())]
    pub workers: usize,
    /// Time between samples.
    #[arg(long, default_value = "10s", value_parser = super::more_than_zero)]
    pub every: Duration,
    /// Storage mode.
    #[arg(long, value_enum, default_value = "sync")]
    pub mode: Mode,
    /// Bytes of each invocation's payload.
    #[arg(long, default_value_t = e2e::DEFAULT_PAYLOAD_BYTES)]
    pub payload_bytes: usize,
    /// How long the server keeps finished invocations (`sai serve --retention`; its default
    /// of 7 days when absent). Shorter than the run, retention purges while the load runs, as
    /// it does in every run longer than the retention period.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub retention: Option<Duration>,
    /// A flag for the server, as `sai serve` takes it (repeatable), e.g.
    /// `--server-arg=--block-cache-size=64MiB`.
    #[arg(long = "server-arg", allow_hyphen_values = true)]
    pub server_args: Vec<String>,
}

/// One look at the server.
struct Sample {
    at: Duration,
    /// The system clock when it was taken, which the server's reads too.
    taken: std::time::SystemTime,
    rss: u64,
    /// The server's CPU time so far.
    cpu: Duration,
    gauges: std::collections::HashMap<String, f64>,
    /// Median time of a first page of 50, oldest first and newest first.
    list: ListTimes,
}

/// Median time of a first list page of 50 each way.
#[derive(Debug, Clone, Copy)]
struct ListTimes {
    oldest_first: Duration,
    newest_first: Duration,
}

impl Sample {
    fn gauge(&self, name: &str) -> u64 {
        self.gauges.get(name).map_or(0, |v| *v as u64)
    }

    /// How far behind its cutoff retention was, in seconds: from the cutoff it last caught
    /// up to, to the cutoff of now. `None` before its first pass got through.
    fn retention_behind(&self, retention: Duration) -> Option<f64> {
        let caught_up = self.gauges.get(metrics::RETENTION_CAUGHT_UP_SECONDS)?;
        let now = self
            .taken
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?
            .as_secs_f64();
        Some(((now - retention.as_secs_f64() - caught_up) * 10.0).round() / 10.0)
    }

    /// The sample's row; the server's CPU is its share of a core since `previous`.
    fn row(&self, label: &str, previous: &Sample, retention: Duration) -> Vec<serde_json::Value> {
        let mib = |bytes: u64| ((bytes as f64 / (1u64 << 20) as f64) * 10.0).round() / 10.0;
        let wall = self.at.saturating_sub(previous.at).as_secs_f64();
        let cpu = self.cpu.saturating_sub(previous.cpu).as_secs_f64();
        let cpu_percent = if wall > 0.0 { cpu / wall * 100.0 } else { 0.0 };
        vec![
            json!(label),
            json!(self.at.as_secs()),
            json!(mib(self.rss)),
            json!((cpu_percent * 10.0).round() / 10.0),
            json!(self.gauge(metrics::OPEN_INVOCATIONS)),
            json!(self.gauge(metrics::QUEUED_INVOCATIONS)),
            json!(self.gauge(metrics::PENDING_TIMERS)),
            json!(self.gauge(metrics::ACTIVE_LEASES)),
            json!(mib(self.gauge(metrics::CACHE_BYTES))),
            json!(mib(self.gauge(metrics::HISTORY_DISK_BYTES))),
            json!(mib(self.gauge(metrics::WRITE_BUFFER_BYTES))),
            json!(mib(self.gauge(metrics::BLOCK_CACHE_BYTES))),
            json!(self.gauge(metrics::WATCH_HISTORY_CHANGES)),
            json!(mib(self.gauge(metrics::WATCH_HISTORY_BYTES))),
            json!(mib(self.gauge(metrics::HEAP_ALLOCATED_BYTES))),
            json!(mib(self.gauge(metrics::HEAP_ACTIVE_BYTES))),
            json!(mib(self.gauge(metrics::HEAP_METADATA_BYTES))),
            json!(mib(self.gauge(metrics::HEAP_RESIDENT_BYTES))),
            json!(millis(self.list.oldest_first)),
            json!(millis(self.list.newest_first)),
            json!(self.gauge(metrics::RETENTION_PURGED)),
            json!(self.retention_behind(retention)),
        ]
    }
}

/// `duration` in ms, to a hundredth.
fn millis(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 1e5).round() / 100.0
}

/// Time [`LIST_PROBE_PAGES`] first pages of the load's function each way; the medians.
async fn list_times(
    client: &mut StatefulAsyncInvocationServiceClient<Channel>,
) -> Result<ListTimes, BenchError> {
    let mut median = async |order: pb::SortOrder| {
        let mut times = Vec::with_capacity(LIST_PROBE_PAGES);
        for _ in 0..LIST_PROBE_PAGES {
            let asked = Instant::now();
            client
                .list_stateful_async_invocations(pb::ListStatefulAsyncInvocationsRequest {
                    service_name: e2e::SERVICE.into(),
                    function_name: e2e::FUNCTION.into(),
                    sort_order_by_time: order as i32,
                    limit: 50,
                    ..Default::default()
                })
                .await
                .map_err(server_error)?;
            times.push(asked.elapsed());
        }
        times.sort();
        Ok::<_, BenchError>(times[times.len() / 2])
    };
    Ok(ListTimes {
        oldest_first: median(pb::SortOrder::Asc).await?,
        newest_first: median(pb::SortOrder::Desc).await?,
    })
}

/// What the server holds now, and how long its lists take.
async fn sample(
    server: &ServerProcess,
    metrics_url: &str,
    client: &mut StatefulAsyncInvocationServiceClient<Channel>,
    started: Instant,
) -> Result<Sample, BenchError> {
    let (status, text) = http::get(metrics_url).await?;
    if status != 200 {
        return Err(BenchError::Server(format!("/metrics answered {status}")));
    }
    Ok(Sample {
        at: started.elapsed(),
        taken: std::time::SystemTime::now(),
        rss: server.memory().0,
        cpu: server.cpu_time(),
        gauges: http::unlabelled_samples(&text),
        list: list_times(client).await?,
    })
}

/// Run the load for `duration`, sampling as it goes; then wait for the last invocation to end.
pub async fn run(args: &SoakArgs) -> Result<Report, BenchError> {
    let dir = ScratchDir::new("soak")?;
    let retention = args
        .retention
        .map(|retention| humantime::format_duration(retention).to_string());
    let retention_flag = retention.as_ref().map(|r| format!("--retention={r}"));
    let mut flags = vec!["--http", "127.0.0.1:0"];
    flags.extend(retention_flag.as_deref());
    flags.extend(args.server_args.iter().map(String::as_str));
    let server = ServerProcess::start_with(args.mode, dir.path(), &flags).await?;
    let metrics_url = format!(
        "{}/metrics",
        server
            .http_url
            .as_deref()
            .ok_or_else(|| BenchError::Server("the server has no HTTP listener".into()))?
    );
    let invocations =
        usize::try_from(args.rate.saturating_mul(args.duration.as_secs())).unwrap_or(usize::MAX);
    let load = E2eArgs {
        replicas: 1,
        watcher: false,
        server_threads: 0,
        payload_bytes: args.payload_bytes,
        invocations,
        producers: args.producers,
        producer_connections: 1,
        workers: args.workers,
        worker_connections: 0,
        invoke_batch: 1,
        invoke_stream: false,
        batch: 32,
        complete: Completion::Batch,
        rate: args.rate,
        modes: vec![args.mode],
    };
    let mut report = Report::new(
        "soak",
        json!({ "rate": args.rate, "duration_s": args.duration.as_secs(), "producers": args.producers,
                "workers": args.workers, "mode": args.mode.name(), "invocations": invocations,
                "payload_bytes": args.payload_bytes, "server_args": args.server_args,
                "retention": retention.as_deref().unwrap_or("7d (default)"),
                "max_event_age": "24h (default)" }),
        vec![
            "sample",
            "t s",
            "RSS MiB",
            "server CPU %",
            "open",
            "queued",
            "timers",
            "active leases",
            "cache MiB",
            "disk MiB",
            "memtables MiB",
            "block cache MiB",
            "watch history",
            "watch history MiB",
            "heap MiB",
            "heap active MiB",
            "heap metadata MiB",
            "heap resident MiB",
            "list oldest first ms",
            "list newest first ms",
            "purged",
            "retention behind s",
        ],
    );
    let mut client = StatefulAsyncInvocationServiceClient::connect(server.url.clone())
        .await
        .map_err(server_error)?;
    let started = Instant::now();
    let before = sample(&server, &metrics_url, &mut client, started).await?;
    let retention_period = args.retention.unwrap_or(DEFAULT_RETENTION);
    report.row(before.row("before", &before, retention_period));
    let url = server.url.clone();
    let load = tokio::spawn(async move { e2e::once(std::slice::from_ref(&url), &load).await });
    let mut samples = Vec::new();
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + args.every, args.every);
    while !load.is_finished() {
        tokio::select! {
            _ = tick.tick() => {
                let taken = sample(&server, &metrics_url, &mut client, started).await?;
                let row = taken.row("load", samples.last().unwrap_or(&before), retention_period);
                eprintln!("{}", serde_json::Value::Array(row.clone()));
                report.row(row);
                samples.push(taken);
            }
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
    let mut run = load
        .await
        .map_err(|e| BenchError::Server(e.to_string()))??;
    // A backend may refresh its gauges only every few seconds (PostgreSQL's every 2 s): they
    // are read again until they are back where they started, for at most SETTLE_WAIT. What
    // they still show then is left over.
    let back_as_before = |sample: &Sample| {
        LEFT_OVER
            .iter()
            .all(|gauge| sample.gauge(gauge) == before.gauge(gauge))
    };
    let settle_by = Instant::now() + SETTLE_WAIT;
    let mut after = sample(&server, &metrics_url, &mut client, started).await?;
    while !back_as_before(&after) && Instant::now() < settle_by {
        tokio::time::sleep(Duration::from_millis(500)).await;
        after = sample(&server, &metrics_url, &mut client, started).await?;
    }
    report.row(after.row("after", samples.last().unwrap_or(&before), retention_period));
    // Against the sample closest to 2 minutes in.
    let two_minutes = samples
        .iter()
        .min_by_key(|s| s.at.as_secs().abs_diff(120))
        .map_or(0, |s| s.rss);
    let last = samples.last().map_or(0, |s| s.rss);
    let peak = samples.iter().map(|s| s.rss).max().unwrap_or(0);
    let spread = |of: fn(&ListTimes) -> Duration| {
        let times = samples.iter().map(|s| millis(of(&s.list)));
        let low = times.clone().fold(f64::INFINITY, f64::min);
        let high = times.fold(0.0, f64::max);
        format!("{low:.1}-{high:.1} ms")
    };
    let cpu_per_invocation =
        after.cpu.saturating_sub(before.cpu).as_secs_f64() * 1e6 / (invocations.max(1) as f64);
    let most_behind = samples
        .iter()
        .filter_map(|s| s.retention_behind(retention_period))
        .fold(0.0, f64::max);
    eprintln!(
        "completed {:.0}/s at {cpu_per_invocation:.1} µs of server CPU per invocation; RSS at \
         ~2 min {:.0} MiB, last {:.0} MiB ({:+.1}%), peak {:.0} MiB; after: timers {} (before \
         {}), active leases {} (before {}), open {}; accepted to Succeeded p50 {:.1} ms, p99 \
         {:.1} ms; a list page of 50 (median of each sample's {LIST_PROBE_PAGES}) oldest first \
         {}, newest first {}; retention purged {} and was at most {most_behind:.1} s behind \
         its cutoff",
        run.throughput,
        two_minutes as f64 / (1u64 << 20) as f64,
        last as f64 / (1u64 << 20) as f64,
        (last as f64 / two_minutes.max(1) as f64 - 1.0) * 100.0,
        peak as f64 / (1u64 << 20) as f64,
        after.gauge(metrics::PENDING_TIMERS),
        before.gauge(metrics::PENDING_TIMERS),
        after.gauge(metrics::ACTIVE_LEASES),
        before.gauge(metrics::ACTIVE_LEASES),
        after.gauge(metrics::OPEN_INVOCATIONS),
        run.latencies.percentile_ms(50.0),
        run.latencies.percentile_ms(99.0),
        spread(|list| list.oldest_first),
        spread(|list| list.newest_first),
        after.gauge(metrics::RETENTION_PURGED),
    );
    Ok(report)
}
