//! `history`: a data directory holding N finished invocations (100-byte payload, 4 or 8
//! events each, 6 on average) and M open ones, written through the store as a server writes
//! them (group commits on the store's own write path, in buffered durability to write it
//! faster). Then `sai serve` is started on it: time from spawn to the first answered RPC,
//! resident memory, bytes on disk per finished invocation, and get and list of finished
//! records picked at random (far more than the cache holds, so nearly all come from disk),
//! with what the kernel read from the disk per get: whether the page cache held them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::model::{Change, FunctionKey, Invocation};
use crate::persist::{Durability, STORE_DIR};
use crate::store::{Storage, Store, Transition, WatchHistoryLimit};

use super::http;
use super::load::{closed_loop, Call, Clients, Run};
use super::machine::MachineCpu;
use super::page_cache;
use super::report::{median_index, Report};
use super::server::{Mode, ScratchDir, ServerProcess};
use super::{micros_per, millis, BenchError};

/// Flags of `sai bench history`.
#[derive(Debug, clap::Args)]
pub struct HistoryArgs {
    /// Finished invocations stored.
    #[arg(long, default_value_t = 1_000_000, value_parser = super::at_least_one())]
    pub finished: usize,
    /// Open (queued) invocations stored beside them.
    #[arg(long, default_value_t = 10_000)]
    pub open: usize,
    /// Functions they are spread over.
    #[arg(long, default_value_t = 10, value_parser = super::at_least_one())]
    pub functions: usize,
    /// Keep the seeded directory here and reuse it when it exists (seeding 100 M takes a
    /// while); a fresh temporary one otherwise.
    #[arg(long)]
    pub dir: Option<std::path::PathBuf>,
    /// Who reads, for throughput (beside the baseline).
    #[command(flatten)]
    pub clients: Clients,
    /// Clients reading when latency is measured: few enough that a call's time is its own,
    /// not the queue of a saturated 2-core machine.
    #[arg(long, default_value_t = 1, value_parser = super::at_least_one())]
    pub latency_clients: usize,
    /// Measured time per read run (after a 1 s warm-up).
    #[arg(long, default_value = "5s", value_parser = super::more_than_zero)]
    pub duration: Duration,
    /// The server's `--block-cache-size` (its default when absent).
    #[arg(long)]
    pub block_cache_size: Option<String>,
    /// The server's runtime worker threads (`sai --threads`); 0: the server's default.
    #[arg(long, default_value_t = 0)]
    pub server_threads: usize,
    /// Then leave the same server idle this long and measure its gets again: what a server
    /// that has been running answers once the page cache has let the directory go (a host
    /// that pages out idle memory, other work's reads) while its own block cache has not.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub idle: Option<Duration>,
}

/// Payload size of seeded invocations: random letters and digits, as incompressible as a
/// real payload of that size tends to be.
const PAYLOAD_BYTES: usize = 100;

/// The payload of seeded invocation `n`: `PAYLOAD_BYTES` letters and digits drawn from `n`.
fn payload(n: usize) -> Arc<str> {
    use rand::{Rng, SeedableRng};
    let mut draw = rand::rngs::SmallRng::seed_from_u64(n as u64);
    (0..PAYLOAD_BYTES)
        .map(|_| char::from(draw.sample(rand::distr::Alphanumeric)))
        .collect::<String>()
        .into()
}

/// Invocations seeded per commit.
const SEED_BATCH: usize = 2_000;

/// Account of seeded invocations.
pub const SEED_ACCOUNT: &str = "bench";
/// Service of seeded invocations.
pub const SEED_SERVICE: &str = "seeded";

/// The name of seeded function `f`.
pub fn seed_function(f: usize) -> String {
    format!("function-{f}")
}

/// The id of seeded invocation `n` of a seeding from `start_ms`: generated as the server
/// generates ids (time-ordered, see [`crate::model::id`]), from its started time and random
/// bits drawn from `n`.
pub fn seed_id(start_ms: i64, n: usize) -> String {
    use rand::{Rng, SeedableRng};
    let random = rand::rngs::SmallRng::seed_from_u64(n as u64).random();
    crate::model::id::time_ordered(seed_started(start_ms, n), random)
}

/// The started time of seeded invocation `n`: one per ms from `start_ms`.
fn seed_started(start_ms: i64, n: usize) -> i64 {
    start_ms.saturating_add(i64::try_from(n).unwrap_or(i64::MAX))
}

