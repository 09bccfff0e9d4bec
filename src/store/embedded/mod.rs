//! The embedded backend: the store (open invocations in memory, history in the data
//! directory or in memory) with the ready queues, leases and deadlines of one process beside
//! it. Queues, leases and deadlines live only in memory: after a restart, [`Backend::recover`]
//! rebuilds queues and deadlines from the open invocations, and attempts that were held count
//! as interrupted (their leases died with the process).
//!
//! Every commit is followed by bringing those structures in step with what committed: an
//! Enqueued invocation is queued, an ended one leaves its queue and loses its deadline, any
//! other is armed at the one deadline the engine's [`Schedule`] gives it.

mod lease;
mod queue;
mod timers;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::model::{
    AsyncInvokeConfig, DestinationStatus, FunctionKey, Invocation, InvocationKey, Status,
    StoredConfig,
};

use super::backend::{
    is_held, Backend, ChangeCursor, Claim, Claimed, Committed, Decide, Due, Lease, PollTarget,
    Purged, QueueDepth, Recovered, Schedule, WorkWaiter, WorkingSet,
};
use super::{
    ChangesWatch, ConfigKey, ConfigPage, FunctionPage, InvocationWatch, ListQuery, Page,
    ResumeFrom, Store, StoreError, StoreSize, StoredChange, Transition, WatchScope,
};

use lease::Leases;
use queue::ReadyQueues;
use timers::Timers;

/// The embedded backend.
pub struct Embedded {
    state: Arc<WorkState>,
    /// Where the next poll starts among its targets, so that none is always served last.
    poll_rotation: AtomicUsize,
}

/// What is kept for open work beside the store; shared with the hooks that run once an
/// accepted invocation is durable.
struct WorkState {
    store: Arc<Store>,
    queues: Arc<ReadyQueues>,
    leases: Leases,
    timers: Timers,
    schedule: Arc<dyn Schedule>,
    clock: Clock,
}

impl Embedded {
    /// Ready queues, leases and deadlines over `store`, deadlines given by `schedule` and read
    /// on `clock`.
    pub fn new(store: Arc<Store>, schedule: Arc<dyn Schedule>, clock: Clock) -> Self {
        Embedded {
            state: Arc::new(WorkState {
                store,
                queues: Arc::default(),
                leases: Leases::default(),
                timers: Timers::new(clock.clone()),
                schedule,
                clock,
            }),
            poll_rotation: AtomicUsize::new(0),
        }
    }
}

fn config_key(record: &Invocation) -> ConfigKey {
    ConfigKey {
        function: record.key.function.clone(),
        qualifier: record.qualifier.clone(),
    }
}

impl WorkState {
    /// An accepted (or delivered) invocation is ready: queued, its expiry armed.
    fn enqueued(&self, invocation: &Invocation) {
        self.queues
            .push(&invocation.qualifier, invocation.key.clone());
        self.arm(&invocation.key);
    }

    /// Arm the one deadline `key` has in its state now, replacing the one it had; one that
    /// ended (or is gone) has none, and leaves its queue.
    fn arm(&self, key: &InvocationKey) {
        // No lock is held across another: the record is shared out of the open set first.
        let deadline = self.store.open_record(key).and_then(|record| {
            let lease = self.leases.active(key, record.attempts);
            self.store
                .with_effective_config(&config_key(&record), |config| {
                    self.schedule.deadline_ms(&record, config, lease.as_ref())
                })
        });
        match deadline {
            Some(at_ms) => self
                .timers
                .schedule(self.clock.instant_at(at_ms), key.clone()),
            None => {
                self.timers.cancel(key);
                self.queues.remove(key);
            }
        }
    }

