//! The one mapping from every error the service can meet to a gRPC `Status`.
//!
//! The message names the field or the resource; FC's error code string, where FC has one,
//! leads the message and is also sent as the `x-fc-error-code` metadata entry.

use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

use crate::engine::EngineError;
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

fn status(code: Code, fc_code: Option<&'static str>, message: String) -> Status {
    let Some(fc_code) = fc_code else {
        return Status::new(code, message);
    };
    let mut status = Status::new(code, format!("{fc_code}: {message}"));
    status
        .metadata_mut()
        .insert(ERROR_CODE_HEADER, MetadataValue::from_static(fc_code));
    status
}

impl From<ApiError> for Status {
    fn from(err: ApiError) -> Status {
        let message = err.to_string();
        match err {
            ApiError::Auth(super::auth::AuthError::Unauthenticated(_)) => {
                status(Code::Unauthenticated, None, message)
            }
            ApiError::Auth(super::auth::AuthError::WrongAccount { .. }) => {
                status(Code::PermissionDenied, None, message)
            }
            ApiError::Limit(_) => status(Code::ResourceExhausted, None, message),
            ApiError::Invalid(invalid) => {
                let fc_code =
                    if invalid.field.ends_with("payload") && invalid.rule.contains("bytes") {
                        "EntityTooLarge"
                    } else {
                        "InvalidArgument"
                    };
                status(Code::InvalidArgument, Some(fc_code), message)
            }
            ApiError::Store(store) => match store {
                StoreError::InvocationNotFound(_) => status(
                    Code::NotFound,
                    Some("StatefulAsyncInvocationNotFound"),
                    message,
                ),
                StoreError::InvocationAlreadyExists(_) => status(
                    Code::AlreadyExists,
                    Some("StatefulAsyncInvocationAlreadyExists"),
                    message,
                ),
                StoreError::IllegalTransition { source, .. } => {
                    let fc_code = (source.trigger == Trigger::Stop && source.from.is_terminal())
                        .then_some("StatefulAsyncInvocationAlreadyCompleted");
                    status(Code::FailedPrecondition, fc_code, message)
                }
                StoreError::StaleAttempt { .. } => status(Code::FailedPrecondition, None, message),
                StoreError::ConfigNotFound { .. } => {
                    status(Code::NotFound, Some("AsyncConfigNotExists"), message)
                }
                StoreError::FunctionFull { .. } => status(Code::ResourceExhausted, None, message),
                StoreError::InvalidPageToken { .. } => {
                    status(Code::InvalidArgument, Some("InvalidArgument"), message)
                }
                StoreError::HistoryPurged { .. } | StoreError::ResumePointAhead { .. } => {
                    status(Code::OutOfRange, None, message)
                }
                StoreError::ShuttingDown | StoreError::Storage(_) => {
                    status(Code::Unavailable, None, message)
                }
            },
            ApiError::Engine(engine) => match engine {
                // Store errors keep one mapping, whichever layer passed them on.
                EngineError::Store(store) => Status::from(ApiError::Store(store)),
                EngineError::LeaseNotFound => status(Code::NotFound, None, message),
                EngineError::LeaseFenced(_) | EngineError::OutcomeConflict => {
                    status(Code::FailedPrecondition, None, message)
                }
                EngineError::ShuttingDown => status(Code::Unavailable, None, message),
            },
        }
    }
}