/// How seeded ids are made, kept with a seeded directory: one seeded by a build that made
/// them otherwise is not reused.
const SEED_IDS: &str = "time-ordered";

/// Where a seeding keeps its started time from its beginning, so that one interrupted is
/// carried on with the same ids.
const SEEDING_STAMP: &str = "bench-seeding.json";

/// What [`seed`] wrote.
pub struct Seeded {
    /// Events written.
    pub events: usize,
    /// Started time of invocation 0; invocation n started n ms later.
    pub start_ms: i64,
}

/// Where an interrupted seeding of a directory stopped.
struct ResumePoint {
    /// The first batch not completely written.
    next: usize,
    /// That batch's invocations were inserted (a batch is inserted in one commit and taken
    /// to its end in the next), so only their transitions remain.
    inserted: bool,
}

/// Find where a seeding of `store` stopped, by batch: a batch is done when its last
/// invocation exists and, if it is one of the finished ones, has ended. Done batches form a
/// prefix, so a binary search finds the first that is not.
fn resume_point(
    store: &Store,
    functions: &[FunctionKey],
    start_ms: i64,
    finished: usize,
    total: usize,
) -> Result<ResumePoint, BenchError> {
    let read = |n: usize| {
        store
            .summary(&functions[n % functions.len()].invocation(&seed_id(start_ms, n)))
            .map_err(|e| BenchError::Io(e.to_string()))
    };
    let batch_done = |batch: usize| -> Result<bool, BenchError> {
        let last = ((batch + 1) * SEED_BATCH).min(total) - 1;
        Ok(match read(last)? {
            None => false,
            Some(invocation) => last >= finished || invocation.status.is_terminal(),
        })
    };
    let (mut done, mut undone) = (0, total.div_ceil(SEED_BATCH));
    while done < undone {
        let middle = (done + undone) / 2;
        if batch_done(middle)? {
            done = middle + 1;
        } else {
            undone = middle;
        }
    }
    let next = done * SEED_BATCH;
    let inserted = next < total && read(next)?.is_some();
    Ok(ResumePoint { next, inserted })
}

/// Events a seeding of `finished` and `open` invocations writes (see [`lifecycle`]).
fn seeded_events(finished: usize, open: usize) -> usize {
    let odd = finished / 2;
    4 * (finished - odd) + 8 * odd + open
}

/// Write `finished` finished and then `open` queued invocations, invocation n in function
/// n % `functions`, into the data directory at `dir` through a store. They start in the past,
/// one per ms, so that neither retention nor the max event age acts on them for a while.
/// A directory whose seeding was interrupted is carried on from where it stopped.
pub async fn seed(
    dir: &std::path::Path,
    finished: usize,
    open: usize,
    functions: usize,
) -> Result<Seeded, BenchError> {
    let storage = Storage::disk(dir, Durability::Buffered);
    let (store, _) = Store::open(
        &storage,
        WatchHistoryLimit::changes(1_024),
        0,
        CancellationToken::new(),
    )
    .map_err(|e| BenchError::Io(e.to_string()))?;
    let functions: Vec<FunctionKey> = (0..functions.max(1))
        .map(|f| FunctionKey::new(SEED_ACCOUNT, SEED_SERVICE, &seed_function(f)))
        .collect();
    let total = finished + open;
    let stamp = dir.join(SEEDING_STAMP);
    let (start_ms, mut n, mut inserted) = match std::fs::read_to_string(&stamp) {
        Ok(text) => {
            let start_ms = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|kept| kept["start_ms"].as_i64())
                .ok_or_else(|| BenchError::Io(format!("{} holds no start_ms", stamp.display())))?;
            let resume = resume_point(&store, &functions, start_ms, finished, total)?;
            eprintln!(
                "carrying on an interrupted seeding from invocation {}",
                resume.next
            );
            (start_ms, resume.next, resume.inserted)
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            let now = crate::clock::Clock::system().now_ms();
            let start_ms = now - i64::try_from(total).unwrap_or(0) - 60_000;
            std::fs::write(&stamp, json!({ "start_ms": start_ms }).to_string())
                .map_err(|e| BenchError::Io(e.to_string()))?;
            (start_ms, 0, false)
        }
        Err(err) => return Err(BenchError::Io(format!("{}: {err}", stamp.display()))),
    };
    let started = Instant::now();
    while n < total {
        let batch = n..(n + SEED_BATCH).min(total);
        if !std::mem::take(&mut inserted) {
            insert_batch(&store, &functions, batch.clone(), start_ms).await?;
        }
        let transitions: Vec<Transition> = batch
            .clone()
            .filter(|n| *n < finished)
            .flat_map(|n| lifecycle(&functions[n % functions.len()], n, start_ms))
            .collect();
        if !transitions.is_empty() {
            for outcome in store
                .apply_all(transitions)
                .await
                .map_err(|e| BenchError::Io(e.to_string()))?
            {
                outcome.map_err(|e| BenchError::Io(e.to_string()))?;
            }
        }
        n = batch.end;
        if n % 1_000_000 < SEED_BATCH {
            eprintln!(
                "seeded {n} of {total} invocations in {:.0} s",
                started.elapsed().as_secs_f64()
            );
        }
    }
    store
        .close()
        .await
        .map_err(|e| BenchError::Io(e.to_string()))?;
    Ok(Seeded {
        events: seeded_events(finished, open),
        start_ms,
    })
}

