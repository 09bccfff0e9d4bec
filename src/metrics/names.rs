//! The name of every metric sai exports, in one place, and the handles the hot paths record
//! through: a leaf that the layers recording them (api, engine, store, persist) can use
//! without depending on the exporter.
//!
//! The facade's macros build and hash a key, labels included, and look it up in the
//! exporter's registry on every call; the paths that record per invocation or per call keep
//! their handles here instead, looked up once. Each cache is bounded by a fixed set of names:
//! the statuses, the served RPC methods (an unknown path is never cached), gRPC's codes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use metrics::{Counter, Histogram};
use parking_lot::RwLock;

/// Set once a recorder is installed: per-call recording that builds labels checks it first,
/// so that a server without an HTTP listener does no per-call work for metrics.
static RECORDING: AtomicBool = AtomicBool::new(false);

/// Whether metrics are recorded in this process.
pub fn recording() -> bool {
    RECORDING.load(Ordering::Relaxed)
}

/// Metrics are recorded from now on.
pub(super) fn start_recording() {
    RECORDING.store(true, Ordering::Relaxed);
}

/// Invocations not yet terminal.
pub const OPEN_INVOCATIONS: &str = "sai_open_invocations";
/// Invocations waiting in the ready queues.
pub const QUEUED_INVOCATIONS: &str = "sai_queued_invocations";
/// Deadlines armed in the engine.
pub const PENDING_TIMERS: &str = "sai_pending_timers";
/// Leases workers hold.
pub const ACTIVE_LEASES: &str = "sai_active_leases";
/// Finished records in the cache.
pub const CACHED_RECORDS: &str = "sai_cache_records";
/// Bytes of the finished records in the cache.
pub const CACHE_BYTES: &str = "sai_cache_bytes";
/// Bytes the history takes in the data directory.
pub const HISTORY_DISK_BYTES: &str = "sai_history_disk_bytes";
/// Bytes written to the data directory's memtables and not yet flushed, as the storage engine
/// counts them (keys and values): their memory is two to three times that (BENCHMARKS.md).
pub const WRITE_BUFFER_BYTES: &str = "sai_write_buffer_bytes";
/// Bytes the data directory's block cache holds (its index, filter and data blocks).
pub const BLOCK_CACHE_BYTES: &str = "sai_block_cache_bytes";
/// Blocks the data directory's reads loaded, by `block` (data, index, filter) and `from`
/// (`cache`: the block cache; `file`: a table file, from the page cache or the disk).
pub const BLOCK_LOADS: &str = "sai_block_loads_total";
/// Recent changes kept in memory so that watches can resume by sequence number.
pub const WATCH_HISTORY_CHANGES: &str = "sai_watch_history_changes";
/// About the bytes those changes hold (their invocations' snapshots, payloads included).
pub const WATCH_HISTORY_BYTES: &str = "sai_watch_history_bytes";
/// Bytes the process's allocator has handed out and not had back: the live heap.
pub const HEAP_ALLOCATED_BYTES: &str = "sai_heap_allocated_bytes";
/// Bytes of the allocator's pages that are resident: the live heap, what is freed but not
/// yet returned to the system, and the allocator's own bookkeeping.
pub const HEAP_RESIDENT_BYTES: &str = "sai_heap_resident_bytes";
/// Bytes of the allocator's pages that hold allocations: the live heap and the free space
/// between its allocations in those pages (fragmentation is this less the live heap).
pub const HEAP_ACTIVE_BYTES: &str = "sai_heap_active_bytes";
/// Bytes of the allocator's own bookkeeping.
pub const HEAP_METADATA_BYTES: &str = "sai_heap_metadata_bytes";
/// Open watch streams (WatchInvocation, WatchInvocations, the dashboard's event streams).
pub const WATCH_STREAMS: &str = "sai_watch_streams";
/// Open InvokeFunctionStream streams.
pub const INVOKE_STREAMS: &str = "sai_invoke_streams";
/// Invocations with a live watch channel.
pub const WATCHED_INVOCATIONS: &str = "sai_watched_invocations";
/// How long the data directory's write in progress has run (0 between writes): a write the
/// keyspace halts shows here before calls time out.
pub const WRITE_IN_PROGRESS_SECONDS: &str = "sai_write_in_progress_seconds";

