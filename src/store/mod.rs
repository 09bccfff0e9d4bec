//! The serving store: invocation records in a `DashMap`, ordered per-function indexes for
//! lists, the catalog of configs and functions, and the watch hub.
//!
//! Reads (get, list, watch) go straight to these structures and never wait on the engine.
//! Every mutation goes through `Store::commit`, the one narrow write path: it takes the
//! commit lock, checks the mutation against current state, applies it, and publishes its
//! events to the hub in commit order. Durability slots in behind that one path.

mod catalog;
mod error;
mod hub;
mod index;
pub mod page;
mod watch;

use std::sync::Arc;

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use parking_lot::{Mutex, RwLock};
use tokio_util::sync::CancellationToken;

use crate::model::{
    transition, AsyncInvokeConfig, Change, DestinationStatus, FunctionKey, Invocation,
    InvocationKey, Status, StoredConfig,
};

pub use catalog::{ConfigKey, ConfigPage, FunctionMeta, FunctionPage};
pub use error::StoreError;
pub use hub::StoredChange;
pub use index::{ListQuery, Order, Page, SCAN_BUDGET};
pub use watch::{ChangesWatch, InvocationWatch, WatchScope};

use catalog::Catalog;
use hub::Hub;
use index::FunctionIndex;

/// Default number of recent changes kept for resuming function-level watches.
pub const DEFAULT_WATCH_HISTORY: usize = 100_000;

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
    /// Result record delivered in the same commit if the change ends in Succeeded.
    pub on_success: Option<Invocation>,
    /// Result record delivered in the same commit if the change ends in Failed or Expired.
    pub on_failure: Option<Invocation>,
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

/// The in-memory serving store.
pub struct Store {
    records: DashMap<InvocationKey, Invocation>,
    indexes: DashMap<FunctionKey, Arc<RwLock<FunctionIndex>>>,
    catalog: RwLock<Catalog>,
    hub: Hub,
    /// Serialises commits, so that checks, applies and sequence numbers follow one order.
    commit_lock: Mutex<()>,
}

impl Store {
    /// An empty store keeping `watch_history` recent changes; watches end when `shutdown` fires.
    pub fn new(watch_history: usize, shutdown: CancellationToken) -> Arc<Self> {
        Arc::new(Store {
            records: DashMap::new(),
            indexes: DashMap::new(),
            catalog: RwLock::new(Catalog::default()),
            hub: Hub::new(watch_history, shutdown),
            commit_lock: Mutex::new(()),
        })
    }

    /// The one write path: every mutation runs `apply` through here, under the commit lock,
    /// so that checks, applies and sequence numbers follow one order. Durability goes here.
    async fn commit<T>(
        &self,
        apply: impl FnOnce() -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let _ordered = self.commit_lock.lock();
        apply()
    }

    /// Store a newly accepted invocation; its id must be free in its function.
    pub async fn insert(&self, invocation: Invocation) -> Result<Arc<Invocation>, StoreError> {
        self.commit(|| self.insert_now(invocation)).await
    }

    /// Apply a transition. Returns the invocation after it (without events) and whether it
    /// changed (a stop while Stopping does not).
    pub async fn apply(
        &self,
        transition: Transition,
    ) -> Result<(Arc<Invocation>, bool), StoreError> {
        self.commit(|| self.apply_now(transition)).await
    }

    /// Create or replace a config at `now_ms`.
    pub async fn put_config(
        &self,
        key: ConfigKey,
        config: AsyncInvokeConfig,
        now_ms: i64,
    ) -> Result<StoredConfig, StoreError> {
        self.commit(|| Ok(self.catalog.write().put(key, config, now_ms)))
            .await
    }

    /// Remove a config, returning it.
    pub async fn delete_config(&self, key: ConfigKey) -> Result<StoredConfig, StoreError> {
        self.commit(|| self.catalog.write().delete(&key)).await
    }