/// Insert seeded invocations `batch` in one commit, queued.
async fn insert_batch(
    store: &Store,
    functions: &[FunctionKey],
    batch: std::ops::Range<usize>,
    start_ms: i64,
) -> Result<(), BenchError> {
    let accepted: Vec<Invocation> = batch
        .clone()
        .map(|n| {
            Invocation::accept(
                functions[n % functions.len()].invocation(&seed_id(start_ms, n)),
                "LATEST",
                payload(n),
                &format!("req-{n:09}"),
                seed_started(start_ms, n),
            )
        })
        .collect();
    for outcome in store
        .insert_all(accepted, |_| {})
        .await
        .map_err(|e| BenchError::Io(e.to_string()))?
    {
        outcome.map_err(|e| BenchError::Io(e.to_string()))?;
    }
    Ok(())
}

/// What takes seeded invocation `n` from Enqueued to Succeeded: at once for even numbers
/// (4 events in all), after a failed attempt and a retry for odd ones (8 events).
fn lifecycle(function: &FunctionKey, n: usize, start_ms: i64) -> Vec<Transition> {
    let key = function.invocation(&seed_id(start_ms, n));
    let started = seed_started(start_ms, n);
    let at = |offset: i64, change: Change| Transition::new(key.clone(), change, started + offset);
    let attempt = |number: u32, offset: i64| {
        [
            at(
                offset,
                Change::Dispatch {
                    worker_id: "bench-worker".into(),
                    attempt: number,
                },
            ),
            at(offset + 1, Change::Start),
        ]
    };
    let mut changes = attempt(1, 1).to_vec();
    if n % 2 == 1 {
        changes.push(at(
            3,
            Change::Fail {
                error: "transient".into(),
                retry_at_ms: Some(started + 10),
                duration_ms: 2,
            },
        ));
        changes.push(at(10, Change::Requeue));
        changes.extend(attempt(2, 11));
    }
    changes.push(at(
        20,
        Change::Succeed {
            return_payload: "ok".into(),
            duration_ms: 5,
        },
    ));
    changes
}

