//! The change feed across replicas. Every committed event has a position in its account's
//! feed (`sai_change`), numbered in commit order without gaps. Each replica reads the feeds
//! of the accounts its watchers follow, whenever a notification says one moved (and every
//! 100 ms behind that), and fans them out to its watchers. Because positions have no gaps, a
//! watcher that sees a position further than the next one it expects knows it missed some,
//! and reads them from the table: nothing is skipped, nothing is delivered twice.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::Pool;
use parking_lot::Mutex;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::model::{FunctionKey, InvocationKey};
use crate::persist::{Decoder, Detail};

use super::super::backend::ChangeCursor;
use super::super::{ResumeFrom, StoreError, StoredChange, WatchScope};
use super::DatabaseError;

/// How often followed feeds are read without a notification.
const READ_EVERY: Duration = Duration::from_millis(100);
/// Most changes one read takes.
const READ_BATCH: i64 = 1_000;
/// Capacity of the fan-out to this replica's watchers.
const FAN_OUT_CAPACITY: usize = 4_096;

/// One change of one account's feed.
#[derive(Debug)]
pub struct FeedChange {
    account: Arc<str>,
    change: Arc<StoredChange>,
}

/// This replica's reader of the accounts' feeds its watchers follow.
pub struct Feed {
    pool: Pool,
    live: broadcast::Sender<Arc<FeedChange>>,
    /// Followed accounts: how many watchers follow each, and the last position read.
    followed: Mutex<HashMap<Arc<str>, Followed>>,
    wake: Notify,
    shutdown: CancellationToken,
}

struct Followed {
    watchers: usize,
    read_to: u64,
}

impl Feed {
    /// A feed reader on `pool`, until `shutdown`.
    pub fn new(pool: Pool, shutdown: CancellationToken) -> Arc<Self> {
        Arc::new(Feed {
            pool,
            live: broadcast::channel(FAN_OUT_CAPACITY).0,
            followed: Mutex::new(HashMap::new()),
            wake: Notify::new(),
            shutdown,
        })
    }

    /// Read the followed feeds now.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// How many accounts are followed.
    pub fn watched(&self) -> usize {
        self.followed.lock().len()
    }

