//! The name of every metric sai exports, in one place: a leaf that the layers recording
//! them (api, engine, store, persist) can use without depending on the exporter.

use std::sync::atomic::{AtomicBool, Ordering};

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
/// Invocations queued, by `function` (account/service/function).
pub const QUEUE_DEPTH: &str = "sai_queue_depth";
/// How long the oldest queued invocation has waited, by `function`.
pub const QUEUE_OLDEST_AGE_SECONDS: &str = "sai_queue_oldest_age_seconds";