/// Seed (or reuse) the directory, then start `sai serve` on it and measure.
pub async fn run(args: &HistoryArgs, runs: usize) -> Result<Report, BenchError> {
    let scratch;
    let dir = match &args.dir {
        Some(dir) => dir.clone(),
        None => {
            scratch = ScratchDir::new("history")?;
            scratch.path().to_path_buf()
        }
    };
    let stamp = dir.join("bench-seeded.json");
    let seeded = match std::fs::read_to_string(&stamp) {
        Ok(text) => {
            let kept: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| BenchError::Io(e.to_string()))?;
            if kept["finished"] != json!(args.finished)
                || kept["open"] != json!(args.open)
                || kept["functions"] != json!(args.functions)
                || kept["ids"] != json!(SEED_IDS)
            {
                return Err(BenchError::Io(format!(
                    "{} was seeded with {kept}; give another --dir",
                    dir.display()
                )));
            }
            Seeded {
                events: kept["events"].as_u64().unwrap_or(0) as usize,
                start_ms: kept["start_ms"].as_i64().unwrap_or(0),
            }
        }
        Err(_) => {
            std::fs::create_dir_all(&dir).map_err(|e| BenchError::Io(e.to_string()))?;
            let seeding = Instant::now();
            let seeded = seed(&dir, args.finished, args.open, args.functions).await?;
            eprintln!(
                "seeded {} finished and {} open invocations ({} events) in {:.0} s",
                args.finished,
                args.open,
                seeded.events,
                seeding.elapsed().as_secs_f64()
            );
            let kept = json!({ "finished": args.finished, "open": args.open, "functions": args.functions,
                               "events": seeded.events, "start_ms": seeded.start_ms, "ids": SEED_IDS });
            std::fs::write(&stamp, kept.to_string()).map_err(|e| BenchError::Io(e.to_string()))?;
            seeded
        }
    };
    let disk_bytes = directory_bytes(&dir.join(STORE_DIR));
    let pageout = page_cache::proactive_pageout();
    if let Some(pageout) = &pageout {
        eprintln!(
            "note: {pageout}; a directory larger than the gets touch in that time is read from \
             the disk, not the page cache (see the disk KiB per get)"
        );
    }

    let mut report = Report::new(
        "history",
        json!({ "finished": args.finished, "open": args.open, "functions": args.functions,
                "events": seeded.events, "payload_bytes": PAYLOAD_BYTES, "disk_bytes": disk_bytes,
                "clients": args.clients.clients, "duration_s": args.duration.as_secs_f64(), "runs": runs,
                "proactive_pageout": pageout, "block_cache_size": args.block_cache_size,
                "server_threads": args.server_threads,
                "idle_s": args.idle.map(|idle| idle.as_secs_f64()) }),
        vec![
            "finished",
            "open",
            "time to serving s",
            "RSS MiB",
            "disk B/finished",
            "get/s",
            "baseline get/s",
            "% of baseline",
            "disk KiB/get",
            "get p99 ms",
            "list/s",
            "list p99 ms",
            "runs (s to serving)",
            "% of baseline after idle",
            "disk KiB/get after idle",
        ],
    );
    let get = Call::Get {
        stored: args.finished,
        functions: args.functions,
        start_ms: seeded.start_ms,
    };
    let list = Call::List {
        stored: args.finished,
        functions: args.functions,
        limit: 50,
        start_ms: seeded.start_ms,
    };
    let few = Clients {
        clients: args.latency_clients,
        connections: 1,
    };
    // The baseline answers from memory whatever it holds; a million is plenty to pick from.
    let baseline_records = args.finished.min(1_000_000);
    let baseline_get = Call::Get {
        stored: baseline_records,
        functions: 1,
        start_ms: seeded.start_ms,
    };
    let mut times = Vec::new();
    let mut rss = Vec::new();
    let mut measured = Vec::new();
    for _ in 0..runs.max(1) {
        let threads = args.server_threads.to_string();
        let mut flags = vec!["--http", "127.0.0.1:0"];
        if args.server_threads > 0 {
            flags.extend(["--threads", threads.as_str()]);
        }
        if let Some(size) = &args.block_cache_size {
            flags.extend(["--block-cache-size", size.as_str()]);
        }
        let server = ServerProcess::start_with(Mode::Sync, &dir, &flags).await?;
        times.push(millis(server.time_to_serving) / 1_000.0);
        tokio::time::sleep(Duration::from_millis(500)).await;
        rss.push(server.memory().0);
        // Reads are measured on a settled store, not beside the compactions a fresh seeding
        // leaves behind.
        server.wait_until_quiet().await;
        let (gets, get_cpu_us) = server_gets(&server, args.clients, args.duration, &get).await?;
        let lists = closed_loop(&server.url, args.clients, args.duration, list.clone()).await?;
        let mut get_latency = measured_loop(&server.url, few, args.duration, get.clone()).await?;
        let mut list_latency = measured_loop(&server.url, few, args.duration, list.clone()).await?;
        for (what, measured) in [("get", &mut get_latency), ("list", &mut list_latency)] {
            let run = &mut measured.run;
            eprintln!(
                "{what} at {} clients: {:.0}/s, p50 {} ms, p90 {} ms, p99 {} ms, p99.9 {} ms; \
                 steal {:.1}%, {:.2} KiB read from the disk per {what}",
                few.clients,
                run.throughput,
                run.latencies.percentile_ms(50.0),
                run.latencies.percentile_ms(90.0),
                run.latencies.percentile_ms(99.0),
                run.latencies.percentile_ms(99.9),
                measured.steal,
                measured.disk_kib_per_call
            );
        }
        let after_idle = match args.idle {
            Some(idle) => {
                eprintln!(
                    "the server sits idle for {}",
                    humantime::format_duration(idle)
                );
                tokio::time::sleep(idle).await;
                Some(server_gets(&server, args.clients, args.duration, &get).await?)
            }
            None => None,
        };
        drop(server);
        let baseline = ServerProcess::start_baseline(baseline_records, seeded.start_ms).await?;
        let cpu_before = baseline.cpu_time();
        let baseline_gets = measured_loop(
            &baseline.url,
            args.clients,
            args.duration,
            baseline_get.clone(),
        )
        .await?;
        let baseline_cpu_us = micros_per(
            baseline.cpu_time().saturating_sub(cpu_before),
            baseline_gets.run.calls,
        );
        // Each run's own ratio: the row below is the run of median time to serving.
        eprintln!(
            "get at {} clients: {:.0}/s against the baseline's {:.0}/s ({:.0}%); steal {:.1}% \
             and {:.1}%; {:.2} KiB read from the disk per get",
            args.clients.clients,
            gets.run.throughput,
            baseline_gets.run.throughput,
            percent_of(gets.run.throughput, baseline_gets.run.throughput),
            gets.steal,
            baseline_gets.steal,
            gets.disk_kib_per_call
        );
        let mut baseline_latency =
            measured_loop(&baseline.url, few, args.duration, baseline_get.clone()).await?;
        eprintln!(
            "server CPU per get: {get_cpu_us:.1} µs; the baseline's {baseline_cpu_us:.1} µs; \
             the baseline at {} clients: p50 {} ms, p99 {} ms; steal {:.1}%",
            few.clients,
            baseline_latency.run.latencies.percentile_ms(50.0),
            baseline_latency.run.latencies.percentile_ms(99.0),
            baseline_latency.steal
        );
        if let (Some(idle), Some((gets, cpu_us))) = (args.idle, &after_idle) {
            eprintln!(
                "get at {} clients after {} idle: {:.0}/s ({:.0}% of the baseline); steal {:.1}%; \
                 {:.2} KiB read from the disk per get; server CPU per get {cpu_us:.1} µs",
                args.clients.clients,
                humantime::format_duration(idle),
                gets.run.throughput,
                percent_of(gets.run.throughput, baseline_gets.run.throughput),
                gets.steal,
                gets.disk_kib_per_call
            );
        }
        measured.push(ReadRuns {
            after_idle: after_idle.map(|(gets, _)| gets),
            gets,
            lists,
            get_latency: get_latency.run,
            list_latency: list_latency.run,
            baseline_gets: baseline_gets.run,
        });
    }
    let median = median_index(&times);
    let ReadRuns {
        gets,
        lists,
        get_latency,
        list_latency,
        baseline_gets,
        after_idle,
    } = &mut measured[median];
    report.row(vec![
        json!(args.finished),
        json!(args.open),
        json!((times[median] * 100.0).round() / 100.0),
        json!((rss[median] as f64 / (1u64 << 20) as f64).round()),
        json!(disk_bytes / args.finished.max(1) as u64),
        json!(gets.run.throughput.round() as u64),
        json!(baseline_gets.throughput.round() as u64),
        json!(percent_of(gets.run.throughput, baseline_gets.throughput).round()),
        json!((gets.disk_kib_per_call * 100.0).round() / 100.0),
        json!(get_latency.latencies.percentile_ms(99.0)),
        json!(lists.throughput.round() as u64),
        json!(list_latency.latencies.percentile_ms(99.0)),
        json!(times
            .iter()
            .map(|t| format!("{t:.2}"))
            .collect::<Vec<_>>()
            .join(" ")),
        json!(after_idle.as_ref().map(|gets| percent_of(
            gets.run.throughput,
            baseline_gets.throughput
        )
        .round())),
        json!(after_idle
            .as_ref()
            .map(|gets| (gets.disk_kib_per_call * 100.0).round() / 100.0)),
    ]);
    Ok(report)
}

