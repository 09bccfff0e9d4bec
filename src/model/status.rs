//! Invocation status and the state machine over it: `transition` is the one place that decides
//! which change of status is legal.
//!
//! ```text
//! Enqueued -> Dequeued -> Running -> Succeeded
//!    |  ^         |          |   \-> Failed            (no retry left)
//!    |  |         |          |   \-> Retrying -(backoff, Requeue)-> Enqueued
//!    |  |         \----------+-> Stopping -> Stopped   (stop while a worker holds it)
//!    |  \- Requeue - Retrying
//!    \-> Stopped (stop while queued)   \-> Expired (past max age)   \-> Invalid
//! ```

use serde::{Deserialize, Serialize};

/// Where an invocation is in its lifecycle; FC's status names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Status {
    /// Accepted and queued, waiting for a worker.
    Enqueued,
    /// Taken off the queue by a worker's poll.
    Dequeued,
    /// A worker holds a lease on it and runs it.
    Running,
    /// Terminal: the worker reported success.
    Succeeded,
    /// Terminal: the last attempt failed and no retry is left.
    Failed,
    /// Terminal: stopped on request.
    Stopped,
    /// A stop was requested while a worker held it.
    Stopping,
    /// Terminal: not dispatched before its max event age.
    Expired,
    /// Terminal: it could not be run at all.
    Invalid,
    /// An attempt failed; a retry waits for its backoff.
    Retrying,
}

impl Status {
    /// Every status, in proto enum order.
    pub const ALL: [Status; 10] = [
        Status::Enqueued,
        Status::Dequeued,
        Status::Running,
        Status::Succeeded,
        Status::Failed,
        Status::Stopped,
        Status::Stopping,
        Status::Expired,
        Status::Invalid,
        Status::Retrying,
    ];

    /// A terminal status never changes again.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Status::Succeeded
                | Status::Failed
                | Status::Stopped
                | Status::Expired
                | Status::Invalid
        )
    }

    /// The status a name denotes: FC's ("Succeeded"), or the proto enum's
    /// ("INVOCATION_STATUS_SUCCEEDED", "SUCCEEDED"), in any case.
    pub fn from_name(name: &str) -> Option<Status> {
        let upper = name.trim().to_ascii_uppercase();
        let bare = upper.strip_prefix("INVOCATION_STATUS_").unwrap_or(&upper);
        Status::ALL
            .into_iter()
            .find(|status| status.as_str().eq_ignore_ascii_case(bare))
    }

    /// FC's name for the status, as it appears in FC's JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Enqueued => "Enqueued",
            Status::Dequeued => "Dequeued",
            Status::Running => "Running",
            Status::Succeeded => "Succeeded",
            Status::Failed => "Failed",
            Status::Stopped => "Stopped",
            Status::Stopping => "Stopping",
            Status::Expired => "Expired",
            Status::Invalid => "Invalid",
            Status::Retrying => "Retrying",
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happened to an invocation; `transition` says which status it leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Trigger {
    /// A worker's poll took it off the queue.
    Dispatch,
    /// The worker holding the lease started it.
    Start,
    /// The worker reported success.
    Succeed,
    /// An attempt failed (error, or lease ran out) and a retry is left.
    FailWithRetry,
    /// An attempt failed and no retry is left, or the failure is permanent.
    FailFinal,
    /// The backoff of a retry ran out: back in the queue.
    Requeue,
    /// Someone asked to stop it.
    Stop,
    /// The worker reported it stopped, or the stop grace period ran out.
    ConfirmStop,
    /// Its dispatch deadline passed before a worker took it.
    Expire,
    /// It cannot be run (the worker refused it before running it).
    Invalidate,
}

impl Trigger {
    /// Every trigger, for exhaustive checks.
    pub const ALL: [Trigger; 10] = [
        Trigger::Dispatch,
        Trigger::Start,
        Trigger::Succeed,
        Trigger::FailWithRetry,
        Trigger::FailFinal,
        Trigger::Requeue,
        Trigger::Stop,
        Trigger::ConfirmStop,
        Trigger::Expire,
        Trigger::Invalidate,
    ];
}

/// A trigger that does not apply to the status the invocation is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cannot {trigger:?} an invocation that is {from}")]
pub struct TransitionError {
    /// The status the invocation is in.
    pub from: Status,
    /// What was asked of it.
    pub trigger: Trigger,
}

