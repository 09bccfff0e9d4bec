//! The storage boundary under the engine: everything the engine needs from durable state, as
//! one interface. The engine decides (which change an outcome, a deadline or a stop calls
//! for); a backend stores and hands out work: it commits groups of changes atomically, keeps
//! what is ready for workers, leases and deadlines consistent with what it committed, and
//! serves reads and watches.
//!
//! Each lifecycle step is one call that a backend can make atomic on its own terms: the
//! embedded backend ([`super::Embedded`]) under its commit lock with in-memory queues, leases
//! and timers beside the store; a shared database would make a claim one transaction over
//! the rows it locks, keep leases and deadlines as columns of those rows, and feed the same
//! watch hub from its change notifications. Every change the engine asks for is fenced (by
//! attempt and status, checked against the state at commit), so a step that two callers race
//! to take is applied once and refused to the other.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::model::{
    AsyncInvokeConfig, FunctionKey, Invocation, InvocationKey, Status, StoredConfig,
};

use super::{
    ConfigKey, ConfigPage, FunctionPage, ListQuery, Page, ResumeFrom, StoreError, StoreSize,
    StoredChange, Transition, WatchScope,
};

/// Per-item outcomes of one commit (each as the lone commit of that item would answer); the
/// outer error is the commit's own (storage, shutdown).
pub type Committed<T> = Result<Vec<Result<T, StoreError>>, StoreError>;

/// What one batch of retention did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Purged {
    /// Finished invocations dropped.
    pub invocations: usize,
    /// Why the batch stopped.
    pub stopped: PurgeStop,
}

/// Why a batch of retention stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PurgeStop {
    /// At its budget: a batch started now goes on past what this one examined.
    Budget,
    /// Every finished invocation that ended before the cutoff is dropped.
    CaughtUp,
    /// Short of the cutoff, at what only a later pass can get past: a record still settling
    /// into the history, records kept to look at again at their bound, a read that failed
    /// part-way, another replica running retention on the same database.
    HeldBack,
}

/// What one poll asks for: a function, and optionally one qualifier of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollTarget {
    /// The function.
    pub function: FunctionKey,
    /// Only this qualifier (None: any).
    pub qualifier: Option<Arc<str>>,
}

/// A lease a worker holds on one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// The attempt it covers.
    pub attempt: u32,
    /// When the attempt started, epoch ms.
    pub started_ms: i64,
    /// When it runs out unless extended, epoch ms.
    pub deadline_ms: i64,
}

/// What the engine makes of a queued invocation a poll took.
#[derive(Debug)]
pub enum Claim {
    /// Apply these changes and, once they commit, lease `attempt` to the poller.
    Lease {
        /// The attempt the lease covers.
        attempt: u32,
        /// The changes that start it.
        transitions: Vec<Transition>,
    },
    /// Apply this change instead, with no lease (it expired while queued).
    Instead(Transition),
}

/// A claim a backend carried out: the invocation is leased to the poller.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// The lease token.
    pub token: String,
    /// The invocation after its start (with payload, without events).
    pub invocation: Arc<Invocation>,
    /// Attempt number, from 1.
    pub attempt: u32,
    /// Lease deadline, epoch ms.
    pub deadline_ms: i64,
}

/// How a claim is decided: from the queued invocation and its effective config. Owned, so
/// that a backend may decide inside a commit it runs on another task.
pub type Decide = Arc<dyn Fn(&Invocation, &AsyncInvokeConfig) -> Claim + Send + Sync>;

/// How workers' reports are decided: from the `n`th reported invocation as it is when the
/// reports commit (`None` if gone), the transition the report calls for, or `None` when it
/// calls for none (the decider keeps why). Owned, as [`Decide`] is; a backend may call it
/// again for the same report if it retries the commit.
pub type DecideReport = Arc<dyn Fn(usize, Option<Current>) -> Option<Transition> + Send + Sync>;

/// Per-report outcomes: `None` where nothing was decided, else how applying the decided
/// transition went (as in [`Committed`]).
pub type ReportOutcomes = Vec<Option<Result<(Arc<Invocation>, bool), StoreError>>>;

/// What [`Backend::report`] answers: each report's outcome, or the commit's own error.
pub type Reported = Result<ReportOutcomes, StoreError>;

/// An open invocation whose deadline came, with what deciding about it takes.
#[derive(Debug, Clone)]
pub struct Due {
    /// The invocation (without events).
    pub record: Invocation,
    /// Its effective config.
    pub config: AsyncInvokeConfig,
    /// The lease on its current attempt, if a worker holds one.
    pub lease: Option<Lease>,
    /// When it entered its current status (its last event), epoch ms.
    pub status_since_ms: i64,
}

/// An invocation as it is now, with what deciding about a worker's report on it takes.
#[derive(Debug, Clone)]
pub struct Current {
    /// The invocation (without events).
    pub record: Invocation,
    /// Its effective config.
    pub config: AsyncInvokeConfig,
    /// The lease on its current attempt, if a worker holds one.
    pub lease: Option<Lease>,
}