/// `rate` as a percentage of the baseline's.
fn percent_of(rate: f64, baseline: f64) -> f64 {
    rate / baseline.max(1.0) * 100.0
}

/// What one server start measured of reads.
struct ReadRuns {
    /// Gets at the throughput clients, with the disk reads beside them.
    gets: Measured,
    /// Lists at the throughput clients.
    lists: Run,
    /// Gets at the latency clients.
    get_latency: Run,
    /// Lists at the latency clients.
    list_latency: Run,
    /// The baseline's gets at the throughput clients.
    baseline_gets: Run,
    /// Gets at the throughput clients on the same server after `--idle`.
    after_idle: Option<Measured>,
}

/// Gets at the throughput clients on `server`, with the server's CPU per get (µs); prints the
/// blocks they loaded.
async fn server_gets(
    server: &ServerProcess,
    clients: Clients,
    duration: Duration,
    get: &Call,
) -> Result<(Measured, f64), BenchError> {
    let cpu_before = server.cpu_time();
    let loads_before = ScrapedBlockLoads::read(server).await?;
    let gets = measured_loop(&server.url, clients, duration, get.clone()).await?;
    let cpu_us = micros_per(server.cpu_time().saturating_sub(cpu_before), gets.run.calls);
    let loads = ScrapedBlockLoads::read(server).await?.since(&loads_before);
    eprintln!("blocks per get: {}", loads.per_call(gets.run.calls));
    Ok((gets, cpu_us))
}

