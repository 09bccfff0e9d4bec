//! `restart`: a data directory holding N finished invocations (100-byte payload, 4 or 8
//! events each, 6 on average) is written once; then `sai serve` is started on it `runs`
//! times, measuring the time from spawn to the first answered RPC and the resident memory
//! once serving.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::model::{Change, FunctionKey, Invocation};
use crate::pb::stateful_async_invocation_service_client::StatefulAsyncInvocationServiceClient;
use crate::pb::GetStatefulAsyncInvocationRequest;
use crate::persist::{Durability, Persist, WriteSet};

use super::report::{median_index, Report};
use super::server::{Mode, ScratchDir, ServerProcess};
use super::{millis, BenchError};

/// Flags of `sai bench restart`.
#[derive(Debug, clap::Args)]
pub struct RestartArgs {
    /// Invocations stored before the restart.
    #[arg(long, default_value_t = 1_000_000)]
    pub invocations: usize,
    /// Functions they are spread over.
    #[arg(long, default_value_t = 10)]
    pub functions: usize,
}

/// Payload size of seeded invocations.
const PAYLOAD_BYTES: usize = 100;

/// How many invocations one seeding write carries.
const SEED_BATCH: usize = 2_000;

/// Seed once, restart `runs` times; report the median.
pub async fn run(args: &RestartArgs, runs: usize) -> Result<Report, BenchError> {
    let dir = ScratchDir::new("restart")?;
    let seeding = Instant::now();
    let Seeded {
        events, disk_bytes, ..
    } = seed(dir.path(), args.invocations, args.functions).await?;
    let seed_time = seeding.elapsed();
    eprintln!(
        "seeded {} invocations ({} events, {:.0} MiB on disk) in {:.1} s",
        args.invocations,
        events,
        disk_bytes as f64 / (1 << 20) as f64,
        seed_time.as_secs_f64()
    );
    // What a server holding nothing takes, to count only what the invocations add.
    let empty_dir = ScratchDir::new("empty")?;
    let empty = ServerProcess::start(Mode::Sync, empty_dir.path()).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (empty_rss, _) = empty.memory();
    drop(empty);
    let mut times = Vec::new();
    let mut memory = Vec::new();
    for _ in 0..runs.max(1) {
        let server = ServerProcess::start(Mode::Sync, dir.path()).await?;
        for n in [0, args.invocations.saturating_sub(1)] {
            assert_stored(&server.url, n, args.functions).await?;
        }
        // Let the first moments of serving settle before reading memory.
        tokio::time::sleep(Duration::from_millis(500)).await;
        times.push(millis(server.time_to_serving) / 1_000.0);
        memory.push(server.memory());
        drop(server);
    }
    let median = median_index(&times);
    let mib = |bytes: u64| (bytes as f64 / (1u64 << 20) as f64).round();
    let per_invocation = memory[median].0.saturating_sub(empty_rss) as f64
        / args.invocations.max(1) as f64
        - PAYLOAD_BYTES as f64;
    let mut report = Report::new(
        "restart",
        json!({ "invocations": args.invocations, "events": events, "payload_bytes": PAYLOAD_BYTES,
                "empty_server_rss_bytes": empty_rss,
                "functions": args.functions, "disk_bytes": disk_bytes, "runs": runs }),
        vec![
            "invocations",
            "time to serving s",
            "RSS MiB",
            "peak RSS MiB",
            "bytes/invocation beyond payload",
            "runs (s)",
        ],
    );
    report.row(vec![
        json!(args.invocations),
        json!((times[median] * 100.0).round() / 100.0),
        json!(mib(memory[median].0)),
        json!(mib(memory[median].1)),
        json!(per_invocation.round() as u64),
        json!(times
            .iter()
            .map(|t| format!("{t:.2}"))
            .collect::<Vec<_>>()
            .join(" ")),
    ]);
    Ok(report)
}

/// Fail unless seeded invocation `n` is served.
async fn assert_stored(url: &str, n: usize, functions: usize) -> Result<(), BenchError> {
    let mut client = StatefulAsyncInvocationServiceClient::connect(url.to_string())
        .await
        .map_err(|e| BenchError::Server(e.to_string()))?;
    let mut request = tonic::Request::new(GetStatefulAsyncInvocationRequest {
        service_name: SEED_SERVICE.into(),
        function_name: seed_function(n % functions.max(1)),
        qualifier: String::new(),
        invocation_id: seed_id(n),
    });
    request.metadata_mut().insert(
        "x-fc-account-id",
        tonic::metadata::MetadataValue::from_static(SEED_ACCOUNT),
    );
    client
        .get_stateful_async_invocation(request)
        .await
        .map_err(|e| BenchError::Server(format!("seeded invocation {n} is not served: {e}")))?;
    Ok(())
}

