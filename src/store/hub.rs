//! Fan-out of committed changes to watchers, and the bounded history of recent changes that
//! lets a function-level watcher resume by sequence number.
//!
//! The history is bounded twice, by changes and by bytes, because each kept change holds a
//! snapshot of its invocation, payloads included: at the payload limits a count alone would let
//! it hold gigabytes that no other bound (`--cache-size` included) sees.
//!
//! Every committed event becomes one [`StoredChange`] with a store-wide sequence number. It is
//! appended to the history ring, sent on the all-changes broadcast (function-level watchers
//! filter it), and sent on the invocation's own broadcast if anyone watches that invocation.
//! Broadcasts are bounded: a watcher that falls behind is told it lagged and catches up from
//! stored history (the invocation's events, or the ring) instead of being dropped or skipping.
//! The all-changes broadcast carries weak references: its slots keep their last values until
//! overwritten, and strong ones would let it hold thousands of changes' payloads past the
//! ring's byte bound. A change the ring has already dropped cannot be upgraded, and its
//! receiver catches up from the ring as if it had lagged.

use std::collections::VecDeque;
use std::sync::{Arc, Weak};

use dashmap::DashMap;
use parking_lot::Mutex;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::model::{Event, Invocation, InvocationKey};

use super::error::StoreError;

/// Capacity of one invocation's broadcast.
const INVOCATION_CHANNEL_CAPACITY: usize = 64;
/// Capacity of the all-changes broadcast.
const ALL_CHANNEL_CAPACITY: usize = 4_096;
/// A kept change's own allocations besides its snapshot's: the change and the event.
const CHANGE_OVERHEAD_BYTES: usize = 96;

/// How much recent change history is kept for resuming watchers: the oldest changes go when
/// either bound is passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchHistoryLimit {
    /// Changes kept at most.
    pub changes: usize,
    /// Bytes the kept changes hold at most, as [`StoredChange::approximate_bytes`] counts them.
    pub bytes: u64,
}

impl WatchHistoryLimit {
    /// At most `changes` changes, within the default bytes.
    pub fn changes(changes: usize) -> Self {
        WatchHistoryLimit {
            changes,
            bytes: super::DEFAULT_WATCH_HISTORY_BYTES,
        }
    }
}

impl Default for WatchHistoryLimit {
    fn default() -> Self {
        WatchHistoryLimit::changes(super::DEFAULT_WATCH_HISTORY)
    }
}

/// One committed event and the invocation as it stood right after it.
#[derive(Debug, Clone)]
pub struct StoredChange {
    /// Store-wide sequence number; 0 for an event replayed from an invocation's history.
    pub sequence: u64,
    /// The event.
    pub event: Event,
    /// The invocation after the event, without events.
    pub invocation: Arc<Invocation>,
}

impl StoredChange {
    /// About the bytes keeping this change holds. Payloads shared with other changes of the
    /// same invocation are counted in each, so this errs high: the bound it serves holds.
    pub fn approximate_bytes(&self) -> u64 {
        let bytes = CHANGE_OVERHEAD_BYTES
            + self.event.detail.len()
            + super::history::approximate_bytes(&self.invocation);
        u64::try_from(bytes).expect("a usize fits in a u64")
    }
}

/// Watch fan-out and change history.
#[derive(Debug)]
pub struct Hub {
    history: Mutex<History>,
    /// Each change's sequence, and the change while the ring keeps it.
    all: broadcast::Sender<(u64, Weak<StoredChange>)>,
    per_invocation: DashMap<InvocationKey, broadcast::Sender<Arc<StoredChange>>, super::Hashing>,
    shutdown: CancellationToken,
}

#[derive(Debug)]
struct History {
    /// Sequence of the newest change (0 before any).
    head: u64,
    /// Each kept change with its [`StoredChange::approximate_bytes`], counted once on entry.
    changes: VecDeque<(Arc<StoredChange>, u64)>,
    /// The sum of the kept changes' bytes.
    bytes: u64,
    limit: WatchHistoryLimit,
}

impl History {
    /// The oldest sequence a resume can still start after.
    fn oldest_resumable(&self) -> u64 {
        self.changes
            .front()
            .map_or(self.head, |(c, _)| c.sequence.saturating_sub(1))
    }

