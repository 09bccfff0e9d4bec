//! Errors of the store: what a read or a mutation can refuse.

use std::sync::Arc;

use crate::model::{InvocationKey, TransitionError};

/// Why the store refused a request.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// No invocation with that id in that function (of that account).
    #[error("invocation {} of {}/{} does not exist", .0.id, .0.function.service, .0.function.function)]
    InvocationNotFound(InvocationKey),
    /// The id is taken in that function.
    #[error("invocation {} of {}/{} already exists", .0.id, .0.function.service, .0.function.function)]
    InvocationAlreadyExists(InvocationKey),
    /// The change does not apply to the invocation's current status.
    #[error("invocation {}: {source}", key.id)]
    IllegalTransition {
        /// The invocation.
        key: InvocationKey,
        /// What was refused.
        source: TransitionError,
    },
    /// A fenced change named an attempt that is no longer the invocation's current one.
    #[error("invocation {}: attempt {attempt} is stale, the invocation is on attempt {current}", key.id)]
    StaleAttempt {
        /// The invocation.
        key: InvocationKey,
        /// The attempt the caller holds.
        attempt: u32,
        /// The invocation's current attempt.
        current: u32,
    },
    /// No config for that (service, function, qualifier).
    #[error("async invoke config of {service}/{function} qualifier {qualifier} does not exist")]
    ConfigNotFound {
        /// Service.
        service: String,
        /// Function.
        function: String,
        /// Qualifier.
        qualifier: String,
    },
    /// A page token that this server did not make, or made for another order or list.
    #[error("invalid {field}: {rule}")]
    InvalidPageToken {
        /// The request field.
        field: &'static str,
        /// What is wrong with it.
        rule: &'static str,
    },
    /// A watch asked to resume from a point no longer kept.
    #[error(
        "sequence {requested} is no longer kept; the oldest change kept has sequence {oldest}"
    )]
    HistoryPurged {
        /// Where the watcher wanted to resume after.
        requested: u64,
        /// The oldest sequence still kept.
        oldest: u64,
    },
    /// The function already has as many unfinished invocations as allowed.
    #[error("{}/{} already has {limit} unfinished invocations, the most allowed (--max-open-per-function); nothing was stored, retry later", .function.service, .function.function)]
    FunctionFull {
        /// The function.
        function: crate::model::FunctionKey,
        /// The limit.
        limit: usize,
    },
    /// The data directory could not be read or written.
    #[error("storage: {0}")]
    Persist(Arc<crate::persist::PersistError>),
    /// The shared database could not be used.
    #[error("storage: {0}")]
    Database(Arc<super::DatabaseError>),
    /// The writer thread is gone (the server is stopping, or it failed): nothing more is written.
    #[error("storage: the writer stopped")]
    WriterStopped,
    /// A watch asked to resume after a change that has not happened yet.
    #[error("from_sequence {requested} is ahead of the newest change, {head}; resume from a sequence you received")]
    ResumePointAhead {
        /// Where the watcher wanted to resume after.
        requested: u64,
        /// The newest sequence.
        head: u64,
    },
    /// A watch of an open invocation asked to resume after an event it has not had yet: it
    /// would wait, skipping the events before it, and never see its end.
    #[error("from_event_id {requested} is ahead of the invocation's last event, {last}; resume from an event_id you received")]
    EventResumePointAhead {
        /// The event the watcher wanted to resume after.
        requested: u64,
        /// The invocation's latest event.
        last: u64,
    },
    /// The server is shutting down.
    #[error("the server is shutting down")]
    ShuttingDown,
}

impl From<crate::persist::PersistError> for StoreError {
    fn from(err: crate::persist::PersistError) -> Self {
        StoreError::Persist(Arc::new(err))
    }
}

impl From<Arc<crate::persist::PersistError>> for StoreError {
    fn from(err: Arc<crate::persist::PersistError>) -> Self {
        StoreError::Persist(err)
    }
}