    /// Read followed feeds and fan them out, until shutdown.
    pub async fn tail(self: Arc<Self>) {
        loop {
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(READ_EVERY) => {}
                _ = self.shutdown.cancelled() => return,
            }
            let accounts: Vec<(Arc<str>, u64)> = self
                .followed
                .lock()
                .iter()
                .map(|(account, followed)| (account.clone(), followed.read_to))
                .collect();
            for (account, mut read_to) in accounts {
                loop {
                    let changes = match self.read(&account, read_to, READ_BATCH).await {
                        Ok(changes) => changes,
                        Err(err) => {
                            tracing::debug!(%err, "a feed could not be read");
                            break;
                        }
                    };
                    let full = changes.len() == usize::try_from(READ_BATCH).unwrap_or(0);
                    for change in changes {
                        read_to = change.sequence;
                        // Nobody listening is fine: watchers come and go.
                        let _ = self.live.send(Arc::new(FeedChange {
                            account: account.clone(),
                            change,
                        }));
                    }
                    if let Some(followed) = self.followed.lock().get_mut(&account) {
                        followed.read_to = followed.read_to.max(read_to);
                    }
                    if !full {
                        break;
                    }
                }
            }
        }
    }

    /// Up to `limit` changes of `account` after position `after`, in order.
    async fn read(
        &self,
        account: &Arc<str>,
        after: u64,
        limit: i64,
    ) -> Result<Vec<Arc<StoredChange>>, StoreError> {
        let client = self.pool.get().await?;
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let found = client
            .query(
                &client
                    .prepare_cached(
                        "SELECT seq, service, function, id, started_ms, event_id, record
                 FROM sai_change WHERE account = $1 AND seq > $2 ORDER BY seq LIMIT $3",
                    )
                    .await?,
                &[&&**account, &after, &limit],
            )
            .await?;
        let mut decoder = Decoder::default();
        found
            .iter()
            .map(|row| {
                let sequence: i64 = row.try_get(0)?;
                let function = FunctionKey::new(account, row.try_get(1)?, row.try_get(2)?);
                let id: &str = row.try_get(3)?;
                let started: i64 = row.try_get(4)?;
                let event_id: i32 = row.try_get(5)?;
                let record: &[u8] = row.try_get(6)?;
                let mut invocation = decoder
                    .record(
                        function,
                        id,
                        started,
                        record,
                        Detail::Full,
                        || Ok("".into()),
                    )
                    .map_err(|err| DatabaseError::Corrupt(err.to_string()))?;
                let mut event = invocation
                    .events
                    .pop()
                    .ok_or_else(|| DatabaseError::Corrupt("a change without its event".into()))?;
                event.event_id = u64::try_from(event_id).unwrap_or(0);
                Ok(Arc::new(StoredChange {
                    sequence: u64::try_from(sequence).unwrap_or(0),
                    event,
                    invocation: Arc::new(invocation),
                }))
            })
            .collect()
    }

    /// The last position of `account`'s feed, and the highest trimmed away.
    async fn head(&self, account: &str) -> Result<(u64, u64), StoreError> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                &client
                    .prepare_cached("SELECT seq, trimmed_to FROM sai_feed_head WHERE account = $1")
                    .await?,
                &[&account],
            )
            .await?;
        Ok(match row {
            Some(row) => (
                u64::try_from(row.try_get::<_, i64>(0)?).unwrap_or(0),
                u64::try_from(row.try_get::<_, i64>(1)?).unwrap_or(0),
            ),
            None => (0, 0),
        })
    }

    /// Follow `account` (from its head now, if nobody follows it yet) while the guard lives.
    async fn follow(self: &Arc<Self>, account: &Arc<str>) -> Result<Following, StoreError> {
        let known = self.followed.lock().get_mut(account).map(|followed| {
            followed.watchers += 1;
        });
        if known.is_none() {
            let (head, _) = self.head(account).await?;
            self.followed
                .lock()
                .entry(account.clone())
                .and_modify(|followed| followed.watchers += 1)
                .or_insert(Followed {
                    watchers: 1,
                    read_to: head,
                });
        }
        Ok(Following {
            feed: self.clone(),
            account: account.clone(),
        })
    }

    /// The next change fanned out to `live`, or `None` once the server is shutting down.
    async fn receive(
        &self,
        live: &mut broadcast::Receiver<Arc<FeedChange>>,
    ) -> Option<Result<Arc<FeedChange>, RecvError>> {
        tokio::select! {
            biased;
            _ = self.shutdown.cancelled() => None,
            received = live.recv() => Some(received),
        }
    }

    /// Watch one invocation's events after `from_event_id`.
    pub async fn watch_invocation(
        self: &Arc<Self>,
        key: InvocationKey,
        from_event_id: u64,
    ) -> Result<InvocationWatch, StoreError> {
        let following = self.follow(&key.function.account).await?;
        let live = self.live.subscribe();
        let mut watch = InvocationWatch {
            feed: self.clone(),
            key,
            live,
            pending: VecDeque::new(),
            last_event_id: from_event_id,
            finished: false,
            _following: following,
        };
        watch.replay().await?;
        Ok(watch)
    }

    /// Watch the changes of `scope` from `from`.
    pub async fn watch_changes(
        self: &Arc<Self>,
        scope: WatchScope,
        from: ResumeFrom,
    ) -> Result<ChangesWatch, StoreError> {
        let following = self.follow(&scope.account).await?;
        let live = self.live.subscribe();
        let (head, trimmed_to) = self.head(&scope.account).await?;
        let last_sequence = match from {
            ResumeFrom::Now => head,
            ResumeFrom::Oldest => trimmed_to,
            ResumeFrom::After(requested) if requested > head => {
                return Err(StoreError::ResumePointAhead { requested, head })
            }
            ResumeFrom::After(requested) if requested < trimmed_to => {
                return Err(StoreError::HistoryPurged {
                    requested,
                    oldest: trimmed_to,
                })
            }
            ResumeFrom::After(requested) => requested,
        };
        Ok(ChangesWatch {
            feed: self.clone(),
            scope,
            live,
            pending: VecDeque::new(),
            last_sequence,
            behind: last_sequence < head,
            finished: false,
            _following: following,
        })
    }
}

/// An account followed while it lives.
struct Following {
    feed: Arc<Feed>,
    account: Arc<str>,
}

impl Drop for Following {
    fn drop(&mut self) {
        let mut followed = self.feed.followed.lock();
        if let Some(entry) = followed.get_mut(&self.account) {
            entry.watchers -= 1;
            if entry.watchers == 0 {
                followed.remove(&self.account);
            }
        }
    }
}

/// One invocation's events from a resume point to its terminal event.
pub struct InvocationWatch {
    feed: Arc<Feed>,
    key: InvocationKey,
    live: broadcast::Receiver<Arc<FeedChange>>,
    pending: VecDeque<Arc<StoredChange>>,
    last_event_id: u64,
    finished: bool,
    _following: Following,
}

