//! Leases: which worker holds which attempt of which invocation, until when.
//!
//! A token is 128 random bits, unguessable, and maps to one attempt of one invocation of one
//! account. The token alone proves nothing beyond that: every heartbeat or completion is also
//! checked against the invocation's current attempt and status (fencing), so a stale lease can
//! never overwrite a newer outcome.

use std::collections::VecDeque;
use std::sync::Arc;

use dashmap::DashMap;
use parking_lot::Mutex;
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

/// Most finished leases remembered at once (a few hundred bytes each): past it, the oldest
/// are forgotten before their window ends, so that a long burst cannot hold unbounded memory.
const MAX_FINISHED_REMEMBERED: usize = 1_000_000;

/// Every live or recently finished lease by token.
#[derive(Debug)]
pub struct Leases {
    /// Boxed, as the store's records are: finished leases are kept for a while, so the map
    /// grows under load, and a resize then moves pointers rather than whole leases.
    by_token: DashMap<String, Box<Lease>, crate::store::Hashing>,
    /// The active lease of each invocation a worker holds: at most one per open invocation,
    /// removed when the lease ends.
    active: DashMap<InvocationKey, String, crate::store::Hashing>,
    /// Finished (completed or expired) leases in the order they finished, each with when it
    /// is to be forgotten. Every lease is kept for the same window, so this is also the order
    /// they are due in, and one timer for the oldest serves them all where a timer per lease
    /// cost an ordered-map entry per completion.
    finished: Mutex<VecDeque<(Instant, String)>>,
    /// Most finished leases kept.
    max_finished: usize,
}

impl Default for Leases {
    fn default() -> Self {
        Leases::remembering(MAX_FINISHED_REMEMBERED)
    }
}

impl Leases {
    /// Record a new lease; returns its token.
    pub fn grant(&self, lease: Lease) -> String {
        let token = format!("lt1.{}", uuid::Uuid::new_v4().simple());
        if lease.state == LeaseState::Active {
            self.active.insert(lease.key.clone(), token.clone());
        }
        self.by_token.insert(token.clone(), Box::new(lease));
        token
    }

    /// The active lease on `key`, with its token.
    pub fn active_on(&self, key: &InvocationKey) -> Option<(String, Lease)> {
        let token = self.active.get(key)?.clone();
        let lease = self
            .by_token
            .get(&token)
            .filter(|lease| lease.state == LeaseState::Active)?;
        Some((token, Lease::clone(&lease)))
    }

    /// End the lease of `token` in `state`; true if it was active until now (the caller
    /// then retires it, once).
    pub fn end(&self, token: &str, state: LeaseState) -> bool {
        let Some(mut lease) = self.by_token.get_mut(token) else {
            return false;
        };
        let was_active = lease.state == LeaseState::Active;
        let key = lease.key.clone();
        lease.state = state;
        drop(lease);
        if was_active {
            self.active.remove_if(&key, |_, active| active == token);
        }
        was_active
    }

    /// How many leases are active.
    pub fn active_count(&self) -> usize {
        self.active.len()
    }

    /// How many leases are kept, active or finished.
    pub fn kept_count(&self) -> usize {
        self.by_token.len()
    }

    /// The lease of `token` if it belongs to `account`. A foreign token is as unknown as a
    /// forged one, so that tokens reveal nothing across accounts.
    pub fn get(&self, token: &str, account: &str) -> Option<Lease> {
        self.by_token
            .get(token)
            .filter(|lease| &*lease.key.function.account == account)
            .map(|lease| Lease::clone(&lease))
    }

    /// The lease of `token`, whatever its account.
    #[cfg(test)]
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

    /// Leases that remember at most `max_finished` finished ones.
    pub fn remembering(max_finished: usize) -> Self {
        Leases {
            by_token: DashMap::default(),
            active: DashMap::default(),
            finished: Mutex::new(VecDeque::new()),
            max_finished: max_finished.max(1),
        }
    }

    /// A lease has finished: keep it until `forget_at` (to answer a repeated completion) or
    /// until more than the most remembered have finished after it. Returns when the caller
    /// must have [`Leases::forget_due`] run, when no earlier call is still waiting for it.
    pub fn retire(&self, token: String, forget_at: Instant) -> Option<Instant> {
        let mut finished = self.finished.lock();
        let first = finished.is_empty();
        finished.push_back((forget_at, token));
        while finished.len() > self.max_finished {
            self.forget_oldest(&mut finished);
        }
        first.then_some(forget_at)
    }

    /// Forget the finished leases whose time has come by `now`; returns when to run again,
    /// if any are left.
    pub fn forget_due(&self, now: Instant) -> Option<Instant> {
        let mut finished = self.finished.lock();
        while let Some((at, _)) = finished.front() {
            if *at > now {
                return Some(*at);
            }
            self.forget_oldest(&mut finished);
        }
        None
    }

    fn forget_oldest(&self, finished: &mut VecDeque<(Instant, String)>) {
        if let Some((_, token)) = finished.pop_front() {
            self.by_token.remove(&token);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::model::FunctionKey;

    fn grant(leases: &Leases) -> String {
        let now = Instant::now();
        leases.grant(Lease {
            key: FunctionKey::new("a", "s", "f").invocation("i"),
            attempt: 1,
            started: now,
            deadline: now,
            deadline_ms: 0,
            state: LeaseState::Completed(Outcome::Stopped),
        })
    }

    #[test]
    fn finished_leases_are_forgotten_in_order_once_due() {
        let leases = Leases::default();
        let start = Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        let (first, second, third) = (grant(&leases), grant(&leases), grant(&leases));
        // Only the first into an empty queue asks for a run; the others wait on it.
        assert_eq!(leases.retire(first.clone(), at(10)), Some(at(10)));
        assert_eq!(leases.retire(second.clone(), at(20)), None);
        assert_eq!(leases.retire(third.clone(), at(30)), None);
        assert_eq!(leases.forget_due(at(5)), Some(at(10)), "nothing due yet");
        assert_eq!(leases.by_token.len(), 3);
        assert_eq!(leases.forget_due(at(20)), Some(at(30)));
        assert!(leases.get_any(&first).is_none());
        assert!(leases.get_any(&second).is_none());
        assert!(leases.get_any(&third).is_some());
        assert_eq!(leases.forget_due(at(30)), None, "all forgotten");
        assert!(leases.by_token.is_empty());
        // An empty queue asks again.
        let fourth = grant(&leases);
        assert_eq!(leases.retire(fourth, at(40)), Some(at(40)));
    }

    #[test]
    fn past_the_most_remembered_the_oldest_are_forgotten_at_once() {
        let leases = Leases::remembering(2);
        let later = Instant::now() + Duration::from_secs(600);
        let tokens: Vec<String> = (0..3).map(|_| grant(&leases)).collect();
        let live = grant(&leases);
        for token in &tokens {
            leases.retire(token.clone(), later);
        }
        assert!(
            leases.get_any(&tokens[0]).is_none(),
            "the oldest went early"
        );
        assert!(leases.get_any(&tokens[1]).is_some());
        assert!(leases.get_any(&tokens[2]).is_some());
        assert!(
            leases.get_any(&live).is_some(),
            "a live lease is never counted"
        );
    }
}
