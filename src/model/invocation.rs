//! An invocation record, its identity, and its history of events.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::status::{transition, Status, TransitionError, Trigger};

/// The qualifier an invocation or config has when the caller gives none.
pub const DEFAULT_QUALIFIER: &str = "LATEST";

/// One function of one account: the scope of invocation ids and of list indexes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FunctionKey {
    /// Tenant (x-fc-account-id).
    pub account: Arc<str>,
    /// Service name.
    pub service: Arc<str>,
    /// Function name.
    pub function: Arc<str>,
}

impl FunctionKey {
    /// A key from its parts.
    pub fn new(account: &str, service: &str, function: &str) -> Self {
        FunctionKey {
            account: account.into(),
            service: service.into(),
            function: function.into(),
        }
    }

    /// The key of invocation `id` of this function.
    pub fn invocation(&self, id: &str) -> InvocationKey {
        InvocationKey {
            function: self.clone(),
            id: id.into(),
        }
    }

    /// The key of invocation `id`, sharing the id's allocation.
    pub fn invocation_ref(&self, id: &Arc<str>) -> InvocationKey {
        InvocationKey {
            function: self.clone(),
            id: id.clone(),
        }
    }
}

/// Identity of an invocation: unique per (account, service, function, id).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct InvocationKey {
    /// The function it belongs to.
    pub function: FunctionKey,
    /// The invocation id.
    pub id: Arc<str>,
}

/// How delivery of the result to a configured destination went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum DestinationStatus {
    /// Nothing delivered (none configured, or not terminal yet).
    #[default]
    None,
    /// The destination accepted the record.
    Succeeded,
    /// The record could not be delivered.
    Failed,
}

/// One status change in an invocation's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// 1, 2, 3, ... per invocation, without gaps.
    pub event_id: u64,
    /// The status entered.
    pub status: Status,
    /// When, epoch ms.
    pub timestamp_ms: i64,
    /// JSON object with details ("{}" when none).
    pub detail: String,
}

/// What happens to an invocation, with the data each change records.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// A worker's poll took it; `attempt` counts from 1.
    Dispatch {
        /// The polling worker's id.
        worker_id: String,
        /// The attempt this dispatch starts.
        attempt: u32,
    },
    /// The worker holding the lease started it.
    Start,
    /// The worker reported success.
    Succeed {
        /// What the function returned.
        return_payload: Arc<str>,
        /// Run time of the attempt.
        duration_ms: i64,
    },
    /// An attempt failed; `retry` says whether another attempt follows.
    Fail {
        /// What went wrong.
        error: String,
        /// When the retry starts, epoch ms; `None` when no retry follows.
        retry_at_ms: Option<i64>,
        /// Run time of the attempt.
        duration_ms: i64,
    },
    /// A retry's backoff ran out.
    Requeue,
    /// Someone asked to stop it.
    Stop,
    /// The worker stopped it, or the stop grace period ran out.
    ConfirmStop {
        /// Who ended it ("worker" or "grace period").
        by: &'static str,
    },
    /// Its max event age passed before dispatch.
    Expire,
    /// It cannot be run.
    Invalidate {
        /// Why.
        reason: String,
    },
}

impl Change {
    /// The state-machine trigger this change is.
    pub fn trigger(&self) -> Trigger {
        match self {
            Change::Dispatch { .. } => Trigger::Dispatch,
            Change::Start => Trigger::Start,
            Change::Succeed { .. } => Trigger::Succeed,
            Change::Fail {
                retry_at_ms: Some(_),
                ..
            } => Trigger::FailWithRetry,
            Change::Fail {
                retry_at_ms: None, ..
            } => Trigger::FailFinal,
            Change::Requeue => Trigger::Requeue,
            Change::Stop => Trigger::Stop,
            Change::ConfirmStop { .. } => Trigger::ConfirmStop,
            Change::Expire => Trigger::Expire,
            Change::Invalidate { .. } => Trigger::Invalidate,
        }
    }
}

/// An async invocation with its whole history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Invocation {
    /// Identity.
    pub key: InvocationKey,
    /// Version or alias it was invoked under.
    pub qualifier: Arc<str>,
    /// Current status (the status of the last event).
    pub status: Status,
    /// When it was accepted, epoch ms; immutable.
    pub started_time_ms: i64,
    /// When it became terminal, epoch ms; 0 before.
    pub end_time_ms: i64,
    /// Destination delivery outcome.
    pub destination_status: DestinationStatus,
    /// Error of the last failed attempt.
    pub error_message: String,
    /// The invoke payload (shared, so snapshots do not copy it).
    pub payload: Arc<str>,
    /// Attempts dispatched so far; the current lease belongs to this attempt.
    pub attempts: u32,
    /// Retries performed so far.
    pub already_retried_times: u32,
    /// x-fc-request-id of the InvokeFunction call.
    pub request_id: Arc<str>,
    /// Worker that ran the last attempt.
    pub instance_id: Arc<str>,
    /// Run time of the last attempt, ms.
    pub duration_ms: i64,
    /// What the worker returned on success.
    pub return_payload: Arc<str>,
    /// When a Retrying invocation goes back to the queue, epoch ms; 0 otherwise. Stored so
    /// that a restart re-arms the backoff where it was.
    pub retry_at_ms: i64,
    /// Every status change, oldest first.
    pub events: Vec<Event>,
}

