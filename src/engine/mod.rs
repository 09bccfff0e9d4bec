//! The engine: the lifecycle side of sai. It turns API intents (invoke, stop, configure) into
//! store mutations, hands queued invocations to polling workers under leases, and owns every
//! deadline after acceptance: lease expiry, retry backoff, expiry, stop grace, destinations.
//!
//! Every change goes through the store's commit path, fenced by the attempt it is about, so a
//! timer or worker acting on an old view can never overwrite a newer outcome.

mod attempt;
mod destination;
mod error;
mod lease;
mod queue;
mod retry;
mod timers;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::model::{
    AsyncInvokeConfig, Change, DestinationStatus, Invocation, InvocationKey, Status, StoredConfig,
};
use crate::store::{ConfigKey, Store, Transition};

pub use destination::Condition;
pub use error::{EngineError, Fence};
pub use lease::Outcome;
pub use queue::PollTarget;

use destination::result_record;
use lease::{Lease, Leases};
use queue::ReadyQueues;
use timers::Timers;

/// Timing of the lifecycle. Defaults in [`EngineConfig::default`].
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// How long a lease lasts without a heartbeat (default 30 s).
    pub lease_timeout: Duration,
    /// How long a Stopping invocation waits for its worker before it is forced Stopped (30 s).
    pub stop_grace: Duration,
    /// Backoff before the first retry; it doubles per attempt (default 1 s).
    pub backoff_initial: Duration,
    /// Longest backoff (default 60 s).
    pub backoff_max: Duration,
    /// Longest long-poll wait (default 30 s).
    pub max_poll_wait: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            lease_timeout: Duration::from_secs(30),
            stop_grace: Duration::from_secs(30),
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            max_poll_wait: Duration::from_secs(30),
        }
    }
}

/// A validated InvokeFunction.
#[derive(Debug, Clone)]
pub struct NewInvocation {
    /// Its key (with the id chosen or generated).
    pub key: InvocationKey,
    /// Qualifier ("LATEST" by default).
    pub qualifier: Arc<str>,
    /// Payload.
    pub payload: Arc<str>,
    /// The request id of the call.
    pub request_id: String,
}

/// A lease handed to a polling worker.
#[derive(Debug, Clone)]
pub struct Grant {
    /// The lease token.
    pub token: String,
    /// The invocation (with payload, without events).
    pub invocation: Arc<Invocation>,
    /// Attempt number, from 1.
    pub attempt: u32,
    /// Lease deadline, epoch ms.
    pub deadline_ms: i64,
}

/// What [`Engine::recover`] picked up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Enqueued invocations put back in their queues.
    pub queued: usize,
    /// Retrying invocations whose backoff was re-armed.
    pub retrying: usize,
    /// Stopping invocations whose grace period was re-armed.
    pub stopping: usize,
    /// Attempts that were running at the crash, counted as failed.
    pub interrupted: usize,
}

/// Counts of what the engine holds in memory, each bounded by the open invocations.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkingSet {
    /// Deadlines armed: at most one per open invocation.
    pub pending_timers: usize,
    /// Leases workers hold.
    pub active_leases: usize,
    /// Invocations in the ready queues.
    pub queued: usize,
}

/// One function's ready queue, for metrics.
#[derive(Debug, Clone)]
pub struct QueueDepth {
    /// The function.
    pub function: crate::model::FunctionKey,
    /// Invocations queued.
    pub depth: usize,
    /// How long the one queued first has waited since it was queued.
    pub oldest_age: Duration,
}

/// Drives invocations through their lifecycle on top of the store.
pub struct Engine {
    store: Arc<Store>,
    config: EngineConfig,
    queues: Arc<ReadyQueues>,
    leases: Leases,
    timers: Timers,
    /// Every reading of the time, and every lifecycle deadline, comes from here.
    clock: Clock,
    shutdown: CancellationToken,
    poll_rotation: AtomicUsize,
}

