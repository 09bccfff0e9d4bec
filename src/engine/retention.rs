//! Retention: terminal invocations that ended longer ago than the retention are purged, a
//! batch at a time so that calls never wait behind a long purge, and what it has got through
//! is kept for the metrics.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::metrics::names::{RETENTION_BATCH_SECONDS, RETENTION_FAILED_BATCHES, RETENTION_PURGED};
use crate::store::PurgeStop;

use super::Engine;

/// Most invocations one batch examines before the next call gets its turn.
const BATCH: usize = 1_000;

/// How far retention has got, as of its last pass.
#[derive(Debug)]
pub struct RetentionProgress {
    /// The cutoff of the last pass that got through everything due (every finished
    /// invocation that ended before it is purged); `i64::MIN` until one has.
    caught_up_to_ms: AtomicI64,
}

impl Default for RetentionProgress {
    fn default() -> Self {
        RetentionProgress {
            caught_up_to_ms: AtomicI64::new(i64::MIN),
        }
    }
}

impl RetentionProgress {
    /// The cutoff of retention's last pass that got through everything due, in milliseconds
    /// since the epoch: every finished invocation that ended before it is purged. `None`
    /// until a pass has.
    pub fn caught_up_to_ms(&self) -> Option<i64> {
        let at = self.caught_up_to_ms.load(Ordering::Relaxed);
        (at != i64::MIN).then_some(at)
    }
}

impl Engine {
    /// Purge terminal invocations that ended more than `retention` ago, until shutdown.
    pub async fn purge_expired(self: Arc<Self>, retention: Duration) {
        let retention_ms = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
        // Often enough that nothing outlives its retention by more than a tenth of it.
        let every = (retention / 10).clamp(Duration::from_millis(100), Duration::from_secs(60));
        // Exported from the start, so that a rate of them reads 0 rather than nothing.
        metrics::counter!(RETENTION_PURGED).increment(0);
        metrics::counter!(RETENTION_FAILED_BATCHES).increment(0);
        loop {
            // The next pass is due `every` after this one's cutoff was read, not after it
            // ended: time that moves while a pass runs (a long purge, or a test's clock) must
            // not push the next cutoff a whole period further out.
            let next_pass = self.clock.now() + every;
            let cutoff = self.clock.now_ms().saturating_sub(retention_ms);
            self.purge_pass(cutoff).await;
            tokio::select! {
                _ = self.clock.sleep_until(next_pass) => {}
                _ = self.shutdown.cancelled() => return,
            }
        }
    }

    /// Batches until everything due at `cutoff_ms` is purged, or what is left must wait for
    /// a later pass.
    async fn purge_pass(&self, cutoff_ms: i64) {
        loop {
            let started = Instant::now();
            let batch = self.backend.purge_ended_before(cutoff_ms, BATCH).await;
            metrics::histogram!(RETENTION_BATCH_SECONDS).record(started.elapsed().as_secs_f64());
            let purged = match batch {
                Ok(purged) => purged,
                Err(err) => {
                    metrics::counter!(RETENTION_FAILED_BATCHES).increment(1);
                    tracing::warn!(%err, "retention could not purge; it tries again next pass");
                    return;
                }
            };
            if purged.invocations > 0 {
                metrics::counter!(RETENTION_PURGED).increment(purged.invocations as u64);
                tracing::debug!(
                    purged = purged.invocations,
                    "retention purged terminal invocations"
                );
            }
            match purged.stopped {
                PurgeStop::Budget if !self.shutdown.is_cancelled() => {
                    tokio::task::yield_now().await;
                }
                PurgeStop::Budget | PurgeStop::HeldBack => return,
                PurgeStop::CaughtUp => {
                    self.retention
                        .caught_up_to_ms
                        .store(cutoff_ms, Ordering::Relaxed);
                    return;
                }
            }
        }
    }

    /// How far retention has got.
    pub fn retention(&self) -> &RetentionProgress {
        &self.retention
    }
}