    /// Bring queues and deadlines in step with an applied transition: its delivered
    /// destination record is ready, a requeued invocation goes back in its queue.
    fn follow(&self, invocation: &Invocation, destinations: &[Option<Box<Invocation>>; 2]) {
        if !is_held(invocation.status) {
            // A lease is over with its attempt.
            self.leases.end(&invocation.key, invocation.attempts);
        }
        if invocation.destination_status == DestinationStatus::Succeeded {
            let delivered = match invocation.status {
                Status::Succeeded => &destinations[0],
                _ => &destinations[1],
            };
            if let Some(record) = delivered {
                self.enqueued(record);
            }
        }
        if invocation.status == Status::Enqueued {
            self.queues
                .push(&invocation.qualifier, invocation.key.clone());
        }
        self.arm(&invocation.key);
    }

    async fn apply(&self, transitions: Vec<Transition>) -> Committed<(Arc<Invocation>, bool)> {
        let following = Following::of(&transitions);
        let results = self.store.apply_all(transitions).await?;
        self.follow_all(following, &results);
        Ok(results)
    }

    /// Follow each applied change of a commit (see [`Following`]).
    fn follow_all(
        &self,
        following: Following,
        results: &[Result<(Arc<Invocation>, bool), StoreError>],
    ) {
        for ((result, destinations), last) in results
            .iter()
            .zip(&following.destinations)
            .zip(following.last_of_key)
        {
            if let (Ok((invocation, _)), true) = (result, last) {
                self.follow(invocation, destinations);
            }
        }
    }
}

/// What bringing queues and deadlines in step with a commit needs of its transitions, taken
/// before they are applied: the destination records each may deliver, and whether it is the
/// last change to its invocation in the commit (a claim's Dispatch and Start are adjacent;
/// what follows them is done once, after the last).
struct Following {
    destinations: Vec<[Option<Box<Invocation>>; 2]>,
    last_of_key: Vec<bool>,
}

impl Following {
    fn of(transitions: &[Transition]) -> Self {
        Following {
            destinations: transitions
                .iter()
                .map(|t| [t.on_success.clone(), t.on_failure.clone()])
                .collect(),
            last_of_key: transitions
                .iter()
                .zip(transitions.iter().skip(1).map(Some).chain([None]))
                .map(|(this, next)| next.is_none_or(|next| next.key != this.key))
                .collect(),
        }
    }
}

/// Wakes a poller when a push reaches one of the functions it polls.
struct QueueWaiter(queue::Waiter);

#[async_trait]
impl WorkWaiter for QueueWaiter {
    async fn woken(&self) {
        self.0.woken().await
    }
}

#[async_trait]
impl ChangeCursor for InvocationWatch {
    async fn next(&mut self) -> Option<Result<Arc<StoredChange>, StoreError>> {
        InvocationWatch::next(self).await
    }
}

#[async_trait]
impl ChangeCursor for ChangesWatch {
    async fn next(&mut self) -> Option<Result<Arc<StoredChange>, StoreError>> {
        ChangesWatch::next(self).await
    }
}

#[async_trait]
impl Backend for Embedded {
    async fn accept(&self, invocations: Vec<Invocation>) -> Committed<Arc<Invocation>> {
        let state = self.state.clone();
        self.state
            .store
            .insert_all(invocations, move |stored| state.enqueued(stored))
            .await
    }

    async fn apply(&self, transitions: Vec<Transition>) -> Committed<(Arc<Invocation>, bool)> {
        self.state.apply(transitions).await
    }

