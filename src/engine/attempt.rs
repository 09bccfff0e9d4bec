//! How an attempt of an invocation ended, read back from the invocation's events: what a
//! repeated completion of that attempt is checked against once no lease is held for it.

use std::sync::Arc;

use serde_json::Value;

use crate::model::{Invocation, Status};

use super::error::Fence;
use super::outcome::Outcome;

/// The error of an attempt whose lease ran out.
pub const LEASE_EXPIRED: &str = "lease expired";
/// The error of an attempt that was running when sai restarted.
pub const LOST_IN_RESTART: &str = "lease lost: sai restarted while the attempt ran";

/// How an attempt ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ending {
    /// With what its worker reported.
    Reported(Reported),
    /// Without its worker: why.
    Ended(Fence),
}

/// What a worker reported, as the record keeps it.
#[derive(Debug, PartialEq, Eq)]
pub enum Reported {
    /// Success with this return payload.
    Success(Arc<str>),
    /// Failure with this error (permanent or not).
    Failure(String),
    /// Stopped on request.
    Stopped,
    /// Refused with this reason.
    Invalid(String),
}

impl Reported {
    /// Whether `outcome` reports the same (a failure's permanent flag aside: the record
    /// does not keep it).
    pub fn matches(&self, outcome: &Outcome) -> bool {
        match (self, outcome) {
            (Reported::Success(kept), Outcome::Success { return_payload }) => {
                kept == return_payload
            }
            (Reported::Failure(kept), Outcome::Failure { error_message, .. }) => {
                kept == error_message
            }
            (Reported::Stopped, Outcome::Stopped) => true,
            (Reported::Invalid(kept), Outcome::Invalid { reason }) => kept == reason,
            _ => false,
        }
    }
}

/// How attempt `attempt` of `record` ended; `None` if it has not ended (or never started).
pub fn ending(record: &Invocation, attempt: u32) -> Option<Ending> {
    let mut dispatched = 0;
    let mut events = record.events.iter();
    for event in events.by_ref() {
        if event.status == Status::Dequeued {
            dispatched += 1;
            if dispatched == attempt {
                break;
            }
        }
    }
    if dispatched != attempt {
        return None;
    }
    let end = events.find(|e| {
        matches!(
            e.status,
            Status::Succeeded
                | Status::Failed
                | Status::Retrying
                | Status::Stopped
                | Status::Invalid
        )
    })?;
    let detail: Value = serde_json::from_str(&end.detail).unwrap_or(Value::Null);
    let text = |field: &str| detail.get(field).and_then(Value::as_str);
    Some(
        match (end.status, text("by"), text("error"), text("reason")) {
            (Status::Succeeded, ..) => {
                Ending::Reported(Reported::Success(record.return_payload.clone()))
            }
            (_, Some("worker"), ..) => Ending::Reported(Reported::Stopped),
            (_, Some(_), ..) => Ending::Ended(Fence::GraceEnded),
            (_, None, Some(LEASE_EXPIRED), _) => Ending::Ended(Fence::Expired),
            (_, None, Some(LOST_IN_RESTART), _) => Ending::Ended(Fence::LostInRestart),
            (_, None, Some(error), _) => Ending::Reported(Reported::Failure(error.to_string())),
            (_, None, None, Some(reason)) => {
                Ending::Reported(Reported::Invalid(reason.to_string()))
            }
            (_, None, None, None) => Ending::Ended(Fence::Ended),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Change, FunctionKey};

    fn dispatched(record: &mut Invocation, attempt: u32) {
        let dispatch = Change::Dispatch {
            worker_id: "w".into(),
            attempt,
        };
        record.apply(&dispatch, 1).expect("dispatch");
        record.apply(&Change::Start, 1).expect("start");
    }

    fn fail(error: &str, retry: bool) -> Change {
        Change::Fail {
            error: error.into(),
            retry_at_ms: retry.then_some(5),
            duration_ms: 1,
        }
    }

    #[test]
    fn each_attempt_reads_back_how_it_ended() {
        let key = FunctionKey::new("a", "s", "f").invocation("i");
        let mut record = Invocation::accept(key, "LATEST", "{}".into(), "r", 0);
        assert_eq!(ending(&record, 1), None, "not started");
        dispatched(&mut record, 1);
        assert_eq!(ending(&record, 1), None, "running");
        record.apply(&fail("boom", true), 2).expect("fail");
        record.apply(&Change::Requeue, 5).expect("requeue");
        dispatched(&mut record, 2);
        record
            .apply(&fail(LEASE_EXPIRED, true), 6)
            .expect("lease ran out");
        record.apply(&Change::Requeue, 7).expect("requeue");
        dispatched(&mut record, 3);
        record
            .apply(
                &Change::Succeed {
                    return_payload: "ok".into(),
                    duration_ms: 1,
                },
                8,
            )
            .expect("succeed");
        let failure = |message: &str| Outcome::Failure {
            error_message: message.into(),
            permanent: true,
        };
        assert_eq!(
            ending(&record, 1),
            Some(Ending::Reported(Reported::Failure("boom".into())))
        );
        assert!(matches!(
            ending(&record, 1),
            Some(Ending::Reported(r)) if r.matches(&failure("boom")) && !r.matches(&failure("other"))
        ));
        assert!(matches!(ending(&record, 2), Some(Ending::Ended(_))));
        assert!(matches!(
            ending(&record, 3),
            Some(Ending::Reported(r)) if r.matches(&Outcome::Success { return_payload: "ok".into() })
        ));
        assert_eq!(ending(&record, 4), None);
    }

    #[test]
    fn a_stop_reads_back_as_the_worker_reported_it_or_as_the_grace_period_ended_it() {
        let key = FunctionKey::new("a", "s", "f").invocation("i");
        let mut by_worker = Invocation::accept(key, "LATEST", "{}".into(), "r", 0);
        dispatched(&mut by_worker, 1);
        let mut by_grace = by_worker.clone();
        let mut with_error = by_worker.clone();
        for record in [&mut by_worker, &mut by_grace, &mut with_error] {
            record.apply(&Change::Stop, 2).expect("stop");
        }
        by_worker
            .apply(&Change::ConfirmStop { by: "worker" }, 3)
            .expect("stopped");
        by_grace
            .apply(&Change::ConfirmStop { by: "grace period" }, 3)
            .expect("stopped");
        with_error
            .apply(&fail("gave up", false), 3)
            .expect("failed");
        assert_eq!(
            ending(&by_worker, 1),
            Some(Ending::Reported(Reported::Stopped))
        );
        assert!(matches!(ending(&by_grace, 1), Some(Ending::Ended(_))));
        assert_eq!(
            ending(&with_error, 1),
            Some(Ending::Reported(Reported::Failure("gave up".into())))
        );
    }
}
