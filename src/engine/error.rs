//! Errors of the engine.

use crate::store::StoreError;

/// Why the engine refused a request.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The store refused it.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No lease with that token in the caller's account.
    #[error("lease_token is not a lease of this account (unknown, forged, or forgotten)")]
    LeaseNotFound,
    /// The lease no longer entitles the worker to act.
    #[error("lease_token no longer holds the invocation: {0}")]
    LeaseFenced(&'static str),
    /// A repeat completion on a used token reported another outcome.
    #[error("lease_token was already completed with a different outcome")]
    OutcomeConflict,
    /// The server is shutting down.
    #[error("the server is shutting down")]
    ShuttingDown,
}
