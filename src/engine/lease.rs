//! Leases: which worker holds which attempt of which invocation, until when.
//!
//! A token is 128 random bits, unguessable, and maps to one attempt of one invocation of one
//! account. The token alone proves nothing beyond that: every heartbeat or completion is also
//! checked against the invocation's current attempt and status (fencing), so a stale lease can
//! never overwrite a newer outcome.

use std::sync::Arc;

use dashmap::DashMap;
use tokio::time::Instant;

use crate::model::InvocationKey;

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
        /// Whether a retry may help.
        retryable: bool,
    },
    /// The worker stopped it on request.
    Stopped,
    /// The worker refused it before running it.
    Invalid {
        /// Why.
        reason: String,
    },
}

/// Where a lease stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseState {
    /// The worker holds the attempt.
    Active,
    /// The worker reported this outcome (kept to answer a repeated completion).
    Completed(Outcome),
    /// The lease ran out before the worker reported.
    Expired,
}

/// One lease.
#[derive(Debug, Clone)]
pub struct Lease {
    /// The invocation.
    pub key: InvocationKey,
    /// The attempt it covers.
    pub attempt: u32,
    /// When the attempt started (for duration_ms).
    pub started: Instant,
    /// When it runs out unless extended.
    pub deadline: Instant,
    /// The same deadline in epoch ms, as workers see it.
    pub deadline_ms: i64,
    /// Where it stands.
    pub state: LeaseState,
}

/// Every live or recently completed lease by token.
#[derive(Debug, Default)]
pub struct Leases {
    /// Boxed, as the store's records are: completed leases are kept for a while, so the map
    /// grows under load, and a resize then moves pointers rather than whole leases.
    by_token: DashMap<String, Box<Lease>, crate::store::Hashing>,
}

impl Leases {
    /// Record a new lease; returns its token.
    pub fn grant(&self, lease: Lease) -> String {
        let token = format!("lt1.{}", uuid::Uuid::new_v4().simple());
        self.by_token.insert(token.clone(), Box::new(lease));
        token
    }

    /// The lease of `token` if it belongs to `account`. A foreign token is as unknown as a
    /// forged one, so that tokens reveal nothing across accounts.
    pub fn get(&self, token: &str, account: &str) -> Option<Lease> {
        self.by_token
            .get(token)
            .filter(|lease| &*lease.key.function.account == account)
            .map(|lease| Lease::clone(&lease))
    }

    /// The lease of `token`, whatever its account (for the engine's own timers).
    pub fn get_any(&self, token: &str) -> Option<Lease> {
        self.by_token.get(token).map(|lease| Lease::clone(&lease))
    }

    /// Change a lease in place; false if it is gone.
    pub fn update(&self, token: &str, change: impl FnOnce(&mut Lease)) -> bool {
        match self.by_token.get_mut(token) {
            Some(mut lease) => {
                change(&mut lease);
                true
            }
            None => false,
        }
    }

    /// Forget a lease.
    pub fn forget(&self, token: &str) {
        self.by_token.remove(token);
    }
}