/// A closed-loop run, with what the machine did while it ran.
struct Measured {
    run: Run,
    /// Percent of the machine's time the hypervisor ran something else while a core was ready.
    steal: f64,
    /// KiB the kernel read from the disk per call: how far the page cache fell short.
    disk_kib_per_call: f64,
}

/// `closed_loop`, measuring the machine's steal and disk reads over it: a tail latency read
/// beside them says whether it was the server, the disk or the hypervisor.
async fn measured_loop(
    url: &str,
    clients: Clients,
    duration: Duration,
    call: Call,
) -> Result<Measured, BenchError> {
    let machine_before = MachineCpu::now();
    let paged_in_before = page_cache::paged_in_kib();
    let run = closed_loop(url, clients, duration, call).await?;
    let steal = MachineCpu::now().since(machine_before).steal_percent();
    let disk_kib_per_call =
        page_cache::paged_in_kib().saturating_sub(paged_in_before) as f64 / run.calls.max(1) as f64;
    Ok(Measured {
        run,
        steal,
        disk_kib_per_call,
    })
}

/// The server's `sai_block_loads_total` as one scrape of `/metrics` read it, by its labels.
struct ScrapedBlockLoads(std::collections::HashMap<String, f64>);

impl ScrapedBlockLoads {
    async fn read(server: &ServerProcess) -> Result<ScrapedBlockLoads, BenchError> {
        let http = server
            .http_url
            .as_deref()
            .ok_or_else(|| BenchError::Server("the server has no HTTP listener".into()))?;
        let (_, text) = http::get(&format!("{http}/metrics")).await?;
        Ok(ScrapedBlockLoads(http::labelled_samples(
            &text,
            crate::metrics::BLOCK_LOADS,
        )))
    }

    fn since(&self, before: &ScrapedBlockLoads) -> ScrapedBlockLoads {
        let loads = self.0.iter().map(|(labels, now)| {
            let then = before.0.get(labels).copied().unwrap_or(0.0);
            (labels.clone(), now - then)
        });
        ScrapedBlockLoads(loads.collect())
    }

    /// Each kind of block loaded per call, and the share of them the block cache held.
    fn per_call(&self, calls: u64) -> String {
        let calls = calls.max(1) as f64;
        let from = |block: &str, source: &str| {
            let labels = format!("block=\"{block}\",from=\"{source}\"");
            self.0.get(&labels).copied().unwrap_or(0.0)
        };
        ["data", "index", "filter"]
            .iter()
            .map(|block| {
                let (cache, file) = (from(block, "cache"), from(block, "file"));
                let cached = cache / (cache + file).max(1.0) * 100.0;
                format!(
                    "{block} {:.2} ({cached:.0}% from the block cache)",
                    (cache + file) / calls
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Bytes of every file under `dir`.
pub fn directory_bytes(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(at) = pending.pop() {
        for entry in std::fs::read_dir(&at).into_iter().flatten().flatten() {
            match entry.metadata() {
                Ok(meta) if meta.is_dir() => pending.push(entry.path()),
                Ok(meta) => total += meta.len(),
                Err(_) => {}
            }
        }
    }
    total
}