    fn insert_now(&self, invocation: Invocation) -> Result<Arc<Invocation>, StoreError> {
        let key = invocation.key.clone();
        let config_key = ConfigKey {
            function: key.function.clone(),
            qualifier: invocation.qualifier.clone(),
        };
        let summary = Arc::new(invocation.without_events());
        let first_event = invocation.events[0].clone();
        match self.records.entry(key.clone()) {
            Entry::Occupied(_) => return Err(StoreError::InvocationAlreadyExists(key)),
            Entry::Vacant(slot) => {
                slot.insert(invocation);
            }
        }
        self.indexes
            .entry(key.function.clone())
            .or_default()
            .write()
            .insert(summary.started_time_ms, key.id.clone());
        if !self.catalog.read().knows(&config_key) {
            self.catalog.write().register(config_key);
        }
        self.hub.publish(first_event, summary.clone());
        Ok(summary)
    }

    fn apply_now(&self, t: Transition) -> Result<(Arc<Invocation>, bool), StoreError> {
        // Check first, so that a refused transition delivers no destination record.
        let to = {
            let record = self
                .records
                .get(&t.key)
                .ok_or_else(|| StoreError::InvocationNotFound(t.key.clone()))?;
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
                return Ok((Arc::new(record.without_events()), false));
            }
            transition(record.status, t.change.trigger()).map_err(|source| {
                StoreError::IllegalTransition {
                    key: t.key.clone(),
                    source,
                }
            })?
        };
        let destination = match to {
            Status::Succeeded => t.on_success,
            Status::Failed | Status::Expired => t.on_failure,
            _ => None,
        };
        let destination_status = destination.map(|record| match self.insert_now(record) {
            Ok(_) => DestinationStatus::Succeeded,
            Err(_) => DestinationStatus::Failed,
        });

        let mut record = self
            .records
            .get_mut(&t.key)
            .ok_or_else(|| StoreError::InvocationNotFound(t.key.clone()))?;
        if let Some(status) = destination_status {
            record.destination_status = status;
        }
        let event = match record.apply(&t.change, t.now_ms) {
            Ok(event) => event.cloned(),
            Err(source) => return Err(StoreError::IllegalTransition { key: t.key, source }),
        };
        let summary = Arc::new(record.without_events());
        drop(record);
        let changed = event.is_some();
        if let Some(event) = event {
            self.hub.publish(event, summary.clone());
        }
        if summary.status.is_terminal() && !t.keep_record {
            self.remove_now(&summary);
        }
        Ok((summary, changed))
    }

    /// Drop a record and its index entry (a terminal record of a non-stateful function, or one
    /// past retention). Its id becomes free again.
    fn remove_now(&self, invocation: &Invocation) {
        self.records.remove(&invocation.key);
        if let Some(index) = self.indexes.get(&invocation.key.function) {
            index
                .write()
                .remove(invocation.started_time_ms, &invocation.key.id);
        }
    }

    /// One invocation with its events.
    pub fn get(&self, key: &InvocationKey) -> Option<Invocation> {
        self.records.get(key).map(|r| r.clone())
    }

    /// One page of a function's invocations.
    pub fn list(&self, query: &ListQuery) -> Result<Page, StoreError> {
        let Some(index) = self.indexes.get(&query.function).map(|i| i.clone()) else {
            // Still decode the token, so that a bad one is refused for an empty function too.
            let empty = FunctionIndex::default();
            return index::list(&empty, query, |_| None);
        };
        let index = index.read();
        index::list(&index, query, |id| {
            self.records
                .get(&query.function.invocation_ref(id))
                .map(|r| r.without_events())
        })
    }

    /// How many invocations are stored (all accounts).
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether none are stored.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
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
            .list_configs(function, limit, next_token)
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
            .list_functions(account, limit, next_token)
    }

    /// Watch one invocation's events after `from_event_id`.
    pub fn watch_invocation(
        self: &Arc<Self>,
        key: InvocationKey,
        from_event_id: u64,
    ) -> Result<InvocationWatch, StoreError> {
        InvocationWatch::start(self.clone(), key, from_event_id)
    }

    /// Watch the changes of a scope after `from_sequence` (0: from now on).
    pub fn watch_changes(
        self: &Arc<Self>,
        scope: WatchScope,
        from_sequence: u64,
    ) -> Result<ChangesWatch, StoreError> {
        ChangesWatch::start(self.clone(), scope, from_sequence)
    }

    /// How many invocations have live watch channels (released when their last watcher ends).
    pub fn watched_invocations(&self) -> usize {
        self.hub.watched_invocations()
    }
}