fn expiry_deadline_ms(invocation: &Invocation, config: &AsyncInvokeConfig) -> i64 {
    invocation
        .started_time_ms
        .saturating_add(config.max_event_age_seconds().saturating_mul(1_000))
}

fn is_held(status: Status) -> bool {
    matches!(
        status,
        Status::Dequeued | Status::Running | Status::Stopping
    )
}

impl Engine {
    /// Start an engine over `store` reading the time from `clock`; its timer task runs until
    /// `shutdown`.
    pub fn start(
        store: Arc<Store>,
        config: EngineConfig,
        clock: Clock,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        let engine = Arc::new(Engine {
            store,
            config,
            queues: Arc::default(),
            leases: Leases::default(),
            timers: Timers::new(clock.clone()),
            clock,
            shutdown,
            poll_rotation: AtomicUsize::new(0),
        });
        tokio::spawn(engine.clone().drive_timers());
        engine
    }

    /// Pick up what a previous run left unfinished in a store loaded from disk: queued
    /// invocations go back in their queues with their expiry; retries and stop grace periods
    /// are re-armed at their stored deadlines; an attempt that was running has lost its
    /// lease with the old process, so it counts as failed and is retried per its config.
    pub async fn recover(&self) -> RecoveryReport {
        let mut report = RecoveryReport::default();
        for invocation in self.store.unfinished() {
            match invocation.status {
                Status::Enqueued => {
                    self.enqueued(&invocation);
                    report.queued += 1;
                }
                Status::Retrying => {
                    self.arm(&invocation);
                    report.retrying += 1;
                }
                Status::Stopping => {
                    self.arm(&invocation);
                    report.stopping += 1;
                }
                Status::Dequeued | Status::Running => {
                    let outcome = Outcome::Failure {
                        error_message: attempt::LOST_IN_RESTART.into(),
                        permanent: false,
                    };
                    if let Err(err) = self
                        .finish_attempt(&invocation, invocation.attempts, &outcome, 0)
                        .await
                    {
                        tracing::warn!(invocation = %invocation.key.id, %err, "cannot fail the interrupted attempt");
                    }
                    report.interrupted += 1;
                }
                Status::Succeeded
                | Status::Failed
                | Status::Stopped
                | Status::Expired
                | Status::Invalid => {}
            }
        }
        report
    }

    /// The store it drives (reads go to it directly).
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Resolves once the server starts shutting down: long-lived calls end then, so that the
    /// graceful drain does not wait on clients that keep them open.
    pub async fn stopping(&self) {
        self.shutdown.cancelled().await
    }

    fn config_of(&self, invocation: &Invocation) -> AsyncInvokeConfig {
        self.store.effective_config(&ConfigKey {
            function: invocation.key.function.clone(),
            qualifier: invocation.qualifier.clone(),
        })
    }

    /// Accept an invocation: stored as Enqueued with event 1, queued, expiry scheduled. It is
    /// queued once durable even if the caller stops waiting, so a dropped call cannot leave
    /// a stored invocation unqueued.
    pub async fn invoke(
        self: &Arc<Self>,
        new: NewInvocation,
    ) -> Result<Arc<Invocation>, EngineError> {
        let invocation = Invocation::accept(
            new.key,
            &new.qualifier,
            new.payload,
            &new.request_id,
            self.clock.now_ms(),
        );
        let engine = self.clone();
        Ok(self
            .store
            .insert(invocation, move |stored| engine.enqueued(stored))
            .await?)
    }

    /// Accept several invocations in one commit; each has its own outcome, as `invoke`
    /// would give it, and is queued as `invoke` queues it.
    pub async fn invoke_all(
        self: &Arc<Self>,
        new: Vec<NewInvocation>,
    ) -> Result<Vec<Result<Arc<Invocation>, EngineError>>, EngineError> {
        let now = self.clock.now_ms();
        let accepted = new
            .into_iter()
            .map(|new| {
                Invocation::accept(new.key, &new.qualifier, new.payload, &new.request_id, now)
            })
            .collect();
        let engine = self.clone();
        let stored = self
            .store
            .insert_all(accepted, move |stored| engine.enqueued(stored))
            .await?;
        Ok(stored.into_iter().map(|one| Ok(one?)).collect())
    }

