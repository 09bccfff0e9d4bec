//! Watch cursors: subscribe first, replay stored history, then tail live changes, skipping
//! what was already delivered. The API layer pulls items with `next` and only converts them.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::broadcast::error::RecvError;
use tokio::sync::broadcast::Receiver;

use crate::model::{FunctionKey, InvocationKey};

use super::error::StoreError;
use super::hub::StoredChange;
use super::Store;

/// Follows one invocation's events from a resume point to its terminal event.
pub struct InvocationWatch {
    store: Arc<Store>,
    key: InvocationKey,
    rx: Receiver<Arc<StoredChange>>,
    pending: VecDeque<Arc<StoredChange>>,
    last_event_id: u64,
    finished: bool,
}

impl InvocationWatch {
    /// Start watching `key` after event `from_event_id`. NOT_FOUND if it does not exist.
    pub(super) fn start(
        store: Arc<Store>,
        key: InvocationKey,
        from_event_id: u64,
    ) -> Result<Self, StoreError> {
        // Subscribe before reading history: an event committed in between is then seen twice
        // (and de-duplicated by id) rather than missed.
        let rx = store.hub.subscribe_invocation(&key);
        let mut watch = InvocationWatch {
            store,
            key,
            rx,
            pending: VecDeque::new(),
            last_event_id: from_event_id,
            finished: false,
        };
        if !watch.replay_history() {
            return Err(StoreError::InvocationNotFound(watch.key.clone()));
        }
        Ok(watch)
    }

    /// Queue the stored events after the last delivered one; false if the record is gone.
    fn replay_history(&mut self) -> bool {
        let Some(record) = self.store.records.get(&self.key) else {
            return false;
        };
        let invocation = Arc::new(record.without_events());
        for event in record.events_after(self.last_event_id) {
            self.pending.push_back(Arc::new(StoredChange {
                sequence: 0,
                event: event.clone(),
                invocation: invocation.clone(),
            }));
        }
        true
    }

    /// The next event, `None` once the terminal event was delivered, or an error that ends
    /// the stream (shutdown, or the record was purged under the watcher).
    pub async fn next(&mut self) -> Option<Result<Arc<StoredChange>, StoreError>> {
        loop {
            if self.finished {
                return None;
            }
            if let Some(change) = self.pending.pop_front() {
                if change.event.event_id <= self.last_event_id {
                    continue;
                }
                self.last_event_id = change.event.event_id;
                self.finished = change.event.status.is_terminal();
                return Some(Ok(change));
            }
            let shutdown = self.store.hub.shutdown().clone();
            let received = tokio::select! {
                biased;
                _ = shutdown.cancelled() => {
                    self.finished = true;
                    return Some(Err(StoreError::ShuttingDown));
                }
                received = self.rx.recv() => received,
            };
            match received {
                Ok(change) => self.pending.push_back(change),
                Err(RecvError::Lagged(_)) | Err(RecvError::Closed) => {
                    if !self.replay_history() {
                        self.finished = true;
                        return Some(Err(StoreError::InvocationNotFound(self.key.clone())));
                    }
                }
            }
        }
    }
}

impl Drop for InvocationWatch {
    fn drop(&mut self) {
        self.store.hub.release_invocation(&self.key);
    }
}

/// Which invocations a changes watch follows.
#[derive(Debug, Clone)]
pub struct WatchScope {
    /// The account.
    pub account: Arc<str>,
    /// Only this service (None: all).
    pub service: Option<Arc<str>>,
    /// Only this function (None: all of the service).
    pub function: Option<Arc<str>>,
}

impl WatchScope {
    fn covers(&self, key: &FunctionKey) -> bool {
        key.account == self.account
            && self.service.as_ref().is_none_or(|s| *s == key.service)
            && self.function.as_ref().is_none_or(|f| *f == key.function)
    }
}

/// Follows the status changes of every invocation in a scope, in sequence order.
pub struct ChangesWatch {
    store: Arc<Store>,
    scope: WatchScope,
    rx: Receiver<Arc<StoredChange>>,
    pending: VecDeque<Arc<StoredChange>>,
    last_sequence: u64,
    finished: bool,
}

impl ChangesWatch {
    /// Start after `from_sequence`, or from now on when it is 0.
    pub(super) fn start(
        store: Arc<Store>,
        scope: WatchScope,
        from_sequence: u64,
    ) -> Result<Self, StoreError> {
        let rx = store.hub.subscribe_all();
        let mut pending = VecDeque::new();
        let last_sequence = if from_sequence == 0 {
            store.hub.head()
        } else {
            pending.extend(store.hub.changes_after(from_sequence)?);
            from_sequence
        };
        Ok(ChangesWatch {
            store,
            scope,
            rx,
            pending,
            last_sequence,
            finished: false,
        })
    }

    /// The next change in scope, or an error that ends the stream (shutdown, or the watcher
    /// fell behind further than the kept history).
    pub async fn next(&mut self) -> Option<Result<Arc<StoredChange>, StoreError>> {
        loop {
            if self.finished {
                return None;
            }
            if let Some(change) = self.pending.pop_front() {
                if change.sequence <= self.last_sequence {
                    continue;
                }
                self.last_sequence = change.sequence;
                if self.scope.covers(&change.invocation.key.function) {
                    return Some(Ok(change));
                }
                continue;
            }
            let shutdown = self.store.hub.shutdown().clone();
            let received = tokio::select! {
                biased;
                _ = shutdown.cancelled() => {
                    self.finished = true;
                    return Some(Err(StoreError::ShuttingDown));
                }
                received = self.rx.recv() => received,
            };
            match received {
                Ok(change) => self.pending.push_back(change),
                Err(RecvError::Lagged(_)) | Err(RecvError::Closed) => {
                    match self.store.hub.changes_after(self.last_sequence) {
                        Ok(changes) => self.pending.extend(changes),
                        Err(err) => {
                            self.finished = true;
                            return Some(Err(err));
                        }
                    }
                }
            }
        }
    }
}
