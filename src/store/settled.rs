//! Counts of ended invocations moved from the open records to the history, by a hash of
//! their key. They let an accept look for a caller's id in the history (which can be a disk
//! read) before it takes the commit lock, and trust that look under the lock unless an
//! invocation whose key shares its count has moved in between.
//!
//! Why a look made early stays true: an invocation is in the open records from its accept
//! until its end is durable; then `settle` puts it in the history, counts it here, and only
//! then removes it from the open records. An accept that reads the count, looks in the
//! history, and under the lock finds the id in neither the open records nor a changed count
//! has missed nothing: a move it did not see in the history shows as a changed count, or
//! leaves the id still open.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::model::InvocationKey;

use super::Hashing;

/// Counts kept (32 KiB). Invocations settle at tens of thousands a second at most, and the
/// window between a look and its commit is short, so a shared count rarely changes in it;
/// when it does, the accept looks again under the lock, as it would without the counts.
const COUNTS: usize = 4096;

/// Per-hash counts of invocations settled into the history.
pub struct SettledCounts {
    counts: Box<[AtomicU64]>,
    hashing: Hashing,
}

impl Default for SettledCounts {
    fn default() -> Self {
        SettledCounts {
            counts: (0..COUNTS).map(|_| AtomicU64::new(0)).collect(),
            hashing: Hashing::default(),
        }
    }
}

impl SettledCounts {
    fn count(&self, key: &InvocationKey) -> &AtomicU64 {
        let slot = usize::try_from(self.hashing.hash_one(key) % COUNTS as u64)
            .expect("a slot below COUNTS fits in usize");
        &self.counts[slot]
    }

    /// The count `key` shares, as of now. Read before looking in the history: the history
    /// then holds every invocation counted so far.
    pub fn read(&self, key: &InvocationKey) -> u64 {
        self.count(key).load(Ordering::Acquire)
    }

    /// `key` is in the history now, and is about to leave the open records.
    pub fn moved(&self, key: &InvocationKey) {
        self.count(key).fetch_add(1, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::FunctionKey;

    #[test]
    fn a_move_changes_the_count_its_key_reads() {
        let counts = SettledCounts::default();
        let key = FunctionKey::new("default", "service", "f").invocation("a");
        let before = counts.read(&key);
        counts.moved(&key);
        assert_eq!(counts.read(&key), before + 1);
        counts.moved(&FunctionKey::new("default", "service", "f").invocation("a"));
        assert_eq!(counts.read(&key), before + 2);
    }
}
