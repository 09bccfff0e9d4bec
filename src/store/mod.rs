//! The serving store: the open invocations in a `DashMap` (the working set), the history of
//! finished ones (in memory, or in the data directory behind a bounded cache), the catalog of
//! configs and functions, and the watch hub.
//!
//! Reads (get, list, watch) go straight to these structures and never wait on the engine.
//! Every mutation goes through `Store::commit`, the one narrow write path: under the commit
//! lock it checks the mutation against current state, applies it in memory, numbers its
//! events, and hands its writes to the journal (when the store is on disk). The caller is
//! answered, and watchers see the events, only once the journal says the writes are durable;
//! without a journal, events are published at once. An invocation that ends stays among the
//! open ones until its last change is durable, then moves to the history: a reader finds it
//! in one or the other at every moment.

mod admission;
pub mod backend;
mod catalog;
mod embedded;
mod error;
mod history;
mod hub;
mod index;
pub mod lease_token;
pub mod page;
mod postgres;
mod settled;

use page::PageSigner;
mod watch;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use dashmap::DashMap;
use parking_lot::{Mutex, RwLock};
use tokio_util::sync::CancellationToken;

use crate::model::{
    id, transition, AsyncInvokeConfig, Change, DestinationStatus, Event, FunctionKey, Invocation,
    InvocationKey, Status, StoredConfig,
};
use crate::persist::{
    BlockLoads, DiskConfig, Journal, LoadSummary, Loaded, Persist, Ticket, WriteSet,
};

pub use backend::{Backend, PurgeStop, Purged};
pub use catalog::{ConfigKey, ConfigPage, FunctionPage};
pub use embedded::Embedded;
pub use error::StoreError;
pub use history::DEFAULT_CACHE_BYTES;
pub use hub::{StoredChange, WatchHistoryLimit};
pub use index::{ListQuery, Order, Page};
pub use postgres::{DatabaseError, Postgres, PostgresConfig, RETENTION_LOCK, SCHEMA_VERSION};
pub use watch::{ChangesWatch, InvocationWatch, ResumeFrom, WatchScope};

use catalog::Catalog;
use history::{DiskHistory, History, MemoryHistory, OpenRecords};
use hub::Hub;
use settled::SettledCounts;

/// Default number of recent changes kept for resuming function-level watches.
pub const DEFAULT_WATCH_HISTORY: usize = 100_000;
/// Default bytes those changes may hold (their invocations' snapshots, payloads included).
pub const DEFAULT_WATCH_HISTORY_BYTES: u64 = 64 << 20;

/// A change to apply to one invocation, with its conditions and side effects.
#[derive(Debug, Clone)]
pub struct Transition {
    /// Which invocation.
    pub key: InvocationKey,
    /// What happens to it.
    pub change: Change,
    /// When.
    pub now_ms: i64,
    /// Fencing: refuse unless the invocation is on this attempt.
    pub attempt: Option<u32>,
    /// Result record delivered in the same commit if the change ends in Succeeded (boxed:
    /// most transitions carry none, and a poll builds dozens of them at once).
    pub on_success: Option<Box<Invocation>>,
    /// Result record delivered in the same commit if the change ends in Failed or Expired.
    pub on_failure: Option<Box<Invocation>>,
    /// False drops the record once terminal (stateful invocation off).
    pub keep_record: bool,
}

impl Transition {
    /// `change` to `key` at `now_ms`, unfenced, no destinations, record kept.
    pub fn new(key: InvocationKey, change: Change, now_ms: i64) -> Self {
        Transition {
            key,
            change,
            now_ms,
            attempt: None,
            on_success: None,
            on_failure: None,
            keep_record: true,
        }
    }
}

/// Where the store keeps its state.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Storage {
    /// Memory only: everything is lost when the process ends.
    #[default]
    Memory,
    /// A data directory: every acknowledged change survives a crash.
    Disk(DiskConfig),
    /// A PostgreSQL database shared by several replicas (opened with [`Postgres::connect`]).
    Postgres(PostgresConfig),
}

impl Storage {
    /// A data directory at `dir` with `durability`.
    pub fn disk(dir: impl Into<PathBuf>, durability: crate::persist::Durability) -> Self {
        Storage::Disk(DiskConfig::new(dir, durability))
    }
}

/// Hashing for the hot in-memory maps: foldhash, several times faster than the standard
/// library's SipHash on these short string keys, and still seeded per process.
pub type Hashing = foldhash::fast::RandomState;

/// How much a store holds in memory, and its history on disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreSize {
    /// Invocations not yet terminal (and those whose end is not yet durable).
    pub open: usize,
    /// Finished records cached (0 in memory, where the history holds all of them).
    pub cached: usize,
    /// Bytes of the cached records.
    pub cached_bytes: u64,
    /// Bytes the history takes on disk (0 in memory).
    pub disk_bytes: u64,
    /// Bytes the data directory's memtables hold in memory (0 in memory).
    pub write_buffer_bytes: u64,
    /// Bytes the data directory's block cache holds (0 in memory).
    pub block_cache_bytes: u64,
    /// Blocks the data directory's reads have loaded since it was opened (none in memory).
    pub block_loads: BlockLoads,
    /// Recent changes kept in memory for resuming watches (0 where the database keeps them).
    pub watch_history_changes: usize,
    /// About the bytes those changes hold.
    pub watch_history_bytes: u64,
    /// Invocations with a live watch channel (released when their last watcher ends).
    pub watched: usize,
    /// Records retention examined and could not purge yet, looked at again each pass (0
    /// where retention keeps no such list).
    pub retention_rechecks: usize,
}

/// The serving store.
pub struct Store {
    /// The invocations not yet terminal, whole. Shared with the commits' durable hooks, which
    /// move ended ones to the history.
    open: Arc<OpenRecords>,
    /// How many unfinished invocations each function has (functions with none are absent).
    open_per_function: DashMap<FunctionKey, usize, Hashing>,
    /// Finished records, and what lists read.
    history: Arc<History>,
    /// Moves from `open` to `history`, counted so that ids can be looked for in the history
    /// before the commit lock is taken.
    settled: Arc<SettledCounts>,
    catalog: RwLock<Catalog>,
    hub: Arc<Hub>,
    /// Serialises commits, so that checks, applies, sequence numbers and journal writes
    /// follow one order.
    commit_lock: Mutex<CommitState>,
    /// Most unfinished invocations one function may have.
    max_open_per_function: AtomicUsize,
    /// Signs page tokens.
    pages: RwLock<PageSigner>,
    /// Commits made since the store was opened.
    commits: AtomicU64,
}

