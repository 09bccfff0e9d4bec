//! The one mapping from every error the service can meet to a gRPC `Status`.
//!
//! The message names the field or the resource; FC's error code string, where FC has one,
//! leads the message and is also sent as the `x-fc-error-code` metadata entry.

use tonic::metadata::MetadataValue;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::engine::{EngineError, Fence};
use crate::model::{Trigger, ValidationError};
use crate::store::StoreError;

/// Metadata key carrying FC's error code string.
pub const ERROR_CODE_HEADER: &str = "x-fc-error-code";

/// Everything a handler can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A request field broke an input rule.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// The store refused the request.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The engine refused the request.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// Authentication refused the call.
    #[error(transparent)]
    Auth(#[from] super::auth::AuthError),
    /// A per-account limit refused the call.
    #[error(transparent)]
    Limit(#[from] super::limits::LimitReached),
}

fn status(code: Code, error_code: &'static str, message: String) -> Status {
    let mut status = Status::new(code, format!("{error_code}: {message}"));
    status
        .metadata_mut()
        .insert(ERROR_CODE_HEADER, MetadataValue::from_static(error_code));
    status
}

/// The stable code a status carries in `x-fc-error-code` ("" for none: OK).
pub fn error_code(status: &Status) -> String {
    status
        .metadata()
        .get(ERROR_CODE_HEADER)
        .and_then(|code| code.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// The gRPC code and the stable error code of every error: FC's code where FC has one, sai's
/// own otherwise (the worker's are listed in `worker_service.proto`).
fn codes(err: &ApiError) -> (Code, &'static str) {
    use super::auth::AuthError;
    match err {
        ApiError::Auth(AuthError::Unauthenticated(_)) => (Code::Unauthenticated, "Unauthenticated"),
        ApiError::Auth(AuthError::WrongAccount { .. }) => (Code::PermissionDenied, "AccessDenied"),
        ApiError::Limit(_) => (Code::ResourceExhausted, "TooManyConcurrentCalls"),
        ApiError::Invalid(invalid) if invalid.too_large => {
            (Code::InvalidArgument, "EntityTooLarge")
        }
        ApiError::Invalid(_) => (Code::InvalidArgument, "InvalidArgument"),
        ApiError::Store(store) => store_codes(store),
        ApiError::Engine(engine) => match engine {
            // Store errors keep one mapping, whichever layer passed them on.
            EngineError::Store(store) => store_codes(store),
            EngineError::LeaseNotFound => (Code::NotFound, "LeaseNotFound"),
            EngineError::LeaseFenced(fence) => (
                Code::FailedPrecondition,
                match fence {
                    Fence::Expired | Fence::LostInRestart => "LeaseExpired",
                    Fence::Superseded => "LeaseSuperseded",
                    Fence::Ended | Fence::GraceEnded | Fence::Gone => "InvocationEnded",
                },
            ),
            EngineError::OutcomeConflict => (Code::FailedPrecondition, "LeaseOutcomeConflict"),
            EngineError::ShuttingDown => (Code::Unavailable, "ServiceUnavailable"),
        },
    }
}

fn store_codes(err: &StoreError) -> (Code, &'static str) {
    match err {
        StoreError::InvocationNotFound(_) => (Code::NotFound, "StatefulAsyncInvocationNotFound"),
        StoreError::InvocationAlreadyExists(_) => {
            (Code::AlreadyExists, "StatefulAsyncInvocationAlreadyExists")
        }
        StoreError::IllegalTransition { source, .. } => (
            Code::FailedPrecondition,
            if source.trigger == Trigger::Stop && source.from.is_terminal() {
                "StatefulAsyncInvocationAlreadyCompleted"
            } else {
                "InvocationStateConflict"
            },
        ),
        StoreError::StaleAttempt { .. } => (Code::FailedPrecondition, "LeaseSuperseded"),
        StoreError::ConfigNotFound { .. } => (Code::NotFound, "AsyncConfigNotExists"),
        StoreError::FunctionFull { .. } => (Code::ResourceExhausted, "TooManyOpenInvocations"),
        StoreError::InvalidPageToken { .. } => (Code::InvalidArgument, "InvalidArgument"),
        StoreError::HistoryPurged { .. } => (Code::OutOfRange, "ResumePointPurged"),
        StoreError::ResumePointAhead { .. } | StoreError::EventResumePointAhead { .. } => {
            (Code::OutOfRange, "ResumePointAhead")
        }
        StoreError::ShuttingDown
        | StoreError::Persist(_)
        | StoreError::Database(_)
        | StoreError::WriterStopped => (Code::Unavailable, "ServiceUnavailable"),
    }
}

impl From<ApiError> for Status {
    fn from(err: ApiError) -> Status {
        let (code, error_code) = codes(&err);
        let mut answer = status(code, error_code, err.to_string());
        if let Some((field, rule)) = field_violation(&err) {
            // The field and the rule again as google.rpc.BadRequest, which clients read
            // without parsing the message (and the REST API renames the field from).
            let details = ErrorDetails::with_bad_request_violation(field, rule);
            answer = Status::with_error_details_and_metadata(
                code,
                answer.message(),
                details,
                answer.metadata().clone(),
            );
        }
        answer
    }
}

/// The request field an error refuses and the rule it breaks, where it is one field's.
fn field_violation(err: &ApiError) -> Option<(&str, &str)> {
    let store = match err {
        ApiError::Invalid(invalid) => return Some((&invalid.field, &invalid.rule)),
        ApiError::Store(store) | ApiError::Engine(EngineError::Store(store)) => store,
        _ => return None,
    };
    match store {
        StoreError::InvalidPageToken { field, rule } => Some((field, rule)),
        _ => None,
    }
}

/// `message` without the `code: ` it begins with, if it does: a status's message leads with
/// its error code, which a reader that shows the code beside it need not see twice.
pub fn without_code<'a>(message: &'a str, code: &str) -> &'a str {
    message
        .strip_prefix(code)
        .and_then(|rest| rest.strip_prefix(": "))
        .unwrap_or(message)
}

/// The field and the rule of a refusal that carries them as google.rpc.BadRequest.
pub fn bad_request_field(status: &Status) -> Option<(String, String)> {
    let violation = status
        .get_details_bad_request()?
        .field_violations
        .into_iter()
        .next()?;
    Some((violation.field, violation.description))
}

/// The HTTP status that answers a call refused with `code`, for the JSON API: gRPC's own
/// mapping of codes to HTTP (as grpc-gateway and Google's APIs use it).
pub fn http_status(code: Code) -> u16 {
    match code {
        Code::Ok => 200,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => 400,
        Code::Unauthenticated => 401,
        Code::PermissionDenied => 403,
        Code::NotFound => 404,
        Code::AlreadyExists | Code::Aborted => 409,
        Code::ResourceExhausted => 429,
        Code::Cancelled => 499,
        Code::Unimplemented => 501,
        Code::Unavailable => 503,
        Code::DeadlineExceeded => 504,
        Code::Unknown | Code::Internal | Code::DataLoss => 500,
    }
}

/// gRPC's name of `code`: `NOT_FOUND`.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// A status tonic made before a handler ran (one without sai's error code), as sai answers
/// it: an undecodable message (bad UTF-8 in a string, bad bytes, a truncated frame, none) is
/// the caller's fault, INVALID_ARGUMENT, not INTERNAL; a
/// message over --max-request-bytes is RESOURCE_EXHAUSTED, gRPC's code for a size limit,
/// not OUT_OF_RANGE; an unknown method is UNIMPLEMENTED. Each carries a code. Any other
/// status is left as it is.
pub fn transport_status(made: Status) -> Status {
    if made.metadata().get(ERROR_CODE_HEADER).is_some() {
        return made; // sai's own
    }
    match made.code() {
        // Every INTERNAL of the transport is about reading the request: a message that does
        // not decode, a truncated frame, no message at all.
        Code::Internal => status(
            Code::InvalidArgument,
            "InvalidArgument",
            format!("the request is not a valid message: {}", made.message()),
        ),
        Code::OutOfRange if made.message().contains("message length too large") => status(
            Code::ResourceExhausted,
            "EntityTooLarge",
            format!(
                "the request is larger than --max-request-bytes allows: {}",
                made.message()
            ),
        ),
        Code::Unimplemented => status(Code::Unimplemented, "MethodNotFound", made.message().into()),
        _ => made,
    }
}

/// What a task that ran a call to its end reports when it did not finish: a panic is a bug of
/// the server's (INTERNAL, logged); a task cancelled by the runtime means it is shutting down.
pub fn task_failed(err: &tokio::task::JoinError) -> Status {
    if err.is_panic() {
        tracing::error!(%err, "a call's task panicked");
        return status(
            Code::Internal,
            "InternalError",
            "the server failed to finish this call; it is logged".into(),
        );
    }
    status(
        Code::Unavailable,
        "ServiceUnavailable",
        "the server is shutting down".into(),
    )
}
