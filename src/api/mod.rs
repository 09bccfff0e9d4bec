//! The gRPC edge: tonic services that turn requests into model values (`convert`), call the
//! engine or read the store, and map every error to a `tonic::Status` in one place (`error`).
//! Handlers stay thin; they hold no state of their own.

pub mod auth;
pub mod convert;
pub mod error;
pub mod fc_json;
pub mod invocation_service;
pub mod key_file;
pub mod limits;
pub mod metadata;
pub mod worker_service;

pub use auth::{AuthLayer, Tokens};
pub use error::ApiError;
pub use invocation_service::InvocationService;
pub use limits::EdgeLimits;
pub use metadata::RequestContextLayer;
pub use worker_service::WorkerService;

/// Run an engine call to the end in its own task. A gRPC handler's future is dropped when its
/// client goes away; once a commit is submitted, what follows it in memory (arming a stop's
/// grace timer, marking a lease used, queueing a retry) must happen anyway, or a stored change
/// would go unfollowed until the next restart. Invoking needs no task of its own: the store
/// runs its queueing once the commit is durable (a spawn per call cost ~4% of server CPU).
async fn detached<T: Send + 'static>(
    work: impl std::future::Future<Output = T> + Send + 'static,
) -> Result<T, tonic::Status> {
    tokio::spawn(work)
        .await
        .map_err(|err| error::task_failed(&err))
}
