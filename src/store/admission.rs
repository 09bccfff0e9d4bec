//! Which records read from the data directory the record cache takes: those read a second
//! time while the first read is still remembered. A record read once (one page of an export,
//! a reader walking old history at random) is not cached: admitting it would evict a record
//! that finished or was read moments ago, and would cost an insertion and an eviction for a
//! record that is seldom asked for again. A record someone polls is cached from its second
//! read on.
//!
//! The first reads are remembered as hashes in a table of fixed size, one per slot, where a
//! later read of another record may take the slot: how long a first read is remembered
//! shrinks as reads of distinct records grow (at 20,000 one-off reads a second, a table of
//! 128 Ki slots remembers one for ~6 s).

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};

use foldhash::fast::FixedState;

use crate::model::InvocationKey;

/// Fewest slots kept, whatever the cache's size.
const MIN_SLOTS: usize = 1024;

/// Slots per record the cache holds at its estimated size: first reads are remembered for
/// about four times as many distinct records as the cache keeps.
const SLOTS_PER_CACHED_RECORD: usize = 4;

/// The first reads of records not in the cache, remembered for a while.
pub struct SecondReadAdmission {
    /// A slot holds the hash of a record read once (with its top bit set, so that 0 means
    /// empty), or 0.
    slots: Box<[AtomicU64]>,
    /// Seeded the same in every process, unlike the maps' hashing: which records share a
    /// slot is then the same from run to run. Keys chosen to share one only keep each other
    /// out of the cache, which costs their reader a read from disk, not anyone else.
    hashing: FixedState,
}

impl SecondReadAdmission {
    /// Remembers first reads for a cache that holds about `cached_records` records. The
    /// table holds 8 bytes per slot: 1 MiB for the default cache.
    pub fn new(cached_records: usize) -> Self {
        let slots = cached_records
            .saturating_mul(SLOTS_PER_CACHED_RECORD)
            .max(MIN_SLOTS)
            .checked_next_power_of_two()
            .unwrap_or(usize::MAX / 2 + 1);
        SecondReadAdmission {
            slots: (0..slots).map(|_| AtomicU64::new(0)).collect(),
            hashing: FixedState::default(),
        }
    }

    /// Whether the record `key`, just read from the data directory, should be cached: true if
    /// its first read is still remembered (and forgets it), false if this is the first (and
    /// remembers it).
    pub fn admit(&self, key: &InvocationKey) -> bool {
        let hash = self.hashing.hash_one(key) | (1 << 63);
        // The length is a power of two: the mask keeps the hash's low bits, which the marker
        // bit leaves alone.
        let index = (hash as usize) & (self.slots.len() - 1);
        let slot = &self.slots[index];
        // Two readers of one record may both see their read as the first, or both as the
        // second: either costs at most one more read from disk or one more insertion.
        if slot.load(Ordering::Relaxed) == hash {
            slot.store(0, Ordering::Relaxed);
            true
        } else {
            slot.store(hash, Ordering::Relaxed);
            false
        }
    }

    /// Bytes the table holds.
    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.slots.len() * std::mem::size_of::<AtomicU64>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::FunctionKey;

    fn key(id: &str) -> InvocationKey {
        InvocationKey {
            function: FunctionKey::new("acct", "svc", "fn"),
            id: id.into(),
        }
    }

    #[test]
    fn a_record_is_admitted_on_its_second_read() {
        let admission = SecondReadAdmission::new(100);
        assert!(!admission.admit(&key("a")), "first read");
        assert!(admission.admit(&key("a")), "second read");
        // Admitted, it is forgotten: were it evicted later, it starts over.
        assert!(!admission.admit(&key("a")));
    }

    #[test]
    fn records_read_once_are_not_admitted() {
        let admission = SecondReadAdmission::new(100);
        let admitted = (0..10_000)
            .filter(|n| admission.admit(&key(&format!("id-{n}"))))
            .count();
        assert_eq!(admitted, 0);
    }

    #[test]
    fn first_reads_spread_over_every_part_of_the_table() {
        let admission = SecondReadAdmission::new(0);
        for n in 0..20_000 {
            admission.admit(&key(&format!("id-{n}")));
        }
        let used = |parity: usize| {
            (parity..admission.slots.len())
                .step_by(2)
                .filter(|&i| admission.slots[i].load(Ordering::Relaxed) != 0)
                .count()
        };
        // 20,000 hashes over 1,024 slots fill every one but by a tiny chance.
        assert!(used(0) > 500 && used(1) > 500, "{} {}", used(0), used(1));
    }

    #[test]
    fn the_table_is_bounded_by_the_cache_size_not_by_reads() {
        let small = SecondReadAdmission::new(0);
        assert_eq!(small.bytes(), MIN_SLOTS * 8);
        let sized = SecondReadAdmission::new(32 * 1024);
        assert_eq!(sized.bytes(), 128 * 1024 * 8);
        for n in 0..100_000 {
            sized.admit(&key(&format!("id-{n}")));
        }
        assert_eq!(sized.bytes(), 128 * 1024 * 8);
    }
}