impl InvocationWatch {
    /// Queue the stored events after the last delivered one, read from the record.
    async fn replay(&mut self) -> Result<(), StoreError> {
        let client = self.feed.pool.get().await?;
        let record = super::read::find(&client, &self.key, Detail::Full)
            .await?
            .ok_or_else(|| StoreError::InvocationNotFound(self.key.clone()))?;
        // As the embedded store's watch: only a resume point past the last event of an
        // invocation still open is refused.
        if self.last_event_id > record.last_event_id() && !record.status.is_terminal() {
            return Err(StoreError::EventResumePointAhead {
                requested: self.last_event_id,
                last: record.last_event_id(),
            });
        }
        let invocation = Arc::new(record.without_events());
        let events = record.events_after(self.last_event_id);
        self.finished |= events.is_empty() && record.status.is_terminal();
        self.pending = events
            .iter()
            .map(|event| {
                Arc::new(StoredChange {
                    sequence: 0,
                    event: event.clone(),
                    invocation: invocation.clone(),
                })
            })
            .collect();
        Ok(())
    }

    async fn next_change(&mut self) -> Option<Result<Arc<StoredChange>, StoreError>> {
        loop {
            if self.finished {
                return None;
            }
            if let Some(change) = self.pending.pop_front() {
                let id = change.event.event_id;
                if id <= self.last_event_id {
                    continue;
                }
                if id > self.last_event_id + 1 {
                    // Some were missed: the record has them all.
                    if let Err(err) = self.replay().await {
                        self.finished = true;
                        return Some(Err(err));
                    }
                    continue;
                }
                self.last_event_id = id;
                self.finished = change.event.status.is_terminal();
                return Some(Ok(change));
            }
            let Some(received) = self.feed.receive(&mut self.live).await else {
                self.finished = true;
                return Some(Err(StoreError::ShuttingDown));
            };
            match received {
                Ok(change) if change.change.invocation.key == self.key => {
                    self.pending.push_back(change.change.clone())
                }
                Ok(_) => {}
                Err(RecvError::Lagged(_)) | Err(RecvError::Closed) => {
                    if let Err(err) = self.replay().await {
                        self.finished = true;
                        return Some(Err(err));
                    }
                }
            }
        }
    }
}

#[async_trait]
impl ChangeCursor for InvocationWatch {
    async fn next(&mut self) -> Option<Result<Arc<StoredChange>, StoreError>> {
        self.next_change().await
    }
}

/// The changes of a scope, in feed order.
pub struct ChangesWatch {
    feed: Arc<Feed>,
    scope: WatchScope,
    live: broadcast::Receiver<Arc<FeedChange>>,
    pending: VecDeque<Arc<StoredChange>>,
    last_sequence: u64,
    /// Stored changes must be read before live ones.
    behind: bool,
    finished: bool,
    _following: Following,
}

impl ChangesWatch {
    /// Read the stored changes after the last delivered one, ahead of what is pending.
    async fn catch_up(&mut self) -> Result<(), StoreError> {
        let read = self
            .feed
            .read(&self.scope.account, self.last_sequence, READ_BATCH)
            .await?;
        if let Some(first) = read.first() {
            if first.sequence > self.last_sequence + 1 {
                return Err(StoreError::HistoryPurged {
                    requested: self.last_sequence,
                    oldest: first.sequence - 1,
                });
            }
        }
        self.behind = read.len() == usize::try_from(READ_BATCH).unwrap_or(0);
        for change in read.into_iter().rev() {
            self.pending.push_front(change);
        }
        Ok(())
    }

    fn covers(&self, key: &FunctionKey) -> bool {
        key.account == self.scope.account
            && self
                .scope
                .service
                .as_ref()
                .is_none_or(|s| *s == key.service)
            && self
                .scope
                .function
                .as_ref()
                .is_none_or(|f| *f == key.function)
    }

    async fn next_change(&mut self) -> Option<Result<Arc<StoredChange>, StoreError>> {
        loop {
            if self.finished {
                return None;
            }
            if self.behind {
                if let Err(err) = self.catch_up().await {
                    self.finished = true;
                    return Some(Err(err));
                }
            }
            if let Some(change) = self.pending.pop_front() {
                if change.sequence <= self.last_sequence {
                    continue;
                }
                if change.sequence > self.last_sequence + 1 {
                    self.pending.push_front(change);
                    self.behind = true;
                    continue;
                }
                self.last_sequence = change.sequence;
                if self.covers(&change.invocation.key.function) {
                    return Some(Ok(change));
                }
                continue;
            }
            let Some(received) = self.feed.receive(&mut self.live).await else {
                self.finished = true;
                return Some(Err(StoreError::ShuttingDown));
            };
            match received {
                Ok(change) if change.account == self.scope.account => {
                    self.pending.push_back(change.change.clone())
                }
                Ok(_) => {}
                Err(RecvError::Lagged(_)) | Err(RecvError::Closed) => self.behind = true,
            }
        }
    }
}

#[async_trait]
impl ChangeCursor for ChangesWatch {
    async fn next(&mut self) -> Option<Result<Arc<StoredChange>, StoreError>> {
        self.next_change().await
    }
}