struct CommitState {
    /// The last watch sequence number handed out.
    sequence: u64,
    /// Where durable writes go; `None` in memory.
    journal: Option<Journal>,
    /// Closed for shutdown: no more commits.
    closed: bool,
}

/// What runs once a commit is durable, after its events are published.
type AfterCommit = Box<dyn FnOnce() + Send>;

/// What one commit changed: the writes for the journal, the events for watchers, the
/// invocations it ended, and what runs once it is durable.
struct Commit {
    writes: Option<WriteSet>,
    events: Vec<(Event, Arc<Invocation>)>,
    ended: Vec<InvocationKey>,
    removed: Vec<InvocationKey>,
    after: Option<AfterCommit>,
}

/// What a look for an accepted invocation's id in the history found.
#[derive(Debug, Clone, Copy)]
enum IdLookup {
    /// Not looked for: look under the commit lock.
    Pending,
    /// The service generated the id: no history holds it.
    Generated,
    /// Looked before the commit lock: whether the history held it, and the settle count its
    /// key shared then.
    Looked { found: bool, settled: u64 },
}

/// How a commit ends once its lock is released.
enum Finish {
    /// Nothing to wait for (in memory, or nothing written): what follows runs at once.
    Now(Option<AfterCommit>),
    /// Done when the journal has it on disk (what follows runs there).
    Durable(Ticket),
}

impl Commit {
    fn write(&mut self, write: impl FnOnce(&mut WriteSet)) {
        if let Some(writes) = &mut self.writes {
            write(writes);
        }
    }
}

/// Move the invocations that ended from the open records to the history, once their end is
/// durable: present in both for a moment, so that a reader never misses them, and counted
/// before they leave the open records (see `settled`).
fn settle(
    open: &OpenRecords,
    history: &History,
    settled: &SettledCounts,
    ended: Vec<InvocationKey>,
) {
    for key in ended {
        // An id freed (record not kept) and taken again since is open under the same key.
        let Some(record) = open
            .get(&key)
            .filter(|r| r.status.is_terminal())
            .map(|r| r.value().clone())
        else {
            continue;
        };
        history.finished(record);
        settled.moved(&key);
        open.remove_if(&key, |_, r| r.status.is_terminal());
    }
}

/// What fails a transition on `record` before anything changes: a stale attempt, or a change
/// its status does not allow. `Ok(None)`: nothing to do (a stop of a Stopping invocation).
fn check(record: &Invocation, t: &Transition) -> Result<Option<Status>, StoreError> {
    if let Some(attempt) = t.attempt {
        if record.attempts != attempt {
            return Err(StoreError::StaleAttempt {
                key: t.key.clone(),
                attempt,
                current: record.attempts,
            });
        }
    }
    if record.is_no_op(&t.change) {
        return Ok(None);
    }
    transition(record.status, t.change.trigger())
        .map(Some)
        .map_err(|source| StoreError::IllegalTransition {
            key: t.key.clone(),
            source,
        })
}

impl Store {
    /// An empty in-memory store keeping recent changes within `watch_history`; watches end
    /// when `shutdown` fires.
    pub fn new(watch_history: WatchHistoryLimit, shutdown: CancellationToken) -> Arc<Self> {
        Self::with_history(
            History::Memory(MemoryHistory::default()),
            watch_history,
            shutdown,
        )
    }

    fn with_history(
        history: History,
        watch_history: WatchHistoryLimit,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        Arc::new(Store {
            open: Arc::default(),
            open_per_function: DashMap::default(),
            history: Arc::new(history),
            settled: Arc::default(),
            catalog: RwLock::new(Catalog::default()),
            hub: Arc::new(Hub::new(watch_history, shutdown)),
            commit_lock: Mutex::new(CommitState {
                sequence: 0,
                journal: None,
                closed: false,
            }),
            max_open_per_function: AtomicUsize::new(usize::MAX),
            pages: RwLock::new(PageSigner::random()),
            commits: AtomicU64::new(0),
        })
    }

    /// Refuse new invocations of a function that already has `limit` unfinished ones.
    pub fn limit_open_per_function(&self, limit: usize) {
        self.max_open_per_function.store(limit, Ordering::Relaxed);
    }

    /// A store on `storage`: for a data directory, what is open and the catalog are loaded
    /// back first (finished records stay on disk, and up to `cache_bytes` of them are cached
    /// once read), and every later commit is written there before it is acknowledged.
    pub fn open(
        storage: &Storage,
        watch_history: WatchHistoryLimit,
        cache_bytes: u64,
        shutdown: CancellationToken,
    ) -> Result<(Arc<Self>, LoadSummary), StoreError> {
        let disk = match storage {
            Storage::Memory | Storage::Postgres(_) => {
                return Ok((Store::new(watch_history, shutdown), LoadSummary::default()))
            }
            Storage::Disk(disk) => disk,
        };
        let persist = Persist::open_with(disk)?;
        let history = History::Disk(DiskHistory::new(persist.reader(), cache_bytes)?);
        let store = Store::with_history(history, watch_history, shutdown);
        *store.pages.write() = PageSigner::new(persist.page_key()?);
        let summary = persist.load(|loaded| store.restore(loaded))?;
        store.hub.restore_head(summary.sequence);
        if summary.migrated > 0 {
            tracing::info!(
                invocations = summary.migrated,
                "moved invocations stored by an older sai to the current layout"
            );
        }
        let mut state = store.commit_lock.lock();
        state.sequence = summary.sequence;
        state.journal = Some(persist.into_journal());
        drop(state);
        Ok((store, summary))
    }

