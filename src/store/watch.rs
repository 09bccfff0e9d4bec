//! Watch cursors: subscribe first, replay stored history, then tail live changes, skipping
//! what was already delivered. The API layer pulls items with `next` and only converts them.

use std::collections::VecDeque;
use std::sync::{Arc, Weak};

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
        if !watch.replay_history()? {
            return Err(StoreError::InvocationNotFound(watch.key.clone()));
        }
        Ok(watch)
    }

    /// Queue the stored events after the last delivered one; false if the record is gone.
    fn replay_history(&mut self) -> Result<bool, StoreError> {
        let last_event_id = self.last_event_id;
        let replayed = self.store.read(&self.key, |record| {
            // Past the last event of an ended invocation there is nothing more to say (see
            // below); past that of one still open, the watch would skip the events before its
            // resume point and never see the end.
            if last_event_id > record.last_event_id() && !record.status.is_terminal() {
                return Err(StoreError::EventResumePointAhead {
                    requested: last_event_id,
                    last: record.last_event_id(),
                });
            }
            let invocation = Arc::new(record.without_events());
            let events = record.events_after(last_event_id);
            // Resumed at the terminal event: there is nothing more to say.
            let finished = events.is_empty() && record.status.is_terminal();
            let changes: Vec<Arc<StoredChange>> = events
                .iter()
                .map(|event| {
                    Arc::new(StoredChange {
                        sequence: 0,
                        event: event.clone(),
                        invocation: invocation.clone(),
                    })
                })
                .collect();
            Ok((finished, changes))
        })?;
        let Some(replayed) = replayed else {
            return Ok(false);
        };
        let (finished, changes) = replayed?;
        self.finished |= finished;
        self.pending.extend(changes);
        Ok(true)
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
                Err(RecvError::Lagged(_)) | Err(RecvError::Closed) => match self.replay_history() {
                    Ok(true) => {}
                    Ok(false) => {
                        self.finished = true;
                        return Some(Err(StoreError::InvocationNotFound(self.key.clone())));
                    }
                    Err(err) => {
                        self.finished = true;
                        return Some(Err(err));
                    }
                },
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

/// Where a changes watch starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResumeFrom {
    /// With the next change committed.
    Now,
    /// With the oldest change still kept.
    Oldest,
    /// With the change after this sequence number.
    After(u64),
}

/// Follows the status changes of every invocation in a scope, in sequence order.
pub struct ChangesWatch {
    store: Arc<Store>,
    scope: WatchScope,
    rx: Receiver<(u64, Weak<StoredChange>)>,
    pending: VecDeque<Arc<StoredChange>>,
    /// The last change delivered or passed over as out of scope.
    last_sequence: u64,
    finished: bool,
}

impl ChangesWatch {
    /// Start at `from`.
    pub(super) fn start(
        store: Arc<Store>,
        scope: WatchScope,
        from: ResumeFrom,
    ) -> Result<Self, StoreError> {
        let rx = store.hub.subscribe_all();
        let head = store.hub.head();
        let mut pending = VecDeque::new();
        let last_sequence = match from {
            ResumeFrom::Now => head,
            ResumeFrom::Oldest => {
                let oldest = store.hub.oldest_resumable();
                pending.extend(store.hub.changes_after(oldest)?);
                oldest
            }
            ResumeFrom::After(sequence) if sequence > head => {
                // A resume point no change has reached yet would wait forever for nothing.
                return Err(StoreError::ResumePointAhead {
                    requested: sequence,
                    head,
                });
            }
            ResumeFrom::After(sequence) => {
                pending.extend(store.hub.changes_after(sequence)?);
                sequence
            }
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
            let caught_up = match received {
                // Already queued by a catch-up from the ring.
                Ok((sequence, _)) if sequence <= self.queued_through() => Ok(()),
                Ok((_, change)) => match change.upgrade() {
                    Some(change) => {
                        self.pending.push_back(change);
                        Ok(())
                    }
                    // The ring dropped it already: take what the ring still holds.
                    None => self.catch_up(),
                },
                Err(RecvError::Lagged(_)) | Err(RecvError::Closed) => self.catch_up(),
            };
            if let Err(err) = caught_up {
                self.finished = true;
                return Some(Err(err));
            }
        }
    }

    /// The newest change queued or already passed on (`pending` is in sequence order).
    fn queued_through(&self) -> u64 {
        self.pending
            .back()
            .map_or(self.last_sequence, |c| c.sequence)
    }

