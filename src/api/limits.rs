//! Per-account limits on long-lived calls: open watch streams, open invoke streams and
//! waiting polls. A call takes
//! a slot for as long as it lasts (a watch stream until it ends or its client leaves) and
//! gives it back when its [`Slot`] is dropped; a call over the limit is RESOURCE_EXHAUSTED
//! before it does anything.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use dashmap::DashMap;

use super::ApiError;

/// Limits of the gRPC edge; defaults in [`EdgeLimits::default`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EdgeLimits {
    /// Open WatchInvocation(s) streams per account.
    pub watches_per_account: usize,
    /// PollInvocations calls in flight per account.
    pub polls_per_account: usize,
    /// Open InvokeFunctionStream streams per account.
    pub invoke_streams_per_account: usize,
    /// Largest invoke payload, bytes (FC: 128 KiB).
    pub max_payload_bytes: usize,
    /// Largest return payload a worker may report, bytes.
    pub max_return_payload_bytes: usize,
}

impl Default for EdgeLimits {
    fn default() -> Self {
        EdgeLimits {
            watches_per_account: 100_000,
            polls_per_account: 1_000,
            invoke_streams_per_account: 1_000,
            max_payload_bytes: crate::model::validate::MAX_PAYLOAD_BYTES,
            max_return_payload_bytes: crate::model::validate::MAX_RETURN_PAYLOAD_BYTES,
        }
    }
}

/// Why a call was refused by a limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("account {account} already has {limit} {what} open, the most allowed ({flag}); retry when one ends")]
pub struct LimitReached {
    /// The account.
    pub account: String,
    /// What is counted.
    pub what: &'static str,
    /// The limit.
    pub limit: usize,
    /// The flag that sets it.
    pub flag: &'static str,
}

/// Counts of one kind of call per account, against a limit.
#[derive(Debug)]
pub struct PerAccount {
    what: &'static str,
    flag: &'static str,
    limit: usize,
    counts: DashMap<Arc<str>, usize>,
    /// Slots in use across accounts, for the metrics.
    total: AtomicUsize,
}

impl PerAccount {
    /// `limit` calls of `what` per account, set by `flag`.
    pub fn new(what: &'static str, flag: &'static str, limit: usize) -> Arc<Self> {
        Arc::new(PerAccount {
            what,
            flag,
            limit,
            counts: DashMap::new(),
            total: AtomicUsize::new(0),
        })
    }

    /// Take a slot for `account`, or refuse if it has `limit` already.
    pub fn acquire(self: &Arc<Self>, account: &Arc<str>) -> Result<Slot, ApiError> {
        let mut count = self.counts.entry(account.clone()).or_insert(0);
        if *count >= self.limit {
            return Err(ApiError::Limit(LimitReached {
                account: account.to_string(),
                what: self.what,
                limit: self.limit,
                flag: self.flag,
            }));
        }
        *count += 1;
        self.total.fetch_add(1, Ordering::Relaxed);
        Ok(Slot {
            owner: self.clone(),
            account: account.clone(),
        })
    }

    /// Slots in use across every account.
    pub fn total(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    /// Slots in use by `account`.
    #[cfg(test)]
    pub fn in_use(&self, account: &str) -> usize {
        self.counts.get(account).map_or(0, |c| *c)
    }
}

/// A slot held for one call; given back on drop.
#[derive(Debug)]
pub struct Slot {
    owner: Arc<PerAccount>,
    account: Arc<str>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.owner.total.fetch_sub(1, Ordering::Relaxed);
        self.owner.counts.remove_if_mut(&self.account, |_, count| {
            *count = count.saturating_sub(1);
            *count == 0
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_counted_per_account_and_given_back_on_drop() {
        let watches = PerAccount::new("watch streams", "--max-watches-per-account", 2);
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        let first = watches.acquire(&a).expect("1 of 2");
        let second = watches.acquire(&a).expect("2 of 2");
        let refused = watches.acquire(&a).expect_err("3 of 2");
        assert!(refused.to_string().contains("--max-watches-per-account"));
        watches
            .acquire(&b)
            .expect("another account has its own slots");
        drop(first);
        let _third = watches.acquire(&a).expect("a slot came back");
        drop(second);
        assert_eq!(watches.in_use("a"), 1);
        assert_eq!(watches.total(), 1, "b's slot was given back at once");
    }
}
