//! Fan-out of committed changes to watchers, and the bounded history of recent changes that
//! lets a function-level watcher resume by sequence number.
//!
//! Every committed event becomes one [`StoredChange`] with a store-wide sequence number. It is
//! appended to the history ring, sent on the all-changes broadcast (function-level watchers
//! filter it), and sent on the invocation's own broadcast if anyone watches that invocation.
//! Broadcasts are bounded: a watcher that falls behind is told it lagged and catches up from
//! stored history (the invocation's events, or the ring) instead of being dropped or skipping.

use std::collections::VecDeque;
use std::sync::Arc;

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

/// Watch fan-out and change history.
#[derive(Debug)]
pub struct Hub {
    history: Mutex<History>,
    all: broadcast::Sender<Arc<StoredChange>>,
    per_invocation: DashMap<InvocationKey, broadcast::Sender<Arc<StoredChange>>, super::Hashing>,
    shutdown: CancellationToken,
}

#[derive(Debug)]
struct History {
    /// Sequence of the newest change (0 before any).
    head: u64,
    changes: VecDeque<Arc<StoredChange>>,
    capacity: usize,
}

impl History {
    /// The oldest sequence a resume can still start after.
    fn oldest_resumable(&self) -> u64 {
        self.changes
            .front()
            .map_or(self.head, |c| c.sequence.saturating_sub(1))
    }
}

impl Hub {
    /// A hub keeping the last `history_capacity` changes for resuming watchers.
    pub fn new(history_capacity: usize, shutdown: CancellationToken) -> Self {
        let (all, _) = broadcast::channel(ALL_CHANNEL_CAPACITY);
        Hub {
            history: Mutex::new(History {
                head: 0,
                changes: VecDeque::with_capacity(history_capacity.min(1 << 16)),
                capacity: history_capacity.max(1),
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
    }

    /// Publish one committed change, numbered by the commit path. Called in commit order.
    pub fn publish(&self, change: StoredChange) {
        crate::metrics::names::count_transition(change.event.status.as_str());
        let mut history = self.history.lock();
        history.head = change.sequence;
        let change = Arc::new(change);
        if history.changes.len() == history.capacity {
            history.changes.pop_front();
        }
        history.changes.push_back(change.clone());
        // Sends happen under the history lock so that every receiver sees sequence order.
        if let Some(tx) = self.per_invocation.get(&change.invocation.key) {
            let _ = tx.send(change.clone());
        }
        let _ = self.all.send(change);
    }

    /// The oldest sequence a watch can resume after.
    pub fn oldest_resumable(&self) -> u64 {
        self.history.lock().oldest_resumable()
    }

    /// Sequence of the newest change.
    pub fn head(&self) -> u64 {
        self.history.lock().head
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
    pub fn subscribe_all(&self) -> broadcast::Receiver<Arc<StoredChange>> {
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
        let skip = history.changes.partition_point(|c| c.sequence <= after);
        Ok(history.changes.range(skip..).cloned().collect())
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

    fn change_for(id: &str) -> (Event, Arc<Invocation>) {
        let key = FunctionKey::new("a", "s", "f").invocation(id);
        let inv = Invocation::accept(key, "LATEST", "".into(), "r", 1);
        (inv.events[0].clone(), Arc::new(inv.without_events()))
    }

    #[test]
    fn history_keeps_the_newest_and_refuses_purged_resume_points() {
        let hub = Hub::new(3, CancellationToken::new());
        for i in 0..5 {
            let (event, invocation) = change_for(&format!("i{i}"));
            hub.publish(StoredChange {
                sequence: i + 1,
                event,
                invocation,
            });
        }
        let kept: Vec<u64> = hub
            .changes_after(2)
            .expect("2 is resumable")
            .iter()
            .map(|c| c.sequence)
            .collect();
        assert_eq!(kept, vec![3, 4, 5]);
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
}