/// One finished invocation: even numbers succeed at once (4 events), odd ones after a
/// retry (8 events).
fn finished(function: &FunctionKey, n: usize, start_ms: i64, payload: &Arc<str>) -> Invocation {
    let started = start_ms + i64::try_from(n).unwrap_or(0);
    let mut invocation = Invocation::accept(
        function.invocation(&seed_id(n)),
        "LATEST",
        payload.clone(),
        &format!("req-{n:08}"),
        started,
    );
    let attempt = |invocation: &mut Invocation, number: u32, at: i64| {
        let dispatch = Change::Dispatch {
            worker_id: "bench-worker".into(),
            attempt: number,
        };
        let _ = invocation.apply(&dispatch, at);
        let _ = invocation.apply(&Change::Start, at + 1);
    };
    attempt(&mut invocation, 1, started + 1);
    if n % 2 == 1 {
        let fail = Change::Fail {
            error: "transient".into(),
            retry_at_ms: Some(started + 10),
            duration_ms: 2,
        };
        let _ = invocation.apply(&fail, started + 3);
        let _ = invocation.apply(&Change::Requeue, started + 10);
        attempt(&mut invocation, 2, started + 11);
    }
    let succeed = Change::Succeed {
        return_payload: "ok".into(),
        duration_ms: 2,
    };
    let _ = invocation.apply(&succeed, started + 20);
    invocation
}

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
    format!("inv-{n:08}")
}

/// What [`seed`] wrote.
pub struct Seeded {
    /// Events written.
    pub events: usize,
    /// Bytes on disk.
    pub disk_bytes: u64,
    /// Started time of invocation 0; invocation n started n ms later.
    pub start_ms: i64,
}

/// Write `invocations` finished invocations over `functions` functions into a new data
/// directory at `dir`. They start an hour ago, one per ms, so that retention leaves them be.
pub async fn seed(
    dir: &std::path::Path,
    invocations: usize,
    functions: usize,
) -> Result<Seeded, BenchError> {
    let start_ms = crate::clock::Clock::system().now_ms() - 3_600_000;
    let persist =
        Persist::open(dir, Durability::Buffered).map_err(|e| BenchError::Io(e.to_string()))?;
    let journal = persist.into_journal();
    let functions: Vec<FunctionKey> = (0..functions.max(1))
        .map(|f| FunctionKey::new(SEED_ACCOUNT, SEED_SERVICE, &seed_function(f)))
        .collect();
    let payload: Arc<str> = "p".repeat(PAYLOAD_BYTES).into();
    let mut events = 0;
    let mut pending = Vec::new();
    let mut batch = WriteSet::default();
    for function in &functions {
        batch.put_function(function, "LATEST");
    }
    for n in 0..invocations {
        let function = &functions[n % functions.len()];
        let invocation = finished(function, n, start_ms, &payload);
        events += invocation.events.len();
        batch.put_accepted(&invocation);
        if (n + 1) % SEED_BATCH == 0 || n + 1 == invocations {
            batch.put_sequence(u64::try_from(events).unwrap_or(u64::MAX));
            let ticket = journal
                .submit(std::mem::take(&mut batch), Box::new(|| {}))
                .map_err(|e| BenchError::Io(e.to_string()))?;
            pending.push(ticket);
            // Keep a bounded number of writes in flight.
            if pending.len() >= 8 {
                for ticket in pending.drain(..) {
                    ticket
                        .await
                        .map_err(|e| BenchError::Io(e.to_string()))?
                        .map_err(BenchError::Io)?;
                }
            }
        }
    }
    for ticket in pending {
        ticket
            .await
            .map_err(|e| BenchError::Io(e.to_string()))?
            .map_err(BenchError::Io)?;
    }
    tokio::task::spawn_blocking(move || journal.close())
        .await
        .map_err(|e| BenchError::Io(e.to_string()))?
        .map_err(|e| BenchError::Io(e.to_string()))?;
    Ok(Seeded {
        events,
        disk_bytes: directory_bytes(dir),
        start_ms,
    })
}

fn directory_bytes(dir: &std::path::Path) -> u64 {
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
