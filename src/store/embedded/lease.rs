//! Leases: which worker holds which attempt of which invocation, until when.
//!
//! Tokens are signed under a key drawn when the process starts (see
//! [`crate::store::lease_token`]). Only the leases workers hold are kept (one per invocation a
//! worker holds); once an attempt ends, a token for it is answered from the invocation's own
//! record (see the engine's repeated completions), for as long as the record is kept. Tokens
//! of another process (before a restart) do not verify, as that process's leases died with
//! it.
//!
//! The token alone proves nothing beyond that: every heartbeat or completion is also checked
//! against the invocation's current attempt and status (fencing), so a stale lease can never
//! overwrite a newer outcome.

use crate::model::InvocationKey;
use crate::store::backend::Lease;
use crate::store::lease_token::LeaseSigner;
use crate::store::Hashing;
use dashmap::DashMap;

/// The leases workers hold, by invocation, and the key their tokens are signed with.
pub struct Leases {
    active: DashMap<InvocationKey, Lease, Hashing>,
    signer: LeaseSigner,
}

impl std::fmt::Debug for Leases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leases")
            .field("active", &self.active.len())
            .finish_non_exhaustive()
    }
}

impl Default for Leases {
    fn default() -> Self {
        Leases {
            active: DashMap::default(),
            signer: LeaseSigner::random(),
        }
    }
}

impl Leases {
    /// Record that a worker holds `lease` on `key` (replacing a lease on an earlier attempt);
    /// returns its token.
    pub fn grant(&self, key: InvocationKey, lease: Lease) -> String {
        let token = self.signer.token(&key, lease.attempt);
        self.active.insert(key, lease);
        token
    }

    /// The attempt `token` covers, if this process made it for an invocation of `account` (a
    /// foreign token is as unknown as a forged one).
    pub fn verify(&self, token: &str, account: &str) -> Option<(InvocationKey, u32)> {
        self.signer.verify(token, account)
    }

    /// The lease a worker holds on attempt `attempt` of `key`.
    pub fn active(&self, key: &InvocationKey, attempt: u32) -> Option<Lease> {
        self.active
            .get(key)
            .filter(|lease| lease.attempt == attempt)
            .map(|lease| *lease)
    }

    /// Move the deadline of the lease on attempt `attempt` of `key`; false if it is not held.
    pub fn extend(&self, key: &InvocationKey, attempt: u32, deadline_ms: i64) -> bool {
        match self.active.get_mut(key) {
            Some(mut lease) if lease.attempt == attempt => {
                lease.deadline_ms = deadline_ms;
                true
            }
            _ => false,
        }
    }

    /// The lease on attempt `attempt` of `key` ended; true if it was held until now.
    pub fn end(&self, key: &InvocationKey, attempt: u32) -> bool {
        self.active
            .remove_if(key, |_, lease| lease.attempt == attempt)
            .is_some()
    }

    /// How many leases workers hold.
    pub fn active_count(&self) -> usize {
        self.active.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::FunctionKey;

    fn lease(attempt: u32) -> Lease {
        Lease {
            attempt,
            started_ms: 1_000,
            deadline_ms: 31_000,
        }
    }

    #[test]
    fn a_token_names_its_attempt_and_cannot_be_forged_altered_or_used_by_another_account() {
        let leases = Leases::default();
        let key = FunctionKey::new("acct", "svc", "fn").invocation("job-1");
        let token = leases.grant(key.clone(), lease(3));
        assert_eq!(leases.verify(&token, "acct"), Some((key.clone(), 3)));
        assert_eq!(leases.verify(&token, "other"), None, "another account's");
        assert_eq!(
            Leases::default().verify(&token, "acct"),
            None,
            "another process's"
        );
        let mut altered = token.clone().into_bytes();
        let last = altered.len() - 1;
        altered[last] = if altered[last] == b'A' { b'B' } else { b'A' };
        let altered = String::from_utf8(altered).expect("ascii");
        for forged in [
            altered.as_str(),
            "lt2.",
            "lt2.!!!",
            "lt1.00000000000000000000000000000000",
            "",
        ] {
            assert_eq!(leases.verify(forged, "acct"), None, "{forged}");
        }
    }

    #[test]
    fn a_held_lease_is_extended_and_ended_for_its_own_attempt_only() {
        let leases = Leases::default();
        let key = FunctionKey::new("a", "s", "f").invocation("i");
        leases.grant(key.clone(), lease(1));
        assert!(!leases.extend(&key, 2, 7), "not that attempt");
        assert!(leases.extend(&key, 1, 7));
        assert_eq!(leases.active(&key, 1).map(|l| l.deadline_ms), Some(7));
        assert!(leases.active(&key, 2).is_none());
        assert!(!leases.end(&key, 2));
        assert!(leases.end(&key, 1));
        assert!(!leases.end(&key, 1), "ended once");
        assert_eq!(leases.active_count(), 0);
    }
}