/// When things happen to an open invocation: the engine's rules, given to the backend so that
/// it can keep each invocation's one deadline in step with every change it commits.
pub trait Schedule: Send + Sync {
    /// When something next happens to `record` (whole, with its events) unless a worker or a
    /// caller acts first, epoch ms; `None` once it ended. `lease` is the lease on its current
    /// attempt, if held.
    fn deadline_ms(
        &self,
        record: &Invocation,
        config: &AsyncInvokeConfig,
        lease: Option<&Lease>,
    ) -> Option<i64>;
}

/// What a backend took up again after a restart.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Enqueued invocations put back in their queues.
    pub queued: usize,
    /// Retrying invocations whose backoff was armed again.
    pub retrying: usize,
    /// Stopping invocations whose grace period was armed again.
    pub stopping: usize,
    /// Attempts that were held by workers whose leases did not survive (without events):
    /// the engine ends them as failed.
    pub interrupted: Vec<Invocation>,
}

/// Counts of what a backend holds for open work, each bounded by the open invocations.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkingSet {
    /// Deadlines armed: at most one per open invocation.
    pub pending_timers: usize,
    /// Leases workers hold.
    pub active_leases: usize,
    /// Invocations ready for workers.
    pub queued: usize,
}

/// One function's ready queue, for metrics.
#[derive(Debug, Clone)]
pub struct QueueDepth {
    /// The function.
    pub function: FunctionKey,
    /// Invocations queued.
    pub depth: usize,
    /// How long the one queued first has waited since it was queued.
    pub oldest_age: Duration,
}

/// Wakes a poller when work may have arrived for what it polls; held across its wait.
#[async_trait]
pub trait WorkWaiter: Send + Sync {
    /// Resolves when work may have arrived since the waiter was made (or last woke).
    async fn woken(&self);
}

/// A watch: stored changes from where it resumed, then live ones, in order, each once. It
/// ends (`None`) when there is nothing more to say: the invocation watched ended, or the
/// server is shutting down. An error ends it too (it fell too far behind, say).
#[async_trait]
pub trait ChangeCursor: Send {
    /// The next change.
    async fn next(&mut self) -> Option<Result<Arc<StoredChange>, StoreError>>;
}

/// Durable state under the engine.
#[async_trait]
pub trait Backend: Send + Sync {
    /// Store newly accepted (Enqueued) invocations in one commit, each id free in its
    /// function; each stored one becomes ready for workers with its deadline armed, even if
    /// the caller stops waiting.
    async fn accept(&self, invocations: Vec<Invocation>) -> Committed<Arc<Invocation>>;

    /// Apply `transitions` in one commit, in order; each answers the invocation after it
    /// (without events) and whether it changed. Queues and deadlines follow what committed,
    /// a delivered destination record becomes ready as an accepted one does, and the lease
    /// on an attempt that ended is over with it.
    async fn apply(&self, transitions: Vec<Transition>) -> Committed<(Arc<Invocation>, bool)>;

    /// Take up to `max` ready invocations of `targets` (fairly across them), decide each with
    /// `decide`, and apply the decisions in one commit; the claims that committed are leased
    /// until `lease_deadline_ms` from `now_ms`.
    async fn claim(
        &self,
        targets: &[PollTarget],
        max: usize,
        now_ms: i64,
        lease_deadline_ms: i64,
        decide: Decide,
    ) -> Result<Vec<Claimed>, StoreError>;

    /// A waiter woken when any of `targets` may have new work; made before looking for work,
    /// so that work arriving in between still wakes it.
    fn wait_for_work(&self, targets: &[PollTarget]) -> Box<dyn WorkWaiter>;

    /// The invocation and attempt `token` leases, if this backend made it for an invocation
    /// of `account` (a token of another account is as unknown as a forged one).
    fn verify_lease(&self, token: &str, account: &str) -> Option<(InvocationKey, u32)>;

    /// The lease on attempt `attempt` of `key`, if a worker holds it (even past its deadline,
    /// until it is ended).
    async fn lease(&self, key: &InvocationKey, attempt: u32) -> Result<Option<Lease>, StoreError>;

    /// Move the deadline of the lease on attempt `attempt` of `key`; false if it is not held.
    async fn extend_lease(
        &self,
        key: &InvocationKey,
        attempt: u32,
        deadline_ms: i64,
    ) -> Result<bool, StoreError>;

    /// End the lease on attempt `attempt` of `key`; true if it was held until now (so that of
    /// two callers ending it, exactly one is told it did).
    async fn end_lease(&self, key: &InvocationKey, attempt: u32) -> Result<bool, StoreError>;

    /// Wait until deadlines come due and take them (each taken once), or `None` once
    /// `shutdown` fires.
    async fn next_due(&self, shutdown: &CancellationToken) -> Option<Vec<Due>>;

    /// Arm the deadline of `key` again from its state now (one taken that did not apply).
    async fn rearm(&self, key: &InvocationKey);