    /// Put one loaded item in place (only while opening, before anyone else sees the store).
    fn restore(&self, loaded: Loaded) {
        match loaded {
            Loaded::Invocation(invocation) => {
                *self
                    .open_per_function
                    .entry(invocation.key.function.clone())
                    .or_default() += 1;
                self.open
                    .insert(invocation.key.clone(), Arc::new(invocation));
            }
            Loaded::Config {
                function,
                qualifier,
                config,
            } => self.catalog.write().restore(
                ConfigKey {
                    function,
                    qualifier,
                },
                config,
            ),
            Loaded::Function {
                function,
                qualifier,
            } => self.catalog.write().register(ConfigKey {
                function,
                qualifier,
            }),
        }
    }

    /// Finish the journal's writes, sync, and refuse further commits. Watches are ended by
    /// the shutdown token, not here.
    pub async fn close(&self) -> Result<(), StoreError> {
        let journal = {
            let mut state = self.commit_lock.lock();
            state.closed = true;
            state.journal.take()
        };
        if let Some(journal) = journal {
            tokio::task::spawn_blocking(move || journal.close())
                .await
                .map_err(|err| {
                    tracing::error!(%err, "closing the data directory did not finish");
                    StoreError::WriterStopped
                })??;
        }
        Ok(())
    }

    /// The one write path: every mutation runs `apply` through here, under the commit lock,
    /// so that checks, applies, sequence numbers and journal writes follow one order. Returns
    /// once the commit is durable (at once in memory).
    async fn commit<T>(
        &self,
        apply: impl FnOnce(&mut Commit) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let (result, finish) = {
            let mut state = self.commit_lock.lock();
            if state.closed {
                return Err(StoreError::ShuttingDown);
            }
            if state.journal.as_ref().is_some_and(Journal::has_failed) {
                return Err(crate::persist::PersistError::Failed.into());
            }
            let mut commit = Commit {
                writes: state.journal.as_ref().map(Journal::write_set),
                events: Vec::new(),
                ended: Vec::new(),
                removed: Vec::new(),
                after: None,
            };
            let result = apply(&mut commit)?;
            self.commits.fetch_add(1, Ordering::Relaxed);
            let mut changes = Vec::with_capacity(commit.events.len());
            for (event, invocation) in commit.events {
                state.sequence += 1;
                changes.push(StoredChange {
                    sequence: state.sequence,
                    event,
                    invocation,
                });
            }
            let sequence = state.sequence;
            let (after, ended, removed) = (commit.after, commit.ended, commit.removed);
            match (&state.journal, commit.writes) {
                (Some(journal), Some(mut writes)) if !writes.is_empty() => {
                    if sequence > 0 {
                        writes.put_sequence(sequence);
                    }
                    let (open, history) = (self.open.clone(), self.history.clone());
                    let (settled, hub) = (self.settled.clone(), self.hub.clone());
                    // The writer runs this for each commit in commit order.
                    let durable = move || {
                        history.forget(&removed);
                        settle(&open, &history, &settled, ended);
                        changes.into_iter().for_each(|c| hub.publish(c));
                        if let Some(after) = after {
                            after();
                        }
                    };
                    (
                        result,
                        Finish::Durable(journal.submit(writes, Box::new(durable))?),
                    )
                }
                _ => {
                    // Under the lock, so that changes are published in sequence order.
                    self.history.forget(&removed);
                    settle(&self.open, &self.history, &self.settled, ended);
                    changes.into_iter().for_each(|c| self.hub.publish(c));
                    (result, Finish::Now(after))
                }
            }
        };
        match finish {
            // Outside the commit lock, as it would be after a durable commit.
            Finish::Now(after) => after.into_iter().for_each(|after| after()),
            Finish::Durable(ticket) => ticket
                .await
                .map_err(|_| StoreError::WriterStopped)?
                .map_err(StoreError::Persist)?,
        }
        Ok(result)
    }

    #[cfg(test)]
    /// Store a newly accepted invocation; its id must be free in its function. `then` runs
    /// with it once it is durable, whether or not the caller is still waiting: what must
    /// follow a stored invocation happens even if the caller's future is dropped.
    pub async fn insert(
        &self,
        invocation: Invocation,
        then: impl FnOnce(&Arc<Invocation>) + Send + 'static,
    ) -> Result<Arc<Invocation>, StoreError> {
        let looked = self.look_up_id(&invocation.key)?;
        self.commit(|commit| {
            let stored = self.insert_now(commit, invocation, looked)?;
            let after = stored.clone();
            commit.after = Some(Box::new(move || then(&after)));
            Ok(stored)
        })
        .await
    }

    /// Store several newly accepted invocations in one commit (one sync). Each has its own
    /// outcome, as `insert` would give it; the outer error is the commit's. `then` runs with
    /// each stored one once the commit is durable, as for `insert`.
    pub async fn insert_all(
        &self,
        invocations: Vec<Invocation>,
        then: impl Fn(&Arc<Invocation>) + Send + 'static,
    ) -> Result<Vec<Result<Arc<Invocation>, StoreError>>, StoreError> {
        // Before the lock: a look in the history can read the disk, and every other commit
        // would wait on it.
        let looked: Vec<_> = invocations
            .iter()
            .map(|invocation| self.look_up_id(&invocation.key))
            .collect();
        self.commit(|commit| {
            let outcomes: Vec<_> = invocations
                .into_iter()
                .zip(looked)
                .map(|(invocation, looked)| self.insert_now(commit, invocation, looked?))
                .collect();
            let stored: Vec<Arc<Invocation>> = outcomes
                .iter()
                .filter_map(|one| one.as_ref().ok())
                .cloned()
                .collect();
            commit.after = Some(Box::new(move || stored.iter().for_each(then)));
            Ok(outcomes)
        })
        .await
    }

    #[cfg(test)]
    /// Apply a transition. Returns the invocation after it (without events) and whether it
    /// changed (a stop while Stopping does not).
    pub async fn apply(
        &self,
        transition: Transition,
    ) -> Result<(Arc<Invocation>, bool), StoreError> {
        self.commit(|commit| self.apply_now(commit, transition))
            .await
    }