    /// Put a just-Enqueued invocation in its queue and arm its expiry.
    fn enqueued(&self, invocation: &Invocation) {
        self.queues
            .push(&invocation.qualifier, invocation.key.clone());
        self.arm(invocation);
    }

    /// Arm the one deadline `invocation` has in its current state, replacing the one it had;
    /// an invocation that ended has none, and leaves its queue.
    fn arm(&self, invocation: &Invocation) {
        match self.deadline_of(invocation) {
            Some(at) => self.timers.schedule(at, invocation.key.clone()),
            None => {
                self.timers.cancel(&invocation.key);
                if invocation.status.is_terminal() {
                    self.queues.remove(&invocation.key);
                }
            }
        }
    }

    /// When something next happens to `invocation` unless a worker or a caller acts first:
    /// queued, its max event age; retrying, the end of its backoff (or its max event age if
    /// that comes first); held by a worker, its lease deadline; stopping, the end of the grace
    /// period (or the lease deadline if that comes first). None once it ended.
    fn deadline_of(&self, invocation: &Invocation) -> Option<Instant> {
        let expiry = || expiry_deadline_ms(invocation, &self.config_of(invocation));
        let lease = || {
            self.leases
                .active(&invocation.key, invocation.attempts)
                .map(|lease| lease.deadline)
        };
        match invocation.status {
            Status::Enqueued => Some(self.clock.instant_at(expiry())),
            Status::Retrying => Some(self.clock.instant_at(invocation.retry_at_ms.min(expiry()))),
            Status::Dequeued | Status::Running => lease(),
            Status::Stopping => {
                let grace = self.clock.instant_at(self.grace_end_ms(invocation));
                Some(lease().map_or(grace, |lease| lease.min(grace)))
            }
            Status::Succeeded
            | Status::Failed
            | Status::Stopped
            | Status::Expired
            | Status::Invalid => None,
        }
    }

    /// When a Stopping invocation's grace period ends: `stop_grace` after the stop request,
    /// its last event.
    fn grace_end_ms(&self, invocation: &Invocation) -> i64 {
        let requested_ms = self
            .store
            .read_open(&invocation.key, |r| r.events.last().map(|e| e.timestamp_ms))
            .flatten()
            .unwrap_or(invocation.started_time_ms);
        requested_ms.saturating_add(millis(self.config.stop_grace))
    }

    /// Stop an invocation: queued ones stop at once; held ones go to Stopping, and are forced
    /// Stopped when the grace period runs out.
    pub async fn stop(&self, key: InvocationKey) -> Result<Arc<Invocation>, EngineError> {
        let (invocation, changed) = self
            .store
            .apply(Transition::new(key, Change::Stop, self.clock.now_ms()))
            .await?;
        if changed {
            self.arm(&invocation);
        }
        Ok(invocation)
    }

    /// Create or replace a config.
    pub async fn put_config(
        &self,
        key: ConfigKey,
        config: AsyncInvokeConfig,
    ) -> Result<StoredConfig, EngineError> {
        Ok(self
            .store
            .put_config(key, config, self.clock.now_ms())
            .await?)
    }

    /// Remove a config.
    pub async fn delete_config(&self, key: ConfigKey) -> Result<StoredConfig, EngineError> {
        Ok(self.store.delete_config(key).await?)
    }