/// Event 1's detail.
#[derive(Serialize)]
struct AcceptedDetail<'a> {
    #[serde(rename = "requestId")]
    request_id: &'a str,
}

impl Invocation {
    /// A newly accepted invocation: Enqueued, with event 1.
    pub fn accept(
        key: InvocationKey,
        qualifier: &str,
        payload: Arc<str>,
        request_id: &str,
        now_ms: i64,
    ) -> Self {
        // Serialized straight from a struct: building a `json!` value and formatting it cost
        // about 1% of a synced InvokeFunction's server CPU.
        let detail = serde_json::to_string(&AcceptedDetail { request_id })
            .expect("a struct of one string always serializes");
        Invocation {
            key,
            qualifier: qualifier.into(),
            status: Status::Enqueued,
            started_time_ms: now_ms,
            end_time_ms: 0,
            destination_status: DestinationStatus::None,
            error_message: String::new(),
            payload,
            attempts: 0,
            already_retried_times: 0,
            request_id: request_id.into(),
            instance_id: "".into(),
            duration_ms: 0,
            return_payload: "".into(),
            retry_at_ms: 0,
            events: vec![Event {
                event_id: 1,
                status: Status::Enqueued,
                timestamp_ms: now_ms,
                detail,
            }],
        }
    }

    /// The id of the last event (0 for none).
    pub fn last_event_id(&self) -> u64 {
        self.events.last().map_or(0, |e| e.event_id)
    }

    /// When it entered its current status: its last event's time (its start when its events
    /// are not loaded).
    pub fn status_since_ms(&self) -> i64 {
        self.events
            .last()
            .map_or(self.started_time_ms, |e| e.timestamp_ms)
    }

    /// The events after `event_id`, in order.
    pub fn events_after(&self, event_id: u64) -> &[Event] {
        // Event ids are 1-based positions, so the slice starts at index `event_id`.
        let start = usize::try_from(event_id)
            .unwrap_or(usize::MAX)
            .min(self.events.len());
        &self.events[start..]
    }

    /// A copy without its events: what lists and watch messages carry.
    pub fn without_events(&self) -> Invocation {
        Invocation {
            key: self.key.clone(),
            qualifier: self.qualifier.clone(),
            status: self.status,
            started_time_ms: self.started_time_ms,
            end_time_ms: self.end_time_ms,
            destination_status: self.destination_status,
            error_message: self.error_message.clone(),
            payload: self.payload.clone(),
            attempts: self.attempts,
            already_retried_times: self.already_retried_times,
            request_id: self.request_id.clone(),
            instance_id: self.instance_id.clone(),
            duration_ms: self.duration_ms,
            return_payload: self.return_payload.clone(),
            retry_at_ms: self.retry_at_ms,
            events: Vec::new(),
        }
    }

    /// Whether `change` asks for nothing new: a stop of an invocation already Stopping.
    pub fn is_no_op(&self, change: &Change) -> bool {
        matches!(change, Change::Stop) && self.status == Status::Stopping
    }

