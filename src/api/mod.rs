//! The gRPC edge: tonic services that turn requests into model values (`convert`), call the
//! engine or read the store, and map every error to a `tonic::Status` in one place (`error`).
//! Handlers stay thin; they hold no state of their own.

pub mod auth;
pub mod convert;
pub mod error;
pub mod invocation_service;
pub mod limits;
pub mod metadata;
pub mod worker_service;

pub use auth::{AuthLayer, Tokens};
pub use error::ApiError;
pub use invocation_service::InvocationService;
pub use limits::EdgeLimits;
pub use metadata::RequestContextLayer;
pub use worker_service::WorkerService;
