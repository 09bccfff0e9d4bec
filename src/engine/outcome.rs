//! What a worker reports for an attempt.

use std::sync::Arc;

/// What a worker reported for an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The function succeeded.
    Success {
        /// Its result.
        return_payload: Arc<str>,
    },
    /// The function failed.
    Failure {
        /// What went wrong.
        error_message: String,
        /// No retry can help: the invocation fails at once, whatever retries are left.
        permanent: bool,
    },
    /// The worker stopped it on request.
    Stopped,
    /// The worker refused it before running it.
    Invalid {
        /// Why.
        reason: String,
    },
}