    /// Long-poll: up to `max` leases on queued invocations of `targets`, waiting at most
    /// `wait` for the first.
    pub async fn poll(
        self: &Arc<Self>,
        targets: Vec<PollTarget>,
        worker_id: String,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Grant>, EngineError> {
        // The wait bounds a request, not an invocation's lifecycle: it runs on the runtime's
        // timer, not the engine's clock.
        let deadline = Instant::now() + wait.min(self.config.max_poll_wait);
        let targets = Arc::new(targets);
        let worker_id: Arc<str> = worker_id.into();
        // Registered before the first look at the queues, so that work pushed in between wakes
        // this poller.
        let waiter = self.queues.wait_on(&targets);
        loop {
            // Popping and dispatching run to completion in their own task: if the caller goes
            // away mid-way, popped invocations still get leases (which then expire and retry)
            // instead of vanishing from the queue.
            let engine = self.clone();
            let (targets_now, worker) = (targets.clone(), worker_id.clone());
            let grants = tokio::spawn(async move {
                let offset = engine.poll_rotation.fetch_add(1, Ordering::Relaxed);
                let keys = engine.queues.pop(&targets_now, max, offset);
                engine.dispatch(keys, &worker).await
            })
            .await
            .map_err(|_| EngineError::ShuttingDown)?;
            if !grants.is_empty() || Instant::now() >= deadline {
                return Ok(grants);
            }
            tokio::select! {
                _ = waiter.woken() => {}
                _ = tokio::time::sleep_until(deadline) => {}
                _ = self.shutdown.cancelled() => return Ok(Vec::new()),
            }
        }
    }

    /// Hand popped invocations to `worker_id`: each goes Dequeued, then Running under a new
    /// lease, all in one commit (one sync however many the poll takes). Stale entries
    /// (stopped or expired while queued) are skipped.
    async fn dispatch(&self, keys: Vec<InvocationKey>, worker_id: &str) -> Vec<Grant> {
        let now = self.clock.now_ms();
        let mut transitions = Vec::with_capacity(keys.len() * 2);
        let mut attempts = Vec::with_capacity(keys.len());
        for key in keys {
            let Some(record) = self.store.open_summary(&key) else {
                continue;
            };
            if record.status != Status::Enqueued {
                continue;
            }
            let config = self.config_of(&record);
            if now > expiry_deadline_ms(&record, &config) {
                self.expire(&record, &config).await;
                continue;
            }
            let attempt = record.attempts + 1;
            let mut dispatch = Transition::new(
                key.clone(),
                Change::Dispatch {
                    worker_id: worker_id.to_string(),
                    attempt,
                },
                now,
            );
            dispatch.attempt = Some(record.attempts);
            let mut start = Transition::new(key.clone(), Change::Start, now);
            start.attempt = Some(attempt);
            transitions.push(dispatch);
            transitions.push(start);
            attempts.push((key, attempt));
        }
        if transitions.is_empty() {
            return Vec::new();
        }
        let results = match self.store.apply_all(transitions).await {
            Ok(results) => results,
            Err(err) => {
                tracing::warn!(%err, "dispatch could not be committed");
                return Vec::new();
            }
        };
        let started = self.clock.now();
        let deadline = started + self.config.lease_timeout;
        let deadline_ms = self.clock.now_ms() + millis(self.config.lease_timeout);
        let mut grants = Vec::with_capacity(attempts.len());
        // Results come in (dispatch, start) pairs, in the order of `attempts`.
        for ((key, attempt), pair) in attempts.into_iter().zip(results.chunks(2)) {
            let Some(Ok((invocation, _))) = pair.get(1) else {
                continue;
            };
            let token = self.leases.grant(
                key,
                Lease {
                    attempt,
                    started,
                    deadline,
                    deadline_ms,
                },
            );
            self.arm(invocation);
            grants.push(Grant {
                token,
                invocation: invocation.clone(),
                attempt,
                deadline_ms,
            });
        }
        grants
    }

    /// The invocation and lease of attempt `attempt` of `key`, if a worker still holds it: the
    /// lease is held and not past its deadline, and the invocation is on that attempt and
    /// held by a worker. Otherwise why not.
    fn held(&self, key: &InvocationKey, attempt: u32) -> Result<(Invocation, Lease), EngineError> {
        let record = self
            .store
            .summary(key)?
            .ok_or(EngineError::LeaseFenced(Fence::Gone))?;
        if record.attempts != attempt {
            return Err(EngineError::LeaseFenced(Fence::Superseded));
        }
        if !is_held(record.status) {
            return Err(EngineError::LeaseFenced(Fence::Ended));
        }
        match self.leases.active(key, attempt) {
            // Past its deadline, a lease is over even before its expiry timer has run.
            Some(lease) if lease.deadline > self.clock.now() => Ok((record, lease)),
            _ => Err(EngineError::LeaseFenced(Fence::Expired)),
        }
    }

    /// Extend a lease. Answers whether a stop was requested, and the new deadline.
    pub async fn heartbeat(&self, account: &str, token: &str) -> Result<(bool, i64), EngineError> {
        let (key, attempt) = self
            .leases
            .verify(token, account)
            .ok_or(EngineError::LeaseNotFound)?;
        let (record, _) = self.held(&key, attempt)?;
        let deadline = self.clock.now() + self.config.lease_timeout;
        let deadline_ms = self.clock.now_ms() + millis(self.config.lease_timeout);
        if !self.leases.extend(&key, attempt, deadline, deadline_ms) {
            return Err(EngineError::LeaseFenced(Fence::Expired));
        }
        self.arm(&record);
        Ok((record.status == Status::Stopping, deadline_ms))
    }

    /// Report the outcome of an attempt. A repeat with the same outcome answers as the first
    /// did; another outcome on a used token is refused.
    pub async fn complete(
        &self,
        account: &str,
        token: &str,
        outcome: Outcome,
    ) -> Result<Arc<Invocation>, EngineError> {
        let (key, attempt) = self
            .leases
            .verify(token, account)
            .ok_or(EngineError::LeaseNotFound)?;
        let (record, lease) = match self.held(&key, attempt) {
            Ok(held) => held,
            Err(not_held) => {
                return self
                    .repeated_completion(&key, attempt, &outcome)?
                    .ok_or(not_held)
            }
        };
        let duration_ms = millis(self.clock.now().saturating_duration_since(lease.started));
        let result = self
            .finish_attempt(&record, attempt, &outcome, duration_ms)
            .await;
        self.completed(&key, attempt, &outcome, result)
    }

    /// Report the outcomes of several leases of `account`, in order, in one commit: each is
    /// checked and answered as `complete` would answer it. A token given twice is answered
    /// as a repeat of its first entry.
    pub async fn complete_all(
        &self,
        account: &str,
        entries: Vec<(String, Outcome)>,
    ) -> Vec<Result<Arc<Invocation>, EngineError>> {
        let mut answers: Vec<Option<Result<Arc<Invocation>, EngineError>>> =
            entries.iter().map(|_| None).collect();
        let mut seen = std::collections::HashSet::new();
        let mut repeats = Vec::new();
        let mut applying = Vec::new();
        let mut transitions = Vec::new();
        for (at, (token, outcome)) in entries.into_iter().enumerate() {
            if !seen.insert(token.clone()) {
                repeats.push((at, token, outcome));
                continue;
            }
            let Some((key, attempt)) = self.leases.verify(&token, account) else {
                answers[at] = Some(Err(EngineError::LeaseNotFound));
                continue;
            };
            match self.held(&key, attempt) {
                Ok((record, lease)) => {
                    let duration_ms =
                        millis(self.clock.now().saturating_duration_since(lease.started));
                    let transition =
                        self.attempt_transition(&record, attempt, &outcome, duration_ms);
                    applying.push((
                        at,
                        key,
                        attempt,
                        outcome,
                        [transition.on_success.clone(), transition.on_failure.clone()],
                    ));
                    transitions.push(transition);
                }
                Err(not_held) => {
                    answers[at] = Some(
                        self.repeated_completion(&key, attempt, &outcome)
                            .and_then(|answer| answer.ok_or(not_held)),
                    );
                }
            }
        }
        if !transitions.is_empty() {
            match self.store.apply_all(transitions).await {
                Ok(results) => {
                    for ((at, key, attempt, outcome, destinations), result) in
                        applying.into_iter().zip(results)
                    {
                        let result = result
                            .map(|(invocation, _)| {
                                self.follow(&invocation, &destinations);
                                invocation
                            })
                            .map_err(EngineError::from);
                        answers[at] = Some(self.completed(&key, attempt, &outcome, result));
                    }
                }
                Err(err) => {
                    for (at, ..) in applying {
                        answers[at] = Some(Err(err.clone().into()));
                    }
                }
            }
        }
        // Repeats run after their first entry was applied, as a second call would.
        for (at, token, outcome) in repeats {
            answers[at] = Some(self.complete(account, &token, outcome).await);
        }
        answers
            .into_iter()
            .map(|answer| answer.unwrap_or(Err(EngineError::LeaseNotFound)))
            .collect()
    }

    /// A worker's outcome was applied: its lease ends. When applying failed, answer as a
    /// repeat if a concurrent duplicate with the same outcome won the race.
    fn completed(
        &self,
        key: &InvocationKey,
        attempt: u32,
        outcome: &Outcome,
        result: Result<Arc<Invocation>, EngineError>,
    ) -> Result<Arc<Invocation>, EngineError> {
        match result {
            Ok(invocation) => {
                self.leases.end(key, attempt);
                Ok(invocation)
            }
            Err(err) => self.repeated_completion(key, attempt, outcome)?.ok_or(err),
        }
    }

    /// The answer to a completion of attempt `attempt` of `key` once that attempt ended,
    /// read from the invocation's own record (so it holds for as long as the record is
    /// kept): the invocation as it is now if the worker already reported this same outcome;
    /// refused if it reported another, or if the attempt ended without it. `None` while the
    /// attempt has not ended.
    fn repeated_completion(
        &self,
        key: &InvocationKey,
        attempt: u32,
        outcome: &Outcome,
    ) -> Result<Option<Arc<Invocation>>, EngineError> {
        let record = self
            .store
            .get(key)?
            .ok_or(EngineError::LeaseFenced(Fence::Gone))?;
        let Some(ending) = attempt::ending(&record, attempt) else {
            return Ok(None);
        };
        match ending {
            attempt::Ending::Reported(reported) if reported.matches(outcome) => {
                Ok(Some(Arc::new(record.without_events())))
            }
            attempt::Ending::Reported(_) => Err(EngineError::OutcomeConflict),
            attempt::Ending::Ended(why) => Err(EngineError::LeaseFenced(why)),
        }
    }

    /// Apply the end of attempt `attempt` of `record`: success, failure (retry or not),
    /// stopped or invalid, with destinations, fenced by the attempt.
    async fn finish_attempt(
        &self,
        record: &Invocation,
        attempt: u32,
        outcome: &Outcome,
        duration_ms: i64,
    ) -> Result<Arc<Invocation>, EngineError> {
        let transition = self.attempt_transition(record, attempt, outcome, duration_ms);
        self.apply_and_follow(transition).await
    }

    /// The transition that ends `attempt` of `record` with `outcome`, fenced on the attempt,
    /// with the destination records it delivers.
    fn attempt_transition(
        &self,
        record: &Invocation,
        attempt: u32,
        outcome: &Outcome,
        duration_ms: i64,
    ) -> Transition {
        let config = self.config_of(record);
        let now = self.clock.now_ms();
        let change = match outcome {
            Outcome::Success { return_payload } => Change::Succeed {
                return_payload: return_payload.clone(),
                duration_ms,
            },
            Outcome::Failure {
                error_message,
                permanent,
            } => {
                let retry = !*permanent
                    && i64::from(record.already_retried_times) < config.max_retry_attempts();
                let delay = retry::backoff(
                    self.config.backoff_initial,
                    self.config.backoff_max,
                    attempt,
                );
                Change::Fail {
                    error: error_message.clone(),
                    retry_at_ms: retry.then(|| now.saturating_add(millis(delay))),
                    duration_ms,
                }
            }
            Outcome::Stopped => Change::ConfirmStop { by: "worker" },
            Outcome::Invalid { reason } => Change::Invalidate {
                reason: reason.clone(),
            },
        };
        let mut transition = Transition::new(record.key.clone(), change, now);
        transition.attempt = Some(attempt);
        transition.keep_record = config.is_stateful();
        if let (Some(target), Outcome::Success { return_payload }) = (&config.on_success, outcome) {
            transition.on_success = Some(Box::new(result_record(
                record,
                target,
                Condition::Succeeded,
                Some(return_payload),
                None,
                now,
            )));
        }
        if let (Some(target), Outcome::Failure { error_message, .. }) =
            (&config.on_failure, outcome)
        {
            transition.on_failure = Some(Box::new(result_record(
                record,
                target,
                Condition::Failed,
                None,
                Some(error_message),
                now,
            )));
        }
        transition
    }

    /// Apply a transition, then do what its result calls for: queue a delivered destination
    /// record, schedule a retry.
    async fn apply_and_follow(
        &self,
        transition: Transition,
    ) -> Result<Arc<Invocation>, EngineError> {
        let destinations = [transition.on_success.clone(), transition.on_failure.clone()];
        let (invocation, _) = self.store.apply(transition).await?;
        self.follow(&invocation, &destinations);
        Ok(invocation)
    }

    /// What an applied transition calls for: queue its delivered destination record, queue
    /// it again after a retry's backoff, and arm its next deadline (or disarm it).
    fn follow(&self, invocation: &Invocation, destinations: &[Option<Box<Invocation>>; 2]) {
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
        self.arm(invocation);
    }

    /// Expire a queued invocation, delivering its on-failure record.
    async fn expire(&self, record: &Invocation, config: &AsyncInvokeConfig) {
        let transition = self.expiry_transition(record, config);
        if let Err(err) = self.apply_and_follow(transition).await {
            tracing::debug!(invocation = %record.key.id, %err, "expiry no longer applies");
        }
    }

    /// The transition that expires a queued or retrying invocation, with its on-failure record.
    fn expiry_transition(&self, record: &Invocation, config: &AsyncInvokeConfig) -> Transition {
        let now = self.clock.now_ms();
        let mut transition = Transition::new(record.key.clone(), Change::Expire, now);
        transition.keep_record = config.is_stateful();
        transition.on_failure = config.on_failure.as_ref().map(|target| {
            Box::new(result_record(
                record,
                target,
                Condition::Expired,
                None,
                Some("the invocation expired before it was dispatched"),
                now,
            ))
        });
        transition
    }

    async fn drive_timers(self: Arc<Self>) {
        while let Some(due) = self.timers.next_due(&self.shutdown).await {
            self.fire(due).await;
        }
    }

    /// Act on the deadlines that came due: what each means is decided from the invocation's
    /// state now, and every resulting change is applied in one commit.
    async fn fire(&self, due: Vec<InvocationKey>) {
        let transitions: Vec<Transition> = due
            .iter()
            .filter_map(|key| self.deadline_passed(key))
            .collect();
        if transitions.is_empty() {
            return;
        }
        let keys: Vec<InvocationKey> = transitions.iter().map(|t| t.key.clone()).collect();
        let destinations: Vec<[Option<Box<Invocation>>; 2]> = transitions
            .iter()
            .map(|t| [t.on_success.clone(), t.on_failure.clone()])
            .collect();
        match self.store.apply_all(transitions).await {
            Ok(results) => {
                for ((key, destinations), result) in keys.iter().zip(&destinations).zip(results) {
                    match result {
                        Ok((invocation, _)) => self.follow(&invocation, destinations),
                        Err(err) => {
                            tracing::debug!(invocation = %key.id, %err, "a deadline no longer applies");
                            self.rearm(key);
                        }
                    }
                }
            }
            Err(err) => {
                tracing::warn!(%err, "deadlines could not be applied; trying again in a second");
                let again = self.clock.now() + Duration::from_secs(1);
                for key in keys {
                    self.timers.schedule(again, key);
                }
            }
        }
    }

    /// Arm `key` again from its current state.
    fn rearm(&self, key: &InvocationKey) {
        if let Some(record) = self.store.open_summary(key) {
            self.arm(&record);
        }
    }

    /// The deadline of `key` came: the change it calls for now, if any (a deadline that moved
    /// is armed again instead).
    fn deadline_passed(&self, key: &InvocationKey) -> Option<Transition> {
        let record = self.store.open_summary(key)?;
        let now_ms = self.clock.now_ms();
        let config = self.config_of(&record);
        let expired = now_ms >= expiry_deadline_ms(&record, &config);
        match record.status {
            Status::Enqueued | Status::Retrying if expired => {
                return Some(self.expiry_transition(&record, &config));
            }
            Status::Retrying if now_ms >= record.retry_at_ms => {
                let mut transition = Transition::new(key.clone(), Change::Requeue, now_ms);
                transition.attempt = Some(record.attempts);
                return Some(transition);
            }
            Status::Stopping if now_ms >= self.grace_end_ms(&record) => {
                // The worker still holding the attempt is fenced off.
                self.leases.end(key, record.attempts);
                let mut transition = Transition::new(
                    key.clone(),
                    Change::ConfirmStop { by: "grace period" },
                    now_ms,
                );
                transition.attempt = Some(record.attempts);
                transition.keep_record = config.is_stateful();
                return Some(transition);
            }
            Status::Dequeued | Status::Running | Status::Stopping => {
                if let Some(transition) = self.lease_ran_out(&record) {
                    return Some(transition);
                }
            }
            _ => {}
        }
        self.arm(&record);
        None
    }

    /// If the lease on `record`'s attempt ran out without a heartbeat or a completion: ends
    /// it, and returns the failed attempt's transition.
    fn lease_ran_out(&self, record: &Invocation) -> Option<Transition> {
        let lease = self.leases.active(&record.key, record.attempts)?;
        if lease.deadline > self.clock.now() || !self.leases.end(&record.key, lease.attempt) {
            return None;
        }
        let outcome = Outcome::Failure {
            error_message: attempt::LEASE_EXPIRED.into(),
            permanent: false,
        };
        metrics::counter!(crate::metrics::names::LEASE_EXPIRIES).increment(1);
        let duration_ms = millis(self.clock.now().saturating_duration_since(lease.started));
        Some(self.attempt_transition(record, lease.attempt, &outcome, duration_ms))
    }

    /// How many of `function`'s invocations wait in its queue.
    pub fn queue_depth(&self, function: &crate::model::FunctionKey) -> usize {
        self.queues.depth(function)
    }

    /// The `limit` functions with the most queued work, busiest first.
    pub fn busiest_queues(&self, limit: usize) -> Vec<QueueDepth> {
        let now_ms = self.clock.now_ms();
        self.queues
            .busiest(limit)
            .into_iter()
            .map(|(function, depth, oldest)| {
                // Queued at its last event: accepted, or put back after a retry's backoff.
                let queued_ms = self
                    .store
                    .read_open(&oldest, |r| r.events.last().map(|e| e.timestamp_ms))
                    .flatten()
                    .unwrap_or(now_ms);
                let waited = u64::try_from(now_ms.saturating_sub(queued_ms)).unwrap_or(0);
                QueueDepth {
                    function,
                    depth,
                    oldest_age: Duration::from_millis(waited),
                }
            })
            .collect()
    }

    /// What the engine holds in memory for open work.
    pub fn working_set(&self) -> WorkingSet {
        WorkingSet {
            pending_timers: self.timers.len(),
            active_leases: self.leases.active_count(),
            queued: self.queues.len(),
        }
    }
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests;