    /// Keep `change`, dropping the oldest changes until both bounds hold again. The newest
    /// change is kept even alone past the byte bound, so that the head stays resumable.
    fn push(&mut self, change: Arc<StoredChange>) {
        let bytes = change.approximate_bytes();
        self.bytes += bytes;
        self.changes.push_back((change, bytes));
        while self.changes.len() > 1
            && (self.changes.len() > self.limit.changes || self.bytes > self.limit.bytes)
        {
            let (_, dropped) = self
                .changes
                .pop_front()
                .expect("more than one change is kept");
            self.bytes -= dropped;
        }
    }
}

impl Hub {
    /// A hub keeping the last changes within `limit` for resuming watchers.
    pub fn new(limit: WatchHistoryLimit, shutdown: CancellationToken) -> Self {
        let (all, _) = broadcast::channel(ALL_CHANNEL_CAPACITY);
        Hub {
            history: Mutex::new(History {
                head: 0,
                changes: VecDeque::with_capacity(limit.changes.min(1 << 16)),
                bytes: 0,
                limit: WatchHistoryLimit {
                    changes: limit.changes.max(1),
                    bytes: limit.bytes,
                },
            }),
            all,
            per_invocation: DashMap::default(),
            shutdown,
        }
    }

    /// Continue numbering after `head` (the last sequence handed out before a restart).
    /// Resuming from before it is refused: the history of earlier changes is not kept.
    pub fn restore_head(&self, head: u64) {
        let mut history = self.history.lock();
        history.head = head;
        history.changes.clear();
        history.bytes = 0;
    }

    /// Publish one committed change, numbered by the commit path. Called in commit order.
    pub fn publish(&self, change: StoredChange) {
        crate::metrics::names::count_transition(change.event.status.as_str());
        let mut history = self.history.lock();
        history.head = change.sequence;
        let change = Arc::new(change);
        history.push(change.clone());
        // Sends happen under the history lock so that every receiver sees sequence order.
        if let Some(tx) = self.per_invocation.get(&change.invocation.key) {
            let _ = tx.send(change.clone());
        }
        let _ = self.all.send((change.sequence, Arc::downgrade(&change)));
    }

    /// The oldest sequence a watch can resume after.
    pub fn oldest_resumable(&self) -> u64 {
        self.history.lock().oldest_resumable()
    }

    /// Sequence of the newest change.
    pub fn head(&self) -> u64 {
        self.history.lock().head
    }

    /// How many changes are kept for resuming, and about the bytes they hold.
    pub fn kept(&self) -> (usize, u64) {
        let history = self.history.lock();
        (history.changes.len(), history.bytes)
    }

    /// Subscribe to one invocation's live changes.
    pub fn subscribe_invocation(
        &self,
        key: &InvocationKey,
    ) -> broadcast::Receiver<Arc<StoredChange>> {
        self.per_invocation
            .entry(key.clone())
            .or_insert_with(|| broadcast::channel(INVOCATION_CHANNEL_CAPACITY).0)
            .subscribe()
    }

    /// Drop the invocation's channel when the caller's receiver is the last one. Called by a
    /// watcher that is about to drop its receiver.
    pub fn release_invocation(&self, key: &InvocationKey) {
        self.per_invocation
            .remove_if(key, |_, tx| tx.receiver_count() <= 1);
    }

    /// How many invocations have a live channel.
    pub fn watched_invocations(&self) -> usize {
        self.per_invocation.len()
    }

    /// Subscribe to every change.
    pub fn subscribe_all(&self) -> broadcast::Receiver<(u64, Weak<StoredChange>)> {
        self.all.subscribe()
    }

    /// Kept changes with sequence > `after`, or `HistoryPurged` if some were dropped.
    pub fn changes_after(&self, after: u64) -> Result<Vec<Arc<StoredChange>>, StoreError> {
        let history = self.history.lock();
        let oldest = history.oldest_resumable();
        if after < oldest {
            return Err(StoreError::HistoryPurged {
                requested: after,
                oldest,
            });
        }
        let skip = history
            .changes
            .partition_point(|(c, _)| c.sequence <= after);
        Ok(history
            .changes
            .range(skip..)
            .map(|(c, _)| c.clone())
            .collect())
    }

