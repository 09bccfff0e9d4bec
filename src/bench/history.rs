//! `history`: a data directory holding N finished invocations (100-byte payload, 4 or 8
//! events each, 6 on average) and M open ones, written through the store as a server writes
//! them (group commits on the store's own write path, in buffered durability to write it
//! faster). Then `sai serve` is started on it: time from spawn to the first answered RPC,
//! resident memory, bytes on disk per finished invocation, and get and list of finished
//! records picked at random (far more than the cache holds, so nearly all come from disk).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::model::{Change, FunctionKey, Invocation};
use crate::persist::Durability;
use crate::store::{Storage, Store, Transition};

use super::load::{closed_loop, Call, Clients};
use super::report::{median_index, Report};
use super::server::{Mode, ScratchDir, ServerProcess};
use super::{millis, BenchError};

/// Flags of `sai bench history`.
#[derive(Debug, clap::Args)]
pub struct HistoryArgs {
    /// Finished invocations stored.
    #[arg(long, default_value_t = 1_000_000)]
    pub finished: usize,
    /// Open (queued) invocations stored beside them.
    #[arg(long, default_value_t = 10_000)]
    pub open: usize,
    /// Functions they are spread over.
    #[arg(long, default_value_t = 10)]
    pub functions: usize,
    /// Keep the seeded directory here and reuse it when it exists (seeding 100 M takes a
    /// while); a fresh temporary one otherwise.
    #[arg(long)]
    pub dir: Option<std::path::PathBuf>,
    /// Who reads.
    #[command(flatten)]
    pub clients: Clients,
    /// Measured time per read run (after a 1 s warm-up).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
}

/// Payload size of seeded invocations.
const PAYLOAD_BYTES: usize = 100;

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

/// The id of seeded invocation `n`.
pub fn seed_id(n: usize) -> String {
    format!("inv-{n:09}")
}

/// What [`seed`] wrote.
pub struct Seeded {
    /// Events written.
    pub events: usize,
    /// Started time of invocation 0; invocation n started n ms later.
    pub start_ms: i64,
}

/// Write `finished` finished and then `open` queued invocations, invocation n in function
/// n % `functions`, into the data directory at `dir` through a store. They start in the past,
/// one per ms, so that neither retention nor the max event age acts on them for a while.
pub async fn seed(
    dir: &std::path::Path,
    finished: usize,
    open: usize,
    functions: usize,
) -> Result<Seeded, BenchError> {
    let storage = Storage::disk(dir, Durability::Buffered);
    let (store, _) = Store::open(&storage, 1_024, 0, CancellationToken::new())
        .map_err(|e| BenchError::Io(e.to_string()))?;
    let functions: Vec<FunctionKey> = (0..functions.max(1))
        .map(|f| FunctionKey::new(SEED_ACCOUNT, SEED_SERVICE, &seed_function(f)))
        .collect();
    let now = crate::clock::Clock::system().now_ms();
    let total = finished + open;
    let start_ms = now - i64::try_from(total).unwrap_or(0) - 60_000;
    let payload: Arc<str> = "p".repeat(PAYLOAD_BYTES).into();
    let mut events = 0;
    let started = Instant::now();
    let mut n = 0;
    while n < total {
        let batch = n..(n + SEED_BATCH).min(total);
        let accepted: Vec<Invocation> = batch
            .clone()
            .map(|n| {
                let started = start_ms + i64::try_from(n).unwrap_or(0);
                Invocation::accept(
                    functions[n % functions.len()].invocation(&seed_id(n)),
                    "LATEST",
                    payload.clone(),
                    &format!("req-{n:09}"),
                    started,
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
        let transitions: Vec<Transition> = batch
            .clone()
            .filter(|n| *n < finished)
            .flat_map(|n| lifecycle(&functions[n % functions.len()], n, start_ms))
            .collect();
        events += batch
            .clone()
            .filter(|n| *n < finished)
            .map(|n| if n % 2 == 1 { 8 } else { 4 })
            .sum::<usize>();
        events += batch.clone().filter(|n| *n >= finished).count();
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
    Ok(Seeded { events, start_ms })
}

/// What takes seeded invocation `n` from Enqueued to Succeeded: at once for even numbers
/// (4 events in all), after a failed attempt and a retry for odd ones (8 events).
fn lifecycle(function: &FunctionKey, n: usize, start_ms: i64) -> Vec<Transition> {
    let key = function.invocation(&seed_id(n));
    let started = start_ms + i64::try_from(n).unwrap_or(0);
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
                               "events": seeded.events, "start_ms": seeded.start_ms });
            std::fs::write(&stamp, kept.to_string()).map_err(|e| BenchError::Io(e.to_string()))?;
            seeded
        }
    };
    let disk_bytes = directory_bytes(&dir.join("db"));

    let mut report = Report::new(
        "history",
        json!({ "finished": args.finished, "open": args.open, "functions": args.functions,
                "events": seeded.events, "payload_bytes": PAYLOAD_BYTES, "disk_bytes": disk_bytes,
                "clients": args.clients.clients, "duration_s": args.duration.as_secs_f64(), "runs": runs }),
        vec![
            "finished",
            "open",
            "time to serving s",
            "RSS MiB",
            "disk B/finished",
            "get/s",
            "get p99 ms",
            "list/s",
            "list p99 ms",
            "runs (s to serving)",
        ],
    );
    let mut times = Vec::new();
    let mut rss = Vec::new();
    let mut gets = Vec::new();
    let mut lists = Vec::new();
    for _ in 0..runs.max(1) {
        let server = ServerProcess::start(Mode::Sync, &dir).await?;
        times.push(millis(server.time_to_serving) / 1_000.0);
        tokio::time::sleep(Duration::from_millis(500)).await;
        rss.push(server.memory().0);
        let get = Call::Get {
            stored: args.finished,
            functions: args.functions,
        };
        gets.push(closed_loop(&server.url, args.clients, args.duration, get).await?);
        let list = Call::List {
            stored: args.finished,
            functions: args.functions,
            limit: 50,
            start_ms: seeded.start_ms,
        };
        lists.push(closed_loop(&server.url, args.clients, args.duration, list).await?);
    }
    let median = median_index(&times);
    let get = &mut gets[median];
    let list = &mut lists[median];
    report.row(vec![
        json!(args.finished),
        json!(args.open),
        json!((times[median] * 100.0).round() / 100.0),
        json!((rss[median] as f64 / (1u64 << 20) as f64).round()),
        json!(disk_bytes / args.finished.max(1) as u64),
        json!(get.throughput.round() as u64),
        json!(get.latencies.percentile_ms(99.0)),
        json!(list.throughput.round() as u64),
        json!(list.latencies.percentile_ms(99.0)),
        json!(times
            .iter()
            .map(|t| format!("{t:.2}"))
            .collect::<Vec<_>>()
            .join(" ")),
    ]);
    Ok(report)
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