    /// Apply several transitions in one commit (one sync), in order. Each has its own
    /// outcome; the outer error is the commit's (storage, shutdown).
    pub async fn apply_all(
        &self,
        transitions: Vec<Transition>,
    ) -> Result<Vec<Result<(Arc<Invocation>, bool), StoreError>>, StoreError> {
        self.commit(|commit| {
            Ok(transitions
                .into_iter()
                .map(|t| self.apply_now(commit, t))
                .collect())
        })
        .await
    }

    /// Create or replace a config at `now_ms`.
    pub async fn put_config(
        &self,
        key: ConfigKey,
        config: AsyncInvokeConfig,
        now_ms: i64,
    ) -> Result<StoredConfig, StoreError> {
        self.commit(|commit| {
            let stored = self.catalog.write().put(key.clone(), config, now_ms);
            commit.write(|w| {
                w.put_config(&key.function, &key.qualifier, &stored);
                w.put_function(&key.function, &key.qualifier);
            });
            Ok(stored)
        })
        .await
    }

    /// Remove a config, returning it.
    pub async fn delete_config(&self, key: ConfigKey) -> Result<StoredConfig, StoreError> {
        self.commit(|commit| {
            let removed = self.catalog.write().delete(&key)?;
            commit.write(|w| w.delete_config(&key.function, &key.qualifier));
            Ok(removed)
        })
        .await
    }

    /// Purge finished invocations that ended before `cutoff_ms`, examining at most `budget`
    /// stored ones. Those purged have their ids free again.
    pub async fn purge_ended_before(
        &self,
        cutoff_ms: i64,
        budget: usize,
    ) -> Result<Purged, StoreError> {
        let functions = self.catalog.read().function_keys();
        let is_open = |key: &InvocationKey| self.open.contains_key(key);
        let pass = self
            .history
            .ended_before(&functions, cutoff_ms, budget, is_open)?;
        if pass.ended.is_empty() && pass.floors.is_empty() {
            return Ok(Purged {
                invocations: 0,
                stopped: pass.stopped,
            });
        }
        let outcome = self
            .commit(|commit| {
                let mut purged = 0;
                let mut left = false;
                for candidate in pass.ended {
                    // Still the record found, not one that took its freed id since (in memory),
                    // nor one still settling into the history (ended moments ago).
                    if self.open.contains_key(&candidate.key)
                        || !self.history.still_kept(&candidate)
                    {
                        left = true;
                        continue;
                    }
                    self.remove_now(commit, &candidate);
                    purged += 1;
                }
                // A floor past a record left in place would hide it from lists, and from
                // retention, for good.
                if !left {
                    commit.write(|w| {
                        for (function, floor) in &pass.floors {
                            let floor = floor.as_ref().map(|(t, id)| (*t, &**id));
                            w.put_retention_floor(function, floor);
                        }
                    });
                }
                Ok((purged, left))
            })
            .await;
        match outcome {
            Ok((invocations, left)) => {
                if left {
                    self.history.purge_incomplete();
                }
                Ok(Purged {
                    invocations,
                    // What was left is found again by a later pass, not by the next batch.
                    stopped: if left {
                        PurgeStop::HeldBack
                    } else {
                        pass.stopped
                    },
                })
            }
            Err(err) => {
                self.history.purge_incomplete();
                Err(err)
            }
        }
    }

    /// Look for `key`'s id in the history, outside the commit lock (see `insert_now`).
    fn look_up_id(&self, key: &InvocationKey) -> Result<IdLookup, StoreError> {
        // No caller can choose an id the service generates, and its random bits make it
        // unique: only other ids are looked for in the history, which can be a disk read.
        if id::is_generated(&key.id) {
            return Ok(IdLookup::Generated);
        }
        let settled = self.settled.read(key);
        let found = self.history.contains(key)?;
        Ok(IdLookup::Looked { found, settled })
    }

    /// Whether `key`'s id is in the history, under the commit lock: what `looked` found, unless
    /// an invocation sharing its settle count has moved there since, or it was not looked for.
    fn id_in_history(&self, key: &InvocationKey, looked: IdLookup) -> Result<bool, StoreError> {
        match looked {
            IdLookup::Generated => Ok(false),
            IdLookup::Looked { found, settled } if found || self.settled.read(key) == settled => {
                Ok(found)
            }
            IdLookup::Looked { .. } => self.history.contains(key),
            // Looked for now, after the open records: see `insert_now`.
            IdLookup::Pending => Ok(matches!(
                self.look_up_id(key)?,
                IdLookup::Looked { found: true, .. }
            )),
        }
    }

    fn insert_now(
        &self,
        commit: &mut Commit,
        invocation: Invocation,
        looked: IdLookup,
    ) -> Result<Arc<Invocation>, StoreError> {
        let key = invocation.key.clone();
        let config_key = ConfigKey {
            function: key.function.clone(),
            qualifier: invocation.qualifier.clone(),
        };
        let limit = self.max_open_per_function.load(Ordering::Relaxed);
        let open = self.open_per_function.get(&key.function).map_or(0, |n| *n);
        if open >= limit {
            return Err(StoreError::FunctionFull {
                function: key.function.clone(),
                limit,
            });
        }
        // The open records first: an id that settles meanwhile is counted before it leaves
        // them, so `id_in_history` sees the count changed.
        let taken = self.open.contains_key(&key) || self.id_in_history(&key, looked)?;
        if taken {
            return Err(StoreError::InvocationAlreadyExists(key));
        }
        commit.write(|w| w.put_accepted(&invocation));
        self.history.accepted(&invocation);
        let summary = Arc::new(invocation.without_events());
        let first_event = invocation.events[0].clone();
        self.open.insert(key.clone(), Arc::new(invocation));
        *self
            .open_per_function
            .entry(key.function.clone())
            .or_default() += 1;
        if !self.catalog.read().knows(&config_key) {
            commit.write(|w| w.put_function(&config_key.function, &config_key.qualifier));
            self.catalog.write().register(config_key);
        }
        commit.events.push((first_event, summary.clone()));
        Ok(summary)
    }

