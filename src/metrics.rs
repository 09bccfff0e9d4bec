//! The metrics sai exports in Prometheus' text format, through the `metrics` facade (atomic
//! counters on the hot path, no lock) and `metrics-exporter-prometheus` (the facade's own
//! exporter, rendered at `GET /metrics`). Every name is defined here once.
//!
//! Gauges of what the server holds (open invocations, timers, leases, cache) are read from
//! the server's state at scrape time rather than kept up to date on every change.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::engine::Engine;

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

/// The process's recorder: installed by the first server that asks, shared by every later one
/// (the facade has one recorder per process). `None` if another recorder was installed first.
pub fn recorder() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .install_recorder()
                .inspect_err(|err| tracing::warn!(%err, "metrics are not recorded"))
                .ok()
        })
        .as_ref()
}

/// Set the gauges of what `engine` and its store hold now.
pub fn observe(engine: &Engine) {
    let working = engine.working_set();
    let store = engine.store().size();
    let set = |name: &'static str, value: u64| metrics::gauge!(name).set(value as f64);
    let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
    set(OPEN_INVOCATIONS, count(store.open));
    set(QUEUED_INVOCATIONS, count(working.queued));
    set(PENDING_TIMERS, count(working.pending_timers));
    set(ACTIVE_LEASES, count(working.active_leases));
    set(CACHED_RECORDS, count(store.cached));
    set(CACHE_BYTES, store.cached_bytes);
    set(HISTORY_DISK_BYTES, store.disk_bytes);
    set(WATCHED_INVOCATIONS, count(store.watched));
    let writing = engine.store().write_running_for().unwrap_or_default();
    metrics::gauge!(WRITE_IN_PROGRESS_SECONDS).set(writing.as_secs_f64());
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