    async fn claim(
        &self,
        targets: &[PollTarget],
        max: usize,
        now_ms: i64,
        lease_deadline_ms: i64,
        decide: Decide,
    ) -> Result<Vec<Claimed>, StoreError> {
        let state = &self.state;
        let offset = self.poll_rotation.fetch_add(1, Ordering::Relaxed);
        let keys = state.queues.pop(targets, max, offset);
        let mut transitions = Vec::with_capacity(keys.len() * 2);
        // For each lease to grant: its key, attempt, and where its last transition is.
        let mut leasing = Vec::with_capacity(keys.len());
        for key in keys {
            // Stale entries (stopped or expired while queued) are skipped.
            let Some(record) = state.store.open_summary(&key) else {
                continue;
            };
            if record.status != Status::Enqueued {
                continue;
            }
            match state
                .store
                .with_effective_config(&config_key(&record), |config| decide(&record, config))
            {
                Claim::Lease {
                    attempt,
                    transitions: starting,
                } => {
                    transitions.extend(starting);
                    leasing.push((key, attempt, transitions.len() - 1));
                }
                Claim::Instead(transition) => transitions.push(transition),
            }
        }
        if transitions.is_empty() {
            return Ok(Vec::new());
        }
        let following = Following::of(&transitions);
        let results = state.store.apply_all(transitions).await?;
        let mut claimed = Vec::with_capacity(leasing.len());
        // Leases first, so that the deadlines armed below are the leases'.
        for (key, attempt, last) in leasing {
            let Some(Ok((invocation, _))) = results.get(last) else {
                continue;
            };
            let token = state.leases.grant(
                key,
                Lease {
                    attempt,
                    started_ms: now_ms,
                    deadline_ms: lease_deadline_ms,
                },
            );
            claimed.push(Claimed {
                token,
                invocation: invocation.clone(),
                attempt,
                deadline_ms: lease_deadline_ms,
            });
        }
        state.follow_all(following, &results);
        Ok(claimed)
    }

    fn wait_for_work(&self, targets: &[PollTarget]) -> Box<dyn WorkWaiter> {
        Box::new(QueueWaiter(self.state.queues.wait_on(targets)))
    }

    fn verify_lease(&self, token: &str, account: &str) -> Option<(InvocationKey, u32)> {
        self.state.leases.verify(token, account)
    }

    async fn lease(&self, key: &InvocationKey, attempt: u32) -> Result<Option<Lease>, StoreError> {
        Ok(self.state.leases.active(key, attempt))
    }

    async fn extend_lease(
        &self,
        key: &InvocationKey,
        attempt: u32,
        deadline_ms: i64,
    ) -> Result<bool, StoreError> {
        let extended = self.state.leases.extend(key, attempt, deadline_ms);
        if extended {
            self.state.arm(key);
        }
        Ok(extended)
    }

    async fn end_lease(&self, key: &InvocationKey, attempt: u32) -> Result<bool, StoreError> {
        Ok(self.state.leases.end(key, attempt))
    }

    async fn next_due(&self, shutdown: &CancellationToken) -> Option<Vec<Due>> {
        let state = &self.state;
        loop {
            let keys = state.timers.next_due(shutdown).await?;
            let due: Vec<Due> = keys
                .iter()
                .filter_map(|key| state.store.open_record(key))
                .filter(|record| !record.status.is_terminal())
                .map(|record| Due {
                    lease: state.leases.active(&record.key, record.attempts),
                    status_since_ms: record.status_since_ms(),
                    config: state.store.effective_config(&config_key(&record)),
                    record: record.without_events(),
                })
                .collect();
            if !due.is_empty() {
                return Some(due);
            }
        }
    }

    async fn rearm(&self, key: &InvocationKey) {
        self.state.arm(key);
    }

    async fn retry_due(&self, keys: Vec<InvocationKey>, at_ms: i64) {
        let at = self.state.clock.instant_at(at_ms);
        for key in keys {
            self.state.timers.schedule(at, key);
        }
    }

    async fn recover(&self) -> Result<Recovered, StoreError> {
        let state = &self.state;
        let mut recovered = Recovered::default();
        for invocation in state.store.unfinished() {
            match invocation.status {
                Status::Enqueued => {
                    state.enqueued(&invocation);
                    recovered.queued += 1;
                }
                Status::Retrying => {
                    state.arm(&invocation.key);
                    recovered.retrying += 1;
                }
                Status::Stopping => {
                    state.arm(&invocation.key);
                    recovered.stopping += 1;
                }
                Status::Dequeued | Status::Running => recovered.interrupted.push(invocation),
                Status::Succeeded
                | Status::Failed
                | Status::Stopped
                | Status::Expired
                | Status::Invalid => {}
            }
        }
        Ok(recovered)
    }