    /// Queue the ring's changes after the newest queued one; `HistoryPurged` if the ring no
    /// longer holds the one right after it.
    fn catch_up(&mut self) -> Result<(), StoreError> {
        let changes = self.store.hub.changes_after(self.queued_through())?;
        self.pending.extend(changes);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Change, Invocation, Status};
    use crate::store::{Transition, WatchHistoryLimit};
    use tokio_util::sync::CancellationToken;

    fn accept(function: &FunctionKey, id: &str) -> Invocation {
        Invocation::accept(function.invocation(id), "LATEST", "".into(), "r", 1)
    }

    #[tokio::test]
    async fn a_changes_watcher_that_lagged_the_broadcast_catches_up_from_history() {
        let store = Store::new(WatchHistoryLimit::default(), CancellationToken::new());
        let function = FunctionKey::new("a", "s", "f");
        let scope = WatchScope {
            account: "a".into(),
            service: Some("s".into()),
            function: Some("f".into()),
        };
        let mut watch = store.watch_changes(scope, ResumeFrom::Now).expect("watch");
        // Far more than the broadcast holds, with nobody reading.
        for i in 0..20_000 {
            store
                .insert(accept(&function, &format!("i{i}")), |_| {})
                .await
                .expect("insert");
        }
        for expected in 1..=20_000u64 {
            let change = watch.next().await.expect("open").expect("no gap");
            assert_eq!(change.sequence, expected);
        }
    }

    #[tokio::test]
    async fn a_changes_watcher_behind_what_the_ring_kept_is_told_so_not_skipped_ahead() {
        let limit = WatchHistoryLimit {
            changes: 100_000,
            bytes: 50_000,
        };
        let store = Store::new(limit, CancellationToken::new());
        let function = FunctionKey::new("a", "s", "f");
        let scope = WatchScope {
            account: "a".into(),
            service: None,
            function: None,
        };
        let mut watch = store.watch_changes(scope, ResumeFrom::Now).expect("watch");
        // The broadcast has room for all ten, the ring's bytes for about four.
        for i in 0..10 {
            let key = function.invocation(&format!("big-{i}"));
            let big = Invocation::accept(key, "LATEST", "x".repeat(10_000).into(), "r", 1);
            store.insert(big, |_| {}).await.expect("insert");
        }
        let oldest = store.hub.oldest_resumable();
        assert!(oldest > 0, "the ring dropped the first changes");
        match watch.next().await {
            Some(Err(StoreError::HistoryPurged {
                requested,
                oldest: named,
            })) => {
                assert_eq!((requested, named), (0, oldest));
            }
            other => panic!("expected HistoryPurged, got {other:?}"),
        }
        assert!(watch.next().await.is_none(), "the stream ends there");
    }

    #[tokio::test]
    async fn an_invocation_watcher_that_lagged_catches_up_from_the_record() {
        let store = Store::new(WatchHistoryLimit::changes(16), CancellationToken::new());
        let function = FunctionKey::new("a", "s", "f");
        let key = function.invocation("busy");
        store
            .insert(accept(&function, "busy"), |_| {})
            .await
            .expect("insert");
        let mut watch = store.watch_invocation(key.clone(), 0).expect("watch");
        // Each dispatch/fail/requeue round adds three events; 40 rounds overflow the channel.
        for attempt in 1..=40 {
            let changes = [
                Change::Dispatch {
                    worker_id: "w".into(),
                    attempt,
                },
                Change::Fail {
                    error: "boom".into(),
                    retry_at_ms: Some(0),
                    duration_ms: 1,
                },
                Change::Requeue,
            ];
            for change in changes {
                store
                    .apply(Transition::new(key.clone(), change, 2))
                    .await
                    .expect("apply");
            }
        }
        store
            .apply(Transition::new(key.clone(), Change::Stop, 3))
            .await
            .expect("stop");
        let mut ids = Vec::new();
        while let Some(change) = watch.next().await {
            let change = change.expect("no error");
            ids.push(change.event.event_id);
            if change.event.status == Status::Stopped {
                break;
            }
        }
        assert_eq!(ids, (1..=122).collect::<Vec<u64>>());
        assert!(
            watch.next().await.is_none(),
            "ended after the terminal event"
        );
        drop(watch);
        assert_eq!(store.size().watched, 0, "the channel is released");
    }
}