    fn apply_now(
        &self,
        commit: &mut Commit,
        t: Transition,
    ) -> Result<(Arc<Invocation>, bool), StoreError> {
        // Check first, so that a refused transition delivers no destination record.
        let checked = match self.open.get(&t.key) {
            Some(record) => check(&record, &t)?.ok_or_else(|| record.without_events()),
            None => {
                let finished = self
                    .history
                    .get(&t.key)?
                    .ok_or_else(|| StoreError::InvocationNotFound(t.key.clone()))?;
                check(&finished, &t)?.ok_or_else(|| finished.without_events())
            }
        };
        let to = match checked {
            Ok(to) => to,
            Err(unchanged) => return Ok((Arc::new(unchanged), false)),
        };
        let destination = match to {
            Status::Succeeded => t.on_success,
            Status::Failed | Status::Expired => t.on_failure,
            _ => None,
        };
        let destination_status =
            destination.map(
                |record| match self.insert_now(commit, *record, IdLookup::Pending) {
                    Ok(_) => DestinationStatus::Succeeded,
                    Err(_) => DestinationStatus::Failed,
                },
            );

        let mut held = self
            .open
            .get_mut(&t.key)
            .ok_or_else(|| StoreError::InvocationNotFound(t.key.clone()))?;
        // Not shared but for a moment (a reader's copy), so this rarely copies the record.
        let record = Arc::make_mut(&mut held);
        if let Some(status) = destination_status {
            record.destination_status = status;
        }
        let event = match record.apply(&t.change, t.now_ms) {
            Ok(event) => event.cloned(),
            Err(source) => return Err(StoreError::IllegalTransition { key: t.key, source }),
        };
        let summary = Arc::new(record.without_events());
        if event.is_some() {
            commit.write(|w| w.put_invocation(record));
        }
        drop(held);
        let changed = event.is_some();
        if let Some(event) = event {
            commit.events.push((event, summary.clone()));
            if summary.status.is_terminal() {
                self.closed(&t.key.function);
                commit.ended.push(t.key.clone());
            }
        }
        if summary.status.is_terminal() && !t.keep_record {
            self.remove_now(commit, &summary);
        }
        Ok((summary, changed))
    }

    /// One fewer unfinished invocation in `function`.
    fn closed(&self, function: &FunctionKey) {
        self.open_per_function.remove_if_mut(function, |_, open| {
            *open = open.saturating_sub(1);
            *open == 0
        });
    }

    /// Drop a finished record (of a non-stateful function, or past retention): its id becomes
    /// free again.
    fn remove_now(&self, commit: &mut Commit, invocation: &Invocation) {
        commit.write(|w| w.delete_invocation(invocation));
        self.open.remove(&invocation.key);
        self.history
            .removed(&invocation.key, invocation.started_time_ms);
        commit.removed.push(invocation.key.clone());
    }

    /// One invocation with its events, shared rather than copied.
    pub fn get_shared(&self, key: &InvocationKey) -> Result<Option<Arc<Invocation>>, StoreError> {
        if let Some(open) = self.open.get(key) {
            return Ok(Some(open.clone()));
        }
        self.history.get(key)
    }

    /// `read` applied to one invocation (no copy of a record held in memory): an open one,
    /// else a finished one from the history.
    pub fn read<R>(
        &self,
        key: &InvocationKey,
        read: impl FnOnce(&Invocation) -> R,
    ) -> Result<Option<R>, StoreError> {
        if let Some(open) = self.open.get(key) {
            return Ok(Some(read(&open)));
        }
        Ok(self.history.get(key)?.map(|finished| read(&finished)))
    }

    /// One invocation without its events (cheaper, for decisions about it).
    pub fn summary(&self, key: &InvocationKey) -> Result<Option<Invocation>, StoreError> {
        self.read(key, Invocation::without_events)
    }

    /// One open invocation, whole and shared; `None` once its end is durable (or it never
    /// existed).
    pub fn open_record(&self, key: &InvocationKey) -> Option<Arc<Invocation>> {
        self.open.get(key).map(|record| record.clone())
    }

    /// One open invocation without its events; `None` once it ended (or never existed).
    pub fn open_summary(&self, key: &InvocationKey) -> Option<Invocation> {
        self.open
            .get(key)
            .filter(|r| !r.status.is_terminal())
            .map(|r| r.without_events())
    }

    /// One page of a function's invocations.
    pub fn list(&self, query: &ListQuery) -> Result<Page, StoreError> {
        self.history.list(&self.pages.read(), query, &self.open)
    }

    /// Every invocation not yet terminal (without events), oldest first: what a restart
    /// must pick up again.
    pub fn unfinished(&self) -> Vec<Invocation> {
        let mut open: Vec<Invocation> = self
            .open
            .iter()
            .filter(|r| !r.status.is_terminal())
            .map(|r| r.without_events())
            .collect();
        open.sort_by(|a, b| (a.started_time_ms, &a.key.id).cmp(&(b.started_time_ms, &b.key.id)));
        open
    }

    /// Whether commits are taken: the store is not closed and no write has failed.
    pub fn writable(&self) -> bool {
        let state = self.commit_lock.lock();
        !state.closed && !state.journal.as_ref().is_some_and(Journal::has_failed)
    }

    /// How long the data directory's write in progress has been running, if one is.
    pub fn write_running_for(&self) -> Option<std::time::Duration> {
        let state = self.commit_lock.lock();
        state.journal.as_ref().and_then(Journal::write_running_for)
    }

    /// How many commits were made since the store was opened.
    #[cfg(test)]
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// What the store holds in memory, and its history on disk.
    pub fn size(&self) -> StoreSize {
        let (cached_bytes, cached) = self.history.cached();
        let (watch_history_changes, watch_history_bytes) = self.hub.kept();
        StoreSize {
            open: self.open.len(),
            cached,
            cached_bytes,
            disk_bytes: self.history.disk_space(),
            write_buffer_bytes: self.history.write_buffer_bytes(),
            block_cache_bytes: self.history.block_cache_bytes(),
            block_loads: self.history.block_loads(),
            watch_history_changes,
            watch_history_bytes,
            watched: self.hub.watched_invocations(),
            retention_rechecks: self.history.retention_rechecks(),
        }
    }

    /// The config of one qualifier of a function.
    pub fn config(&self, key: &ConfigKey) -> Result<StoredConfig, StoreError> {
        self.catalog
            .read()
            .config(key)
            .cloned()
            .ok_or_else(|| StoreError::ConfigNotFound {
                service: key.function.service.to_string(),
                function: key.function.function.to_string(),
                qualifier: key.qualifier.to_string(),
            })
    }