    /// Offer the deadlines of `keys` again at `at_ms` (taken, but their changes could not be
    /// committed).
    async fn retry_due(&self, keys: Vec<InvocationKey>, at_ms: i64);

    /// After a restart: make ready, and arm, what the previous run left open.
    async fn recover(&self) -> Result<Recovered, StoreError>;

    /// Create or replace a config at `now_ms`.
    async fn put_config(
        &self,
        key: ConfigKey,
        config: AsyncInvokeConfig,
        now_ms: i64,
    ) -> Result<StoredConfig, StoreError>;

    /// Remove a config.
    async fn delete_config(&self, key: ConfigKey) -> Result<StoredConfig, StoreError>;

    /// One batch of retention: drop finished invocations that ended before `cutoff_ms`,
    /// examining or dropping at most `budget` of them.
    async fn purge_ended_before(&self, cutoff_ms: i64, budget: usize)
        -> Result<Purged, StoreError>;

    /// One invocation with its events.
    async fn get(&self, key: &InvocationKey) -> Result<Option<Arc<Invocation>>, StoreError>;

    /// One invocation without its events (cheaper, for decisions about it).
    async fn summary(&self, key: &InvocationKey) -> Result<Option<Invocation>, StoreError>;

    /// Each of `keys` as it is now (`None` if gone), with its config and the lease on its
    /// current attempt (a backend behind a network answers them in one read).
    async fn current(&self, keys: &[InvocationKey]) -> Result<Vec<Option<Current>>, StoreError> {
        let mut found = Vec::with_capacity(keys.len());
        for key in keys {
            let Some(record) = self.summary(key).await? else {
                found.push(None);
                continue;
            };
            let lease = self.lease(key, record.attempts).await?;
            let config = self
                .effective_config(&ConfigKey {
                    function: record.key.function.clone(),
                    qualifier: record.qualifier.clone(),
                })
                .await?;
            found.push(Some(Current {
                record,
                config,
                lease,
            }));
        }
        Ok(found)
    }

    /// Decide a report on each of `keys` with `decide`, against each invocation as it is,
    /// and apply what was decided in one commit. Here: read with [`Backend::current`], then
    /// [`Backend::apply`], which fences each transition against the state at its commit; a
    /// backend behind a network decides inside that commit instead, saving the read.
    async fn report(&self, keys: Vec<InvocationKey>, decide: DecideReport) -> Reported {
        let currents = self.current(&keys).await?;
        let mut decided = Vec::new();
        let mut transitions = Vec::new();
        for (at, current) in currents.into_iter().enumerate() {
            if let Some(transition) = decide(at, current) {
                decided.push(at);
                transitions.push(transition);
            }
        }
        let mut answers: Vec<_> = keys.iter().map(|_| None).collect();
        if !transitions.is_empty() {
            for (at, result) in decided.into_iter().zip(self.apply(transitions).await?) {
                answers[at] = Some(result);
            }
        }
        Ok(answers)
    }

    /// One page of a function's invocations.
    async fn list(&self, query: &ListQuery) -> Result<Page, StoreError>;

    /// A stored config.
    async fn config(&self, key: &ConfigKey) -> Result<StoredConfig, StoreError>;

    /// The config that applies to `key`: its own, or the defaults.
    async fn effective_config(&self, key: &ConfigKey) -> Result<AsyncInvokeConfig, StoreError>;

    /// One page of a function's configs.
    async fn list_configs(
        &self,
        function: &FunctionKey,
        limit: usize,
        next_token: &str,
    ) -> Result<ConfigPage, StoreError>;

    /// One page of an account's functions.
    async fn list_functions(
        &self,
        account: &Arc<str>,
        limit: usize,
        next_token: &str,
    ) -> Result<FunctionPage, StoreError>;

    /// The events of `key` from `from_event_id` on, then its live ones.
    async fn watch_invocation(
        &self,
        key: InvocationKey,
        from_event_id: u64,
    ) -> Result<Box<dyn ChangeCursor>, StoreError>;

    /// Changes in `scope` from `from` on, then live ones.
    async fn watch_changes(
        &self,
        scope: WatchScope,
        from: ResumeFrom,
    ) -> Result<Box<dyn ChangeCursor>, StoreError>;

    /// How many of `function`'s invocations are ready for workers.
    fn queue_depth(&self, function: &FunctionKey) -> usize;

    /// The `limit` functions with the most ready work, busiest first.
    fn busiest_queues(&self, limit: usize) -> Vec<QueueDepth>;

    /// What is held for open work.
    fn working_set(&self) -> WorkingSet;

    /// What is held in memory, and the history on disk.
    fn size(&self) -> StoreSize;

    /// Whether commits are taken.
    fn writable(&self) -> bool;

    /// How long a write in progress has been running, if one is.
    fn write_running_for(&self) -> Option<Duration>;
}

/// Whether a worker holds an invocation in `status`.
pub fn is_held(status: Status) -> bool {
    matches!(
        status,
        Status::Dequeued | Status::Running | Status::Stopping
    )
}
