//! The metrics sai exports in Prometheus' text format, through the `metrics` facade (atomic
//! counters on the hot path, no lock) and `metrics-exporter-prometheus` (the facade's own
//! exporter, rendered at `GET /metrics`). Every name is defined once, in [`names`].
//!
//! Gauges of what the server holds (open invocations, timers, leases, cache, queues) are
//! read from the server's state at scrape time rather than kept up to date on every change.
//! Counters and histograms are recorded where the event happens.
//!
//! Label cardinality is bounded: `method` is one of the served RPCs (anything else is
//! `unknown`), `code` one of gRPC's 17 codes, `status` one of the 10 invocation statuses,
//! `block` and `from` one of three kinds of block and two places it came from, and
//! the per-function queue gauges cover the [`QUEUE_FUNCTIONS`] functions with the most queued
//! work (a function that leaves that set leaves the output at the next scrape).

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use metrics_util::MetricKindMask;

use crate::engine::Engine;

pub mod names;

pub use names::*;

/// Most functions the per-function queue gauges name, those with the most queued work.
pub const QUEUE_FUNCTIONS: usize = 50;

/// Histogram buckets for durations, in seconds: from a tenth of a millisecond to ten seconds.
const SECONDS_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Histogram buckets for commit group sizes.
const GROUP_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1024.0, 4096.0,
];

/// How often recorded histogram samples are folded into their buckets. The exporter keeps
/// every sample until then, so without it a server nobody scrapes would grow without bound.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// The process's recorder: installed by the first server that asks, shared by every later one
/// (the facade has one recorder per process). `None` if another recorder was installed first.
pub fn recorder() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    static UPKEEP: std::sync::Once = std::sync::Once::new();
    let handle = HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
                .and_then(|builder| {
                    builder.set_buckets_for_metric(
                        Matcher::Full(COMMIT_GROUP_SIZE.into()),
                        GROUP_BUCKETS,
                    )
                })
                // Gauges are all set at each scrape: one not set by the last scrape (a
                // function no longer among the busiest) is dropped rather than kept stale.
                .map(|builder| {
                    builder.idle_timeout(MetricKindMask::GAUGE, Some(Duration::from_secs(1)))
                })
                .and_then(PrometheusBuilder::install_recorder)
                .inspect(|_| names::start_recording())
                .inspect_err(|err| tracing::warn!(%err, "metrics are not recorded"))
                .ok()
        })
        .as_ref();
    if let Some(handle) = handle {
        // A thread of its own, not a task: the recorder outlives any one runtime.
        UPKEEP.call_once(|| {
            let spawned = std::thread::Builder::new()
                .name("sai-metrics-upkeep".into())
                .spawn(move || loop {
                    std::thread::sleep(UPKEEP_EVERY);
                    handle.run_upkeep();
                });
            if let Err(err) = spawned {
                tracing::error!(%err, "cannot start the metrics upkeep; histograms grow until scraped");
            }
        });
    }
    handle
}

/// What the process's allocator holds, as [`HEAP_ALLOCATED_BYTES`], [`HEAP_ACTIVE_BYTES`],
/// [`HEAP_METADATA_BYTES`] and [`HEAP_RESIDENT_BYTES`] describe it.
#[derive(Debug, Clone, Copy)]
pub struct HeapStats {
    /// Bytes allocated and not freed.
    pub allocated: u64,
    /// Bytes of the pages that hold allocations.
    pub active: u64,
    /// Bytes of the allocator's bookkeeping.
    pub metadata: u64,
    /// Bytes of the allocator's resident pages.
    pub resident: u64,
}

/// How the heap gauges are read: the binary knows its allocator, the library does not.
static HEAP_READER: OnceLock<fn() -> Option<HeapStats>> = OnceLock::new();

/// Read the heap gauges with `reader` from now on (the first call wins).
pub fn read_heap_with(reader: fn() -> Option<HeapStats>) {
    let _ = HEAP_READER.set(reader);
}

/// Set the gauges of what `engine` and its store hold now.
pub fn observe(engine: &Engine) {
    let working = engine.working_set();
    let store = engine.backend().size();
    let set = |name: &'static str, value: u64| metrics::gauge!(name).set(value as f64);
    let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
    set(OPEN_INVOCATIONS, count(store.open));
    set(QUEUED_INVOCATIONS, count(working.queued));
    set(PENDING_TIMERS, count(working.pending_timers));
    set(ACTIVE_LEASES, count(working.active_leases));
    set(CACHED_RECORDS, count(store.cached));
    set(CACHE_BYTES, store.cached_bytes);
    set(HISTORY_DISK_BYTES, store.disk_bytes);
    set(WRITE_BUFFER_BYTES, store.write_buffer_bytes);
    set(BLOCK_CACHE_BYTES, store.block_cache_bytes);
    let loads = store.block_loads;
    for (block, sources) in [
        ("data", loads.data),
        ("index", loads.index),
        ("filter", loads.filter),
    ] {
        metrics::counter!(BLOCK_LOADS, "block" => block, "from" => "cache").absolute(sources.cache);
        metrics::counter!(BLOCK_LOADS, "block" => block, "from" => "file").absolute(sources.file);
    }
    set(WATCH_HISTORY_CHANGES, count(store.watch_history_changes));
    set(WATCH_HISTORY_BYTES, store.watch_history_bytes);
    set(WATCHED_INVOCATIONS, count(store.watched));
    set(RETENTION_RECHECKED_RECORDS, count(store.retention_rechecks));
    if let Some(cutoff_ms) = engine.retention().caught_up_to_ms() {
        metrics::gauge!(RETENTION_CAUGHT_UP_SECONDS).set(cutoff_ms as f64 / 1000.0);
    }
    if let Some(heap) = HEAP_READER.get().and_then(|read| read()) {
        set(HEAP_ALLOCATED_BYTES, heap.allocated);
        set(HEAP_ACTIVE_BYTES, heap.active);
        set(HEAP_METADATA_BYTES, heap.metadata);
        set(HEAP_RESIDENT_BYTES, heap.resident);
    }
    let writing = engine.backend().write_running_for().unwrap_or_default();
    metrics::gauge!(WRITE_IN_PROGRESS_SECONDS).set(writing.as_secs_f64());
    for queue in engine.busiest_queues(QUEUE_FUNCTIONS) {
        let function = format!(
            "{}/{}/{}",
            queue.function.account, queue.function.service, queue.function.function
        );
        metrics::gauge!(QUEUE_DEPTH, "function" => function.clone()).set(queue.depth as f64);
        metrics::gauge!(QUEUE_OLDEST_AGE_SECONDS, "function" => function)
            .set(queue.oldest_age.as_secs_f64());
    }
}

/// The current metrics in Prometheus' text format, gauges read from `engine` first.
pub fn render(engine: &Engine) -> String {
    let Some(handle) = recorder() else {
        return String::new();
    };
    observe(engine);
    handle.run_upkeep();
    handle.render()
}