    /// `read` of the settings invocations of `key` run with, without copying them.
    pub fn with_effective_config<R>(
        &self,
        key: &ConfigKey,
        read: impl FnOnce(&AsyncInvokeConfig) -> R,
    ) -> R {
        let catalog = self.catalog.read();
        match catalog.config(key) {
            Some(stored) => read(&stored.config),
            None => read(&AsyncInvokeConfig::default()),
        }
    }

    /// The settings invocations of `key` run with: its config, or the defaults.
    pub fn effective_config(&self, key: &ConfigKey) -> AsyncInvokeConfig {
        self.catalog
            .read()
            .config(key)
            .map(|c| c.config.clone())
            .unwrap_or_default()
    }

    /// A page of a function's configs, ordered by qualifier.
    pub fn list_configs(
        &self,
        function: &FunctionKey,
        limit: usize,
        next_token: &str,
    ) -> Result<ConfigPage, StoreError> {
        self.catalog
            .read()
            .list_configs(&self.pages.read(), function, limit, next_token)
    }

    /// A page of an account's functions with stateful invocation enabled.
    pub fn list_functions(
        &self,
        account: &Arc<str>,
        limit: usize,
        next_token: &str,
    ) -> Result<FunctionPage, StoreError> {
        self.catalog
            .read()
            .list_functions(&self.pages.read(), account, limit, next_token)
    }

    /// Watch one invocation's events after `from_event_id`.
    pub fn watch_invocation(
        self: &Arc<Self>,
        key: InvocationKey,
        from_event_id: u64,
    ) -> Result<InvocationWatch, StoreError> {
        InvocationWatch::start(self.clone(), key, from_event_id)
    }

    /// Watch the changes of a scope, from `from`.
    pub fn watch_changes(
        self: &Arc<Self>,
        scope: WatchScope,
        from: ResumeFrom,
    ) -> Result<ChangesWatch, StoreError> {
        ChangesWatch::start(self.clone(), scope, from)
    }
}

#[cfg(test)]
mod tests {
    use std::ops::Bound;
    use std::time::Duration;

    use super::*;
    use crate::model::FunctionKey;
    use crate::persist::{Durability, Floor};

    fn accepted(id: &str) -> Invocation {
        let key = FunctionKey::new("acct", "svc", "fn").invocation(id);
        Invocation::accept(key, "LATEST", "{}".into(), "req", 1)
    }

    /// Inserts `id`, gives up waiting after the first poll, and returns what the insert's
    /// `then` was given.
    async fn insert_and_give_up(store: &Store, id: &str) -> Option<Arc<str>> {
        let (ran, ran_with) = tokio::sync::oneshot::channel();
        let insert = store.insert(accepted(id), move |stored| {
            let _ = ran.send(stored.key.id.clone());
        });
        // A zero timeout polls the insert once (submitting its commit) and then drops it.
        let _ = tokio::time::timeout(Duration::ZERO, insert).await;
        tokio::time::timeout(Duration::from_secs(10), ran_with)
            .await
            .ok()?
            .ok()
    }

    /// A store on the data directory at `dir`.
    fn disk_store(dir: &std::path::Path) -> Arc<Store> {
        Store::open(
            &Storage::disk(dir, Durability::Sync),
            WatchHistoryLimit::changes(16),
            DEFAULT_CACHE_BYTES,
            CancellationToken::new(),
        )
        .expect("open")
        .0
    }