    /// Resolves when the server starts shutting down.
    pub fn shutdown(&self) -> &CancellationToken {
        &self.shutdown
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{FunctionKey, Status};

    fn stored(sequence: u64, payload: &str) -> StoredChange {
        let key = FunctionKey::new("a", "s", "f").invocation(&format!("i{sequence:03}"));
        let invocation = Invocation::accept(key, "LATEST", payload.into(), "r", 1);
        StoredChange {
            sequence,
            event: invocation.events[0].clone(),
            invocation: Arc::new(invocation.without_events()),
        }
    }

    fn publish_with_payload(hub: &Hub, sequence: u64, payload: &str) {
        hub.publish(stored(sequence, payload));
    }

    fn sequences_after(hub: &Hub, after: u64) -> Vec<u64> {
        hub.changes_after(after)
            .expect("resumable")
            .iter()
            .map(|c| c.sequence)
            .collect()
    }

    #[test]
    fn history_keeps_the_newest_and_refuses_purged_resume_points() {
        let hub = Hub::new(WatchHistoryLimit::changes(3), CancellationToken::new());
        for sequence in 1..=5 {
            publish_with_payload(&hub, sequence, "");
        }
        assert_eq!(sequences_after(&hub, 2), vec![3, 4, 5]);
        assert_eq!(hub.changes_after(5).expect("head").len(), 0);
        assert!(matches!(
            hub.changes_after(1),
            Err(StoreError::HistoryPurged {
                requested: 1,
                oldest: 2
            })
        ));
        assert_eq!(
            hub.changes_after(4).expect("4")[0].event.status,
            Status::Enqueued
        );
    }

    #[test]
    fn history_drops_the_oldest_changes_past_its_bytes() {
        let payload = "x".repeat(10_000);
        let one = stored(1, &payload).approximate_bytes();
        assert!(one > 10_000, "the payload is counted: {one}");
        let limit = WatchHistoryLimit {
            changes: 1_000,
            bytes: 3 * one + one / 2,
        };
        let hub = Hub::new(limit, CancellationToken::new());
        for sequence in 1..=10 {
            publish_with_payload(&hub, sequence, &payload);
        }
        assert_eq!(hub.kept(), (3, 3 * one));
        assert_eq!(sequences_after(&hub, 7), vec![8, 9, 10]);
        assert!(matches!(
            hub.changes_after(6),
            Err(StoreError::HistoryPurged {
                requested: 6,
                oldest: 7
            })
        ));
    }

    #[test]
    fn history_keeps_the_newest_change_even_past_its_bytes() {
        let hub = Hub::new(
            WatchHistoryLimit {
                changes: 1_000,
                bytes: 1,
            },
            CancellationToken::new(),
        );
        publish_with_payload(&hub, 1, "small");
        publish_with_payload(&hub, 2, &"x".repeat(50_000));
        let (changes, bytes) = hub.kept();
        assert_eq!(changes, 1);
        assert!(bytes > 50_000);
        assert_eq!(hub.oldest_resumable(), 1);
        assert_eq!(hub.changes_after(1).expect("1 is resumable")[0].sequence, 2);
        hub.restore_head(2);
        assert_eq!(hub.kept(), (0, 0));
    }

    #[test]
    fn the_broadcast_does_not_keep_what_the_ring_dropped() {
        let hub = Hub::new(WatchHistoryLimit::changes(2), CancellationToken::new());
        let mut unread = hub.subscribe_all();
        publish_with_payload(&hub, 1, &"x".repeat(10_000));
        let first = Arc::downgrade(&hub.changes_after(0).expect("kept")[0].invocation);
        for sequence in 2..=3 {
            publish_with_payload(&hub, sequence, "");
        }
        assert!(
            first.upgrade().is_none(),
            "the snapshot and its payload are freed once the ring drops the change"
        );
        let (sequence, change) = unread.try_recv().expect("the broadcast still has a slot");
        assert_eq!(sequence, 1);
        assert!(change.upgrade().is_none());
    }
}