/// The status `trigger` moves an invocation in status `from` to, or why it cannot.
///
/// Once a stop was requested (Stopping), an attempt that ends without success ends the
/// invocation as Stopped rather than retrying it: the caller asked for it to stop. A success
/// that raced the stop request is kept, because the work really happened.
pub fn transition(from: Status, trigger: Trigger) -> Result<Status, TransitionError> {
    use Status::*;
    use Trigger::*;
    let to = match (from, trigger) {
        (Enqueued, Dispatch) => Dequeued,
        (Dequeued, Start) => Running,
        (Running | Stopping, Succeed) => Succeeded,
        (Dequeued | Running, FailWithRetry) => Retrying,
        (Dequeued | Running, FailFinal) => Failed,
        (Stopping, FailWithRetry | FailFinal | ConfirmStop | Invalidate) => Stopped,
        (Retrying, Requeue) => Enqueued,
        (Enqueued | Retrying, Stop) => Stopped,
        (Dequeued | Running, Stop) => Stopping,
        (Enqueued | Retrying, Expire) => Expired,
        (Enqueued | Dequeued | Running, Invalidate) => Invalid,
        _ => return Err(TransitionError { from, trigger }),
    };
    Ok(to)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// The lifecycle diagram of DESIGN.md, edge by edge.
    fn diagram_edges() -> HashSet<(Status, Status)> {
        use Status::*;
        [
            (Enqueued, Dequeued),
            (Enqueued, Stopped),
            (Enqueued, Expired),
            (Enqueued, Invalid),
            (Dequeued, Running),
            (Dequeued, Retrying),
            (Dequeued, Failed),
            (Dequeued, Stopping),
            (Dequeued, Invalid),
            (Running, Succeeded),
            (Running, Failed),
            (Running, Retrying),
            (Running, Stopping),
            (Running, Invalid),
            (Stopping, Stopped),
            (Stopping, Succeeded),
            (Retrying, Enqueued),
            (Retrying, Stopped),
            (Retrying, Expired),
        ]
        .into_iter()
        .collect()
    }

    #[test]
    fn every_status_trigger_pair_is_an_edge_of_the_diagram_or_refused() {
        let edges = diagram_edges();
        let mut reached = HashSet::new();
        for from in Status::ALL {
            for trigger in Trigger::ALL {
                match transition(from, trigger) {
                    Ok(to) => {
                        assert!(
                            edges.contains(&(from, to)),
                            "{from:?} --{trigger:?}--> {to:?} is not in the diagram"
                        );
                        reached.insert((from, to));
                    }
                    Err(err) => assert_eq!(err, TransitionError { from, trigger }),
                }
            }
        }
        assert_eq!(reached, edges, "every diagram edge has a trigger");
    }

    #[test]
    fn every_status_pair_is_reachable_only_along_the_diagram() {
        let edges = diagram_edges();
        for from in Status::ALL {
            for to in Status::ALL {
                let possible = Trigger::ALL.iter().any(|&t| transition(from, t) == Ok(to));
                assert_eq!(possible, edges.contains(&(from, to)), "{from:?} -> {to:?}");
            }
        }
    }

    #[test]
    fn terminal_statuses_accept_no_trigger() {
        for from in Status::ALL.into_iter().filter(|s| s.is_terminal()) {
            for trigger in Trigger::ALL {
                assert!(transition(from, trigger).is_err(), "{from:?} {trigger:?}");
            }
        }
    }

    #[test]
    fn stop_depends_on_who_holds_the_invocation() {
        assert_eq!(
            transition(Status::Enqueued, Trigger::Stop),
            Ok(Status::Stopped)
        );
        assert_eq!(
            transition(Status::Retrying, Trigger::Stop),
            Ok(Status::Stopped)
        );
        assert_eq!(
            transition(Status::Dequeued, Trigger::Stop),
            Ok(Status::Stopping)
        );
        assert_eq!(
            transition(Status::Running, Trigger::Stop),
            Ok(Status::Stopping)
        );
        assert!(transition(Status::Stopping, Trigger::Stop).is_err());
    }

    #[test]
    fn a_failure_after_a_stop_request_stops_instead_of_retrying() {
        assert_eq!(
            transition(Status::Stopping, Trigger::FailWithRetry),
            Ok(Status::Stopped)
        );
        assert_eq!(
            transition(Status::Stopping, Trigger::Succeed),
            Ok(Status::Succeeded)
        );
    }
}