    /// Both stores: on disk, and in memory (whose history is only what ended).
    async fn each_store(check: impl AsyncFn(&Store)) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = disk_store(dir.path());
        check(&store).await;
        store.close().await.expect("close");
        check(&Store::new(
            WatchHistoryLimit::changes(16),
            CancellationToken::new(),
        ))
        .await;
    }

    #[tokio::test]
    async fn what_follows_an_insert_runs_even_when_its_caller_stops_waiting() {
        each_store(async |store: &Store| {
            assert_eq!(
                insert_and_give_up(store, "given up").await.as_deref(),
                Some("given up")
            );
        })
        .await;
    }

    /// Accept `id`, stop it (it ends at once, as it is queued) and wait until it has moved
    /// to the history.
    async fn accept_and_end(store: &Store, id: &str) {
        let key = accepted(id).key;
        store.insert(accepted(id), |_| {}).await.expect("accept");
        let stop = Transition::new(key.clone(), Change::Stop, 2);
        let ended = store.apply_all(vec![stop]).await.expect("commit");
        assert_eq!(ended[0].as_ref().expect("stop").0.status, Status::Stopped);
        assert!(store.open_record(&key).is_none(), "{id} left the open set");
    }

    /// Accept `id` and stop it at `end_ms`.
    async fn accept_and_stop_at(store: &Store, id: &str, end_ms: i64) {
        store.insert(accepted(id), |_| {}).await.expect("accept");
        stop_at(store, id, end_ms).await;
    }

    async fn stop_at(store: &Store, id: &str, end_ms: i64) {
        let stop = Transition::new(accepted(id).key, Change::Stop, end_ms);
        store.apply_all(vec![stop]).await.expect("commit")[0]
            .as_ref()
            .expect("stop");
    }

    /// One retention batch at `cutoff_ms` examining at most `budget`: how many it purged.
    async fn purged(store: &Store, cutoff_ms: i64, budget: usize) -> usize {
        purge(store, cutoff_ms, budget).await.0
    }

    /// One retention batch: how many it purged, and why it stopped.
    async fn purge(store: &Store, cutoff_ms: i64, budget: usize) -> (usize, PurgeStop) {
        let purged = store
            .purge_ended_before(cutoff_ms, budget)
            .await
            .expect("purge");
        (purged.invocations, purged.stopped)
    }

    #[tokio::test]
    async fn retention_purges_what_ended_before_the_cutoff_and_frees_its_ids() {
        each_store(async |store: &Store| {
            accept_and_stop_at(store, "late", 30).await;
            accept_and_stop_at(store, "first", 10).await;
            accept_and_stop_at(store, "second", 20).await;
            store
                .insert(accepted("open"), |_| {})
                .await
                .expect("accept");
            let kept = |id: &str| store.summary(&accepted(id).key).expect("read").is_some();

            assert_eq!(purge(store, 25, 1).await, (1, PurgeStop::Budget));
            assert_eq!(purge(store, 25, 10).await, (1, PurgeStop::CaughtUp));
            assert_eq!(purge(store, 25, 10).await, (0, PurgeStop::CaughtUp));
            assert_eq!(
                ["first", "second", "late", "open"].map(kept),
                [false, false, true, true]
            );
            assert_eq!(purged(store, 31, 10).await, 1);
            assert_eq!(purged(store, i64::MAX, 10).await, 0, "open stays");
            assert_eq!(["late", "open"].map(kept), [false, true]);
            store
                .insert(accepted("first"), |_| {})
                .await
                .expect("a purged id is free again");
        })
        .await;
    }

    #[tokio::test]
    async fn a_record_open_when_retention_passed_it_is_purged_once_it_ended_long_enough() {
        each_store(async |store: &Store| {
            store
                .insert(accepted("long"), |_| {})
                .await
                .expect("accept");
            accept_and_stop_at(store, "short", 10).await;
            // Both started before the cutoff; only the one that ended is purged.
            assert_eq!(purged(store, 25, 10).await, 1);
            stop_at(store, "long", 30).await;
            assert_eq!(purged(store, 25, 10).await, 0, "ended after the cutoff");
            assert_eq!(purged(store, 30, 10).await, 0, "not before it either");
            assert_eq!(purged(store, 31, 10).await, 1);
            assert!(store
                .summary(&accepted("long").key)
                .expect("read")
                .is_none());
        })
        .await;
    }

    #[tokio::test]
    async fn retention_keeps_no_more_records_to_look_at_again_than_its_bound() {
        each_store(async |store: &Store| {
            store.history.cap_survivors(1);
            for open in ["a-open", "b-open"] {
                store.insert(accepted(open), |_| {}).await.expect("accept");
            }
            accept_and_stop_at(store, "c-ended", 10).await;
            let kept = |id: &str| store.summary(&accepted(id).key).expect("read").is_some();
            // On disk, "a-open" takes the one place; the scan stops before "b-open", so
            // "c-ended", after it in list order, waits (in memory every record is kept).
            let (first, stopped) = purge(store, 25, 10).await;
            let on_disk = matches!(*store.history, History::Disk(_));
            assert_eq!(
                (first, stopped, kept("c-ended")),
                if on_disk {
                    (0, PurgeStop::HeldBack, true)
                } else {
                    (1, PurgeStop::CaughtUp, false)
                }
            );
            stop_at(store, "a-open", 12).await;
            // "a-open" leaves the survivors as it is purged, and the scan goes on.
            assert_eq!(first + purged(store, 25, 10).await, 2);
            assert_eq!(
                ["a-open", "b-open", "c-ended"].map(kept),
                [false, true, false]
            );
        })
        .await;
    }

    #[tokio::test]
    async fn a_retention_batch_says_whether_the_next_one_gets_further_now() {
        each_store(async |store: &Store| {
            store
                .insert(accepted("a-open"), |_| {})
                .await
                .expect("accept");
            accept_and_stop_at(store, "b-ended", 10).await;
            // A budget spent on what cannot be purged yet: the next batch goes on after it.
            assert_eq!(purge(store, 25, 1).await, (0, PurgeStop::Budget));
            assert_eq!(purge(store, 25, 1).await.0, 1);
            assert_eq!(purge(store, 25, 10).await, (0, PurgeStop::CaughtUp));
            // A later pass looks at what it passed again.
            stop_at(store, "a-open", 12).await;
            assert_eq!(purge(store, 26, 10).await, (1, PurgeStop::CaughtUp));
        })
        .await;
    }

    /// The ids a list of all the test function's invocations in `order` gives, read a page
    /// of `limit` at a time.
    fn list_ids(store: &Store, order: Order, limit: usize) -> Vec<String> {
        let mut ids = Vec::new();
        let mut next_token = String::new();
        loop {
            let query = ListQuery {
                function: accepted("any").key.function,
                qualifier: None,
                id_prefix: String::new(),
                status: None,
                begin: None,
                end: None,
                order,
                limit,
                next_token,
            };
            let page = store.list(&query).expect("list");
            ids.extend(page.invocations.iter().map(|i| i.key.id.to_string()));
            if page.next_token.is_empty() {
                return ids;
            }
            next_token = page.next_token;
        }
    }

    /// "a-open" stays open; "b-ended" and "d-ended" end at 10 and "c-late" at 30; a purge at a
    /// cutoff of 25 takes the two that ended before it, and on disk leaves lists starting at
    /// "a-open", the open record it passed.
    async fn open_ended_and_late_then_purge(store: &Store) {
        store
            .insert(accepted("a-open"), |_| {})
            .await
            .expect("accept");
        accept_and_stop_at(store, "b-ended", 10).await;
        accept_and_stop_at(store, "c-late", 30).await;
        accept_and_stop_at(store, "d-ended", 10).await;
        assert_eq!(purged(store, 25, 10).await, 2);
    }

    /// Where lists of the test function start on `store`'s data directory, and where
    /// retention's next scan of it starts.
    fn places(store: &Store) -> (Floor, Option<Floor>) {
        let History::Disk(disk) = &*store.history else {
            panic!("a store on a data directory");
        };
        let function = accepted("any").key.function;
        (
            disk.raise_to_floor(&function, Bound::Unbounded),
            disk.resumes_at(&function),
        )
    }

    /// The place of the test function's record `id`.
    fn at(id: &str) -> Floor {
        Bound::Included((1, Arc::from(id)))
    }

    #[tokio::test]
    async fn a_list_after_a_purge_starts_past_it_and_still_finds_what_retention_kept() {
        each_store(async |store: &Store| {
            open_ended_and_late_then_purge(store).await;
            let on_disk = matches!(*store.history, History::Disk(_));
            if on_disk {
                // Lists start at the oldest record kept: the open one retention passed.
                assert_eq!(places(store).0, at("a-open"));
            }
            for limit in [1, 2, 50] {
                assert_eq!(list_ids(store, Order::Asc, limit), ["a-open", "c-late"]);
                assert_eq!(list_ids(store, Order::Desc, limit), ["c-late", "a-open"]);
            }
            // Once the open one is purged too, lists start at the one that ended after the
            // cutoff, the oldest record left.
            stop_at(store, "a-open", 12).await;
            assert_eq!(purged(store, 25, 10).await, 1);
            if on_disk {
                assert_eq!(places(store).0, at("c-late"));
            }
            assert_eq!(list_ids(store, Order::Asc, 1), ["c-late"]);
            assert_eq!(list_ids(store, Order::Desc, 1), ["c-late"]);
        })
        .await;
    }

    #[tokio::test]
    async fn retention_goes_on_after_a_restart_from_where_it_had_got_to() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = disk_store(dir.path());
        open_ended_and_late_then_purge(&store).await;
        assert_eq!(places(&store).0, at("a-open"));
        store.close().await.expect("close");
        drop(store);

        // Before retention runs again, lists and its next scan start where it had got to:
        // at the open record it passed, not at the function's oldest key.
        let store = disk_store(dir.path());
        assert_eq!(places(&store), (at("a-open"), Some(at("a-open"))));
        assert_eq!(list_ids(&store, Order::Asc, 1), ["a-open", "c-late"]);
        stop_at(&store, "a-open", 12).await;
        assert_eq!(purged(&store, 25, 10).await, 1);
        assert_eq!(places(&store).0, at("c-late"));
        store.close().await.expect("close");
        drop(store);

        let store = disk_store(dir.path());
        assert_eq!(places(&store).0, at("c-late"));
        assert_eq!(purged(&store, 31, 10).await, 1);
        assert!(list_ids(&store, Order::Asc, 50).is_empty());
        store.close().await.expect("close");
    }

    #[tokio::test]
    async fn a_purge_that_was_not_written_is_found_again() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = disk_store(dir.path());
        open_ended_and_late_then_purge(&store).await;
        stop_at(&store, "a-open", 12).await;
        // The next pass finds "a-open", but its commit is refused: retention and lists go
        // back to where the last written purge left them, and "a-open" is still listed.
        store.close().await.expect("close");
        assert!(store.purge_ended_before(25, 10).await.is_err());
        assert_eq!(places(&store), (at("a-open"), Some(at("a-open"))));
        assert_eq!(list_ids(&store, Order::Asc, 50), ["a-open", "c-late"]);
    }

    #[tokio::test]
    async fn what_starts_after_the_clock_went_back_past_retention_is_not_hidden() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = disk_store(dir.path());
        open_ended_and_late_then_purge(&store).await;
        // The clock went back: an invocation starts before where the kept records began.
        let key = accepted("early").key;
        let early = Invocation::accept(key, "LATEST", "{}".into(), "req", 0);
        store.insert(early, |_| {}).await.expect("accept");
        // Retention's next pass, at a cutoff before its place, starts over from the oldest.
        assert_eq!(purged(&store, 0, 10).await, 0);
        assert_eq!(places(&store).0, Bound::Unbounded);
        let all = ["early", "a-open", "c-late"];
        assert_eq!(list_ids(&store, Order::Asc, 50), all);
        store.close().await.expect("close");
        drop(store);

        // And a restart does not bring the old place back.
        let store = disk_store(dir.path());
        assert_eq!(list_ids(&store, Order::Asc, 50), all);
        stop_at(&store, "a-open", 12).await;
        assert_eq!(purged(&store, 25, 10).await, 1);
        assert_eq!(places(&store).0, Bound::Included((0, Arc::from("early"))));
        assert_eq!(list_ids(&store, Order::Asc, 50), ["early", "c-late"]);
        store.close().await.expect("close");
    }

    #[tokio::test]
    async fn a_record_read_from_disk_is_cached_on_its_second_read_not_its_first() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = disk_store(dir.path());
        for id in ["polled", "once 1", "once 2", "once 3"] {
            accept_and_end(&store, id).await;
        }
        store.close().await.expect("close");
        drop(store);
        // Reopened, nothing is cached: every read below goes to the disk until one is.
        let store = disk_store(dir.path());
        let cached = || store.size().cached;
        let read = |id: &str| {
            let found = store.summary(&accepted(id).key).expect("read");
            assert!(found.is_some(), "{id} is stored");
        };
        assert_eq!(cached(), 0);
        for id in ["polled", "once 1", "once 2", "once 3"] {
            read(id);
        }
        assert_eq!(cached(), 0, "records read once are not cached");
        read("polled");
        assert_eq!(cached(), 1, "a record read again is");
        read("polled");
        read("once 1");
        assert_eq!(cached(), 2);
        store.close().await.expect("close");
    }

    #[tokio::test]
    async fn an_id_looked_for_before_another_accept_of_it_ended_is_still_refused() {
        each_store(async |store: &Store| {
            // The look finds nothing; then another accept of the same id runs and ends, so
            // that under the lock the id is in the history and no longer open.
            let looked = store.look_up_id(&accepted("raced").key).expect("look");
            assert!(matches!(looked, IdLookup::Looked { found: false, .. }));
            accept_and_end(store, "raced").await;
            let late = store
                .commit(|commit| store.insert_now(commit, accepted("raced"), looked))
                .await;
            assert!(
                matches!(late, Err(StoreError::InvocationAlreadyExists(_))),
                "{late:?}"
            );
        })
        .await;
    }

    #[tokio::test]
    async fn a_look_that_found_an_id_free_holds_until_the_lock() {
        each_store(async |store: &Store| {
            accept_and_end(store, "ended before").await;
            let taken = store.insert(accepted("ended before"), |_| {}).await;
            assert!(
                matches!(taken, Err(StoreError::InvocationAlreadyExists(_))),
                "{taken:?}"
            );
            let looked = store.look_up_id(&accepted("free").key).expect("look");
            let stored = store
                .commit(|commit| store.insert_now(commit, accepted("free"), looked))
                .await
                .expect("a free id is accepted");
            assert_eq!(&*stored.key.id, "free");
        })
        .await;
    }
}