    async fn put_config(
        &self,
        key: ConfigKey,
        config: AsyncInvokeConfig,
        now_ms: i64,
    ) -> Result<StoredConfig, StoreError> {
        self.state.store.put_config(key, config, now_ms).await
    }

    async fn delete_config(&self, key: ConfigKey) -> Result<StoredConfig, StoreError> {
        self.state.store.delete_config(key).await
    }

    async fn purge_ended_before(
        &self,
        cutoff_ms: i64,
        budget: usize,
    ) -> Result<Purged, StoreError> {
        self.state.store.purge_ended_before(cutoff_ms, budget).await
    }

    async fn get(&self, key: &InvocationKey) -> Result<Option<Arc<Invocation>>, StoreError> {
        self.state.store.get_shared(key)
    }

    async fn summary(&self, key: &InvocationKey) -> Result<Option<Invocation>, StoreError> {
        self.state.store.summary(key)
    }

    async fn list(&self, query: &ListQuery) -> Result<Page, StoreError> {
        self.state.store.list(query)
    }

    async fn config(&self, key: &ConfigKey) -> Result<StoredConfig, StoreError> {
        self.state.store.config(key)
    }

    async fn effective_config(&self, key: &ConfigKey) -> Result<AsyncInvokeConfig, StoreError> {
        Ok(self.state.store.effective_config(key))
    }

    async fn list_configs(
        &self,
        function: &FunctionKey,
        limit: usize,
        next_token: &str,
    ) -> Result<ConfigPage, StoreError> {
        self.state.store.list_configs(function, limit, next_token)
    }

    async fn list_functions(
        &self,
        account: &Arc<str>,
        limit: usize,
        next_token: &str,
    ) -> Result<FunctionPage, StoreError> {
        self.state.store.list_functions(account, limit, next_token)
    }

    async fn watch_invocation(
        &self,
        key: InvocationKey,
        from_event_id: u64,
    ) -> Result<Box<dyn ChangeCursor>, StoreError> {
        Ok(Box::new(
            self.state.store.watch_invocation(key, from_event_id)?,
        ))
    }

    async fn watch_changes(
        &self,
        scope: WatchScope,
        from: ResumeFrom,
    ) -> Result<Box<dyn ChangeCursor>, StoreError> {
        Ok(Box::new(self.state.store.watch_changes(scope, from)?))
    }

    fn queue_depth(&self, function: &FunctionKey) -> usize {
        self.state.queues.depth(function)
    }

    fn busiest_queues(&self, limit: usize) -> Vec<QueueDepth> {
        let state = &self.state;
        let now_ms = state.clock.now_ms();
        state
            .queues
            .busiest(limit)
            .into_iter()
            .map(|(function, depth, oldest)| {
                // Queued at its last event: accepted, or put back after a retry's backoff.
                let queued_ms = state
                    .store
                    .open_record(&oldest)
                    .map_or(now_ms, |record| record.status_since_ms());
                let waited = u64::try_from(now_ms.saturating_sub(queued_ms)).unwrap_or(0);
                QueueDepth {
                    function,
                    depth,
                    oldest_age: Duration::from_millis(waited),
                }
            })
            .collect()
    }

    fn working_set(&self) -> WorkingSet {
        WorkingSet {
            pending_timers: self.state.timers.len(),
            active_leases: self.state.leases.active_count(),
            queued: self.state.queues.len(),
        }
    }

    fn size(&self) -> StoreSize {
        self.state.store.size()
    }

    fn writable(&self) -> bool {
        self.state.store.writable()
    }

    fn write_running_for(&self) -> Option<Duration> {
        self.state.store.write_running_for()
    }
}