    /// Apply `change` at `now_ms`: moves the status as `transition` allows, records the data
    /// of the change, and appends the event, which it returns. A stop asked of an invocation
    /// that is already Stopping changes nothing and returns `None`. Nothing changes when the
    /// transition is illegal.
    pub fn apply(
        &mut self,
        change: &Change,
        now_ms: i64,
    ) -> Result<Option<&Event>, TransitionError> {
        if self.is_no_op(change) {
            return Ok(None);
        }
        let to = transition(self.status, change.trigger())?;
        let mut detail = match change {
            Change::Dispatch { worker_id, attempt } => {
                self.attempts = *attempt;
                self.instance_id = worker_id.as_str().into();
                json!({ "attempt": attempt, "workerId": worker_id })
            }
            Change::Start => json!({ "attempt": self.attempts }),
            Change::Succeed {
                return_payload,
                duration_ms,
            } => {
                self.return_payload = return_payload.clone();
                self.duration_ms = *duration_ms;
                json!({ "attempt": self.attempts, "durationMs": duration_ms })
            }
            Change::Fail {
                error,
                duration_ms,
                retry_at_ms,
            } => {
                self.error_message = error.clone();
                self.duration_ms = *duration_ms;
                match retry_at_ms {
                    Some(at) => {
                        self.retry_at_ms = *at;
                        json!({ "attempt": self.attempts, "error": error, "retryAt": at })
                    }
                    None => json!({ "attempt": self.attempts, "error": error }),
                }
            }
            Change::Requeue => {
                self.retry_at_ms = 0;
                self.already_retried_times += 1;
                json!({ "retry": self.already_retried_times })
            }
            Change::Stop => json!({}),
            Change::ConfirmStop { by } => json!({ "by": by }),
            Change::Expire => json!({ "startedTime": self.started_time_ms }),
            Change::Invalidate { reason } => {
                self.error_message = reason.clone();
                json!({ "reason": reason })
            }
        };
        self.status = to;
        if to.is_terminal() {
            self.end_time_ms = now_ms;
            let delivered = match self.destination_status {
                DestinationStatus::None => None,
                DestinationStatus::Succeeded => Some("Succeeded"),
                DestinationStatus::Failed => Some("Failed"),
            };
            if let (Some(delivered), Some(fields)) = (delivered, detail.as_object_mut()) {
                fields.insert("destinationStatus".into(), delivered.into());
            }
        }
        let event_id = self.last_event_id() + 1;
        self.events.push(Event {
            event_id,
            status: to,
            timestamp_ms: now_ms,
            detail: detail.to_string(),
        });
        if to.is_terminal() {
            // No event follows a terminal one; kept records should not carry spare capacity.
            self.events.shrink_to_fit();
        }
        Ok(self.events.last())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh() -> Invocation {
        let key = FunctionKey::new("acct", "demo-service", "demo-function").invocation("job-1");
        Invocation::accept(key, DEFAULT_QUALIFIER, "{}".into(), "req-1", 1_000)
    }

    #[test]
    fn accept_records_event_one_as_enqueued() {
        let inv = fresh();
        assert_eq!(inv.status, Status::Enqueued);
        assert_eq!(inv.events.len(), 1);
        assert_eq!(inv.events[0].event_id, 1);
        assert_eq!(inv.events[0].status, Status::Enqueued);
        assert_eq!(inv.started_time_ms, 1_000);
        assert_eq!(inv.end_time_ms, 0);
        assert_eq!(inv.events[0].detail, r#"{"requestId":"req-1"}"#);
    }

    #[test]
    fn event_one_detail_is_json_whatever_the_request_id_holds() {
        let key = FunctionKey::new("a", "s", "f").invocation("i");
        let inv = Invocation::accept(key, DEFAULT_QUALIFIER, "{}".into(), "q\"\\\n", 1);
        let detail: serde_json::Value = serde_json::from_str(&inv.events[0].detail).expect("JSON");
        assert_eq!(detail["requestId"], "q\"\\\n");
    }

    #[test]
    fn apply_appends_numbered_events_and_sets_end_time_when_terminal() {
        let mut inv = fresh();
        inv.apply(
            &Change::Dispatch {
                worker_id: "w1".into(),
                attempt: 1,
            },
            1_010,
        )
        .expect("dispatch");
        inv.apply(&Change::Start, 1_011).expect("start");
        inv.apply(
            &Change::Succeed {
                return_payload: "ok".into(),
                duration_ms: 5,
            },
            1_016,
        )
        .expect("succeed");
        let ids: Vec<u64> = inv.events.iter().map(|e| e.event_id).collect();
        assert_eq!(ids, vec![1, 2, 3, 4]);
        assert_eq!(inv.status, Status::Succeeded);
        assert_eq!(inv.end_time_ms, 1_016);
        assert_eq!(&*inv.instance_id, "w1");
        assert_eq!(&*inv.return_payload, "ok");
        assert_eq!(inv.events_after(2).len(), 2);
        assert_eq!(inv.events_after(99).len(), 0);
    }

    #[test]
    fn an_illegal_change_leaves_the_invocation_untouched() {
        let mut inv = fresh();
        inv.apply(&Change::Stop, 1_001).expect("stop");
        let before = inv.clone();
        assert!(
            inv.apply(&Change::Stop, 1_002).is_err(),
            "Stopped is terminal"
        );
        assert!(inv.apply(&Change::Start, 1_002).is_err());
        assert!(inv.apply(&Change::Start, 1_002).is_err());
        assert_eq!(inv, before);
    }

    #[test]
    fn stop_while_stopping_is_a_no_op() {
        let mut inv = fresh();
        let dispatch = Change::Dispatch {
            worker_id: "w".into(),
            attempt: 1,
        };
        inv.apply(&dispatch, 1_001).expect("dispatch");
        let stopping = inv.apply(&Change::Stop, 1_002).expect("stop").cloned();
        assert_eq!(stopping.map(|e| e.status), Some(Status::Stopping));
        let before = inv.clone();
        assert_eq!(inv.apply(&Change::Stop, 1_003), Ok(None));
        assert_eq!(inv, before);
    }
}