/// RPCs answered, by `method` and gRPC `code` (for streaming RPCs, the code they opened with).
pub const GRPC_REQUESTS: &str = "sai_grpc_requests_total";
/// Time to answer an RPC, by `method` (for streaming RPCs, time to the response's headers).
pub const GRPC_REQUEST_SECONDS: &str = "sai_grpc_request_duration_seconds";
/// Invocation status changes committed, by the `status` entered.
pub const TRANSITIONS: &str = "sai_invocation_transitions_total";
/// Leases that ran out without a heartbeat or a completion.
pub const LEASE_EXPIRIES: &str = "sai_lease_expiries_total";
/// Commits written to the data directory in one group (one batch, one sync).
pub const COMMIT_GROUP_SIZE: &str = "sai_commit_group_size";
/// Time to write and sync one group.
pub const WRITE_SECONDS: &str = "sai_write_duration_seconds";
/// Finished invocations retention purged.
pub const RETENTION_PURGED: &str = "sai_retention_purged_total";
/// Batches of retention that failed to read or write the store (tried again next pass).
pub const RETENTION_FAILED_BATCHES: &str = "sai_retention_failed_batches_total";
/// Time one batch of retention took (it examines up to 1,000 invocations).
pub const RETENTION_BATCH_SECONDS: &str = "sai_retention_batch_duration_seconds";
/// The cutoff of retention's last pass that got through everything due, in Unix seconds:
/// every finished invocation that ended before it is purged. Less the time now and the
/// retention, how far retention is behind. Absent until a pass has got through.
pub const RETENTION_CAUGHT_UP_SECONDS: &str = "sai_retention_caught_up_timestamp_seconds";
/// Records retention examined and could not purge yet (open, or ended after its cutoff),
/// looked at again each pass. At their bound (100,000) its scans stop short.
pub const RETENTION_RECHECKED_RECORDS: &str = "sai_retention_rechecked_records";
/// Invocations queued, by `function` (account/service/function).
pub const QUEUE_DEPTH: &str = "sai_queue_depth";
/// How long the oldest queued invocation has waited, by `function`.
pub const QUEUE_OLDEST_AGE_SECONDS: &str = "sai_queue_oldest_age_seconds";

/// Count a status change into `status` (one of the statuses' static names).
pub fn count_transition(status: &'static str) {
    static COUNTERS: OnceLock<RwLock<HashMap<&'static str, Counter>>> = OnceLock::new();
    if !recording() {
        return;
    }
    let counters = COUNTERS.get_or_init(RwLock::default);
    if let Some(counter) = counters.read().get(status) {
        counter.increment(1);
        return;
    }
    counters
        .write()
        .entry(status)
        .or_insert_with(|| metrics::counter!(TRANSITIONS, "status" => status))
        .increment(1);
}

/// The handles of one served RPC method.
struct MethodHandles {
    duration: Histogram,
    /// By gRPC code number (0..=16), made when first answered with it.
    by_code: [Option<Counter>; 17],
}

/// Count and time one answered RPC of `method`; `served` is false for a path no service
/// serves, which is counted as `method="unknown"` and never cached.
pub fn record_rpc(
    method: &str,
    served: bool,
    code: i32,
    code_name: impl FnOnce() -> String,
    seconds: f64,
) {
    static METHODS: OnceLock<RwLock<HashMap<String, MethodHandles>>> = OnceLock::new();
    if !recording() {
        return;
    }
    let slot = usize::try_from(code).ok().filter(|&c| c < 17);
    let (Some(slot), true) = (slot, served) else {
        metrics::counter!(GRPC_REQUESTS, "method" => "unknown", "code" => code_name()).increment(1);
        metrics::histogram!(GRPC_REQUEST_SECONDS, "method" => "unknown").record(seconds);
        return;
    };
    let methods = METHODS.get_or_init(RwLock::default);
    {
        let read = methods.read();
        if let Some(handles) = read.get(method) {
            if let Some(counter) = &handles.by_code[slot] {
                counter.increment(1);
                handles.duration.record(seconds);
                return;
            }
        }
    }
    let mut write = methods.write();
    let handles = write
        .entry(method.to_string())
        .or_insert_with(|| MethodHandles {
            duration: metrics::histogram!(GRPC_REQUEST_SECONDS, "method" => method.to_string()),
            by_code: Default::default(),
        });
    handles.by_code[slot]
        .get_or_insert_with(|| {
            metrics::counter!(GRPC_REQUESTS, "method" => method.to_string(), "code" => code_name())
        })
        .increment(1);
    handles.duration.record(seconds);
}

/// Record one group written to the data directory: its size and the time it took.
pub fn record_group_write(commits: usize, seconds: f64) {
    static HANDLES: OnceLock<(Histogram, Histogram)> = OnceLock::new();
    if !recording() {
        return;
    }
    let (size, time) = HANDLES.get_or_init(|| {
        (
            metrics::histogram!(COMMIT_GROUP_SIZE),
            metrics::histogram!(WRITE_SECONDS),
        )
    });
    size.record(commits as f64);
    time.record(seconds);
}
