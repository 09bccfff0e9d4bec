//! Errors of the engine.

use crate::store::StoreError;

/// Why a lease no longer entitles its worker to act on its invocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Fence {
    /// The lease ran out before the call; the attempt counted as failed.
    #[error("the lease expired and the attempt counted as failed")]
    Expired,
    /// The attempt was running when sai restarted; it counted as failed.
    #[error("the lease was lost when sai restarted")]
    LostInRestart,
    /// A newer attempt holds the invocation.
    #[error("a newer attempt holds the invocation")]
    Superseded,
    /// The invocation ended this attempt without the worker.
    #[error("the invocation already ended this attempt")]
    Ended,
    /// A stop's grace period ran out before the worker reported.
    #[error("the stop's grace period ended before the worker reported")]
    GraceEnded,
    /// The invocation is no longer kept.
    #[error("the invocation no longer exists")]
    Gone,
}

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
    LeaseFenced(Fence),
    /// A repeat completion on a used token reported another outcome.
    #[error("lease_token was already completed with a different outcome")]
    OutcomeConflict,
    /// The server is shutting down.
    #[error("the server is shutting down")]
    ShuttingDown,
}
