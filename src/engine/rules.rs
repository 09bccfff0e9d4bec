//! The engine's deadlines: when something happens to an open invocation unless a worker or a
//! caller acts first. Given to the backend as its [`Schedule`], so that it keeps each
//! invocation's one deadline in step with every change it commits.

use std::time::Duration;

use crate::model::{AsyncInvokeConfig, Invocation, Status};
use crate::store::backend::{Lease, Schedule};

/// When a queued or retrying invocation expires: its max event age after it was accepted.
pub fn expiry_deadline_ms(invocation: &Invocation, config: &AsyncInvokeConfig) -> i64 {
    invocation
        .started_time_ms
        .saturating_add(config.max_event_age_seconds().saturating_mul(1_000))
}

/// When a Stopping invocation's grace period ends: `stop_grace` after the stop request,
/// which is when it entered Stopping (`status_since_ms`).
pub fn grace_end_ms(status_since_ms: i64, stop_grace: Duration) -> i64 {
    status_since_ms.saturating_add(millis(stop_grace))
}

/// The deadlines of the lifecycle.
#[derive(Debug, Clone)]
pub struct Deadlines {
    /// How long a stop waits for the worker before it is forced.
    pub stop_grace: Duration,
}

impl Schedule for Deadlines {
    /// Queued: its max event age; retrying: the end of its backoff (or its max event age if
    /// that comes first); held by a worker: its lease deadline (none while no lease is held:
    /// a claim grants it right after its commit); stopping: the end of the grace period (or
    /// the lease deadline if that comes first). None once it ended.
    fn deadline_ms(
        &self,
        record: &Invocation,
        config: &AsyncInvokeConfig,
        lease: Option<&Lease>,
    ) -> Option<i64> {
        let lease = lease.map(|lease| lease.deadline_ms);
        match record.status {
            Status::Enqueued => Some(expiry_deadline_ms(record, config)),
            Status::Retrying => Some(record.retry_at_ms.min(expiry_deadline_ms(record, config))),
            Status::Dequeued | Status::Running => lease,
            Status::Stopping => {
                let since = record.status_since_ms();
                let grace = grace_end_ms(since, self.stop_grace);
                Some(lease.map_or(grace, |lease| lease.min(grace)))
            }
            Status::Succeeded
            | Status::Failed
            | Status::Stopped
            | Status::Expired
            | Status::Invalid => None,
        }
    }
}

/// `duration` in whole milliseconds.
pub fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}
