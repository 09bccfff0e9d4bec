//! The engine: the lifecycle side of sai. It turns API intents (invoke, stop, configure) into
//! changes, hands queued invocations to polling workers under leases, and decides what every
//! deadline after acceptance means: lease expiry, retry backoff, expiry, stop grace,
//! destinations.
//!
//! It reaches durable state only through the storage boundary ([`Backend`]): the engine
//! decides, the backend commits, hands out work and keeps deadlines. Every change is fenced by
//! the attempt it is about and checked against the state at commit, so a timer or worker
//! acting on an old view can never overwrite a newer outcome.

mod attempt;
mod destination;
mod error;
mod outcome;
mod retention;
mod retry;
mod rules;

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::model::{
    AsyncInvokeConfig, Change, FunctionKey, Invocation, InvocationKey, Status, StoredConfig,
};
use crate::store::backend::{is_held, Claim, Current, DecideReport, Due, Lease};
use crate::store::{Backend, ConfigKey, Embedded, Store, Transition};

pub use crate::store::backend::{PollTarget, QueueDepth, WorkingSet};
pub use destination::Condition;
pub use error::{EngineError, Fence};
pub use outcome::Outcome;
pub use retention::RetentionProgress;

use destination::result_record;
use rules::{expiry_deadline_ms, grace_end_ms, millis, Deadlines};

/// An attempt a worker holds, as its report on it is decided.
struct Held {
    record: Invocation,
    lease: Lease,
    config: AsyncInvokeConfig,
}

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

/// The id of an invocation accepted at `now_ms` without one: time-ordered, so that the store
/// finds its record from the id alone.
pub(crate) fn generated_id(now_ms: i64) -> String {
    crate::model::id::time_ordered(now_ms, rand::random())
}

/// A validated InvokeFunction.
#[derive(Debug, Clone)]
pub struct NewInvocation {
    /// Its function.
    pub function: FunctionKey,
    /// The id the caller chose; `None` to have one generated from its started time.
    pub id: Option<String>,
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

/// Drives invocations through their lifecycle on top of a backend.
pub struct Engine {
    backend: Arc<dyn Backend>,
    config: EngineConfig,
    /// Every reading of the time, and every lifecycle deadline, comes from here.
    clock: Clock,
    shutdown: CancellationToken,
    retention: RetentionProgress,
}

impl Engine {
    /// Start an engine over the embedded backend on `store`, reading the time from `clock`;
    /// its timer task runs until `shutdown`.
    pub fn start(
        store: Arc<Store>,
        config: EngineConfig,
        clock: Clock,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        let backend = Arc::new(Embedded::new(
            store,
            Engine::schedule(&config),
            clock.clone(),
        ));
        Engine::start_on(backend, config, clock, shutdown)
    }

    /// Start an engine over `backend` (whose deadlines follow [`Engine::schedule`] of the
    /// same `config`), reading the time from `clock`; its timer task runs until `shutdown`.
    pub fn start_on(
        backend: Arc<dyn Backend>,
        config: EngineConfig,
        clock: Clock,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        let engine = Arc::new(Engine {
            backend,
            config,
            clock,
            shutdown,
            retention: RetentionProgress::default(),
        });
        tokio::spawn(engine.clone().drive_timers());
        engine
    }

    /// The deadlines a backend under an engine with `config` must keep.
    pub fn schedule(config: &EngineConfig) -> Arc<dyn crate::store::backend::Schedule> {
        Arc::new(Deadlines {
            stop_grace: config.stop_grace,
        })
    }

    /// Pick up what a previous run left unfinished: the backend puts queued invocations back
    /// in their queues and re-arms retries and stop grace periods at their stored deadlines;
    /// an attempt that was running has lost its lease with the old process, so it counts as
    /// failed and is retried per its config.
    pub async fn recover(&self) -> RecoveryReport {
        let recovered = match self.backend.recover().await {
            Ok(recovered) => recovered,
            Err(err) => {
                tracing::error!(%err, "cannot take up what the previous run left open");
                return RecoveryReport::default();
            }
        };
        let mut report = RecoveryReport {
            queued: recovered.queued,
            retrying: recovered.retrying,
            stopping: recovered.stopping,
            interrupted: 0,
        };
        for invocation in recovered.interrupted {
            let outcome = Outcome::Failure {
                error_message: attempt::LOST_IN_RESTART.into(),
                permanent: false,
            };
            let failed = match self.config_of(&invocation).await {
                Ok(config) => {
                    let transition = self.attempt_transition(
                        &invocation,
                        &config,
                        invocation.attempts,
                        &outcome,
                        0,
                    );
                    self.apply_one(transition).await.map(drop)
                }
                Err(err) => Err(err),
            };
            if let Err(err) = failed {
                tracing::warn!(invocation = %invocation.key.id, %err, "cannot fail the interrupted attempt");
            }
            report.interrupted += 1;
        }
        report
    }

    /// The backend it drives (reads go to it directly).
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// Resolves once the server starts shutting down: long-lived calls end then, so that the
    /// graceful drain does not wait on clients that keep them open.
    pub async fn stopping(&self) {
        self.shutdown.cancelled().await
    }

    async fn config_of(&self, invocation: &Invocation) -> Result<AsyncInvokeConfig, EngineError> {
        Ok(self
            .backend
            .effective_config(&ConfigKey {
                function: invocation.key.function.clone(),
                qualifier: invocation.qualifier.clone(),
            })
            .await?)
    }

    /// Accept an invocation: stored as Enqueued with event 1, queued, expiry scheduled. It is
    /// queued once durable even if the caller stops waiting, so a dropped call cannot leave
    /// a stored invocation unqueued.
    pub async fn invoke(&self, new: NewInvocation) -> Result<Arc<Invocation>, EngineError> {
        let mut outcomes = self.invoke_all(vec![new]).await?;
        outcomes
            .pop()
            .expect("a commit answers each invocation it was given")
    }

    /// Accept several invocations in one commit; each has its own outcome, as `invoke`
    /// would give it, and is queued as `invoke` queues it.
    pub async fn invoke_all(
        &self,
        new: Vec<NewInvocation>,
    ) -> Result<Vec<Result<Arc<Invocation>, EngineError>>, EngineError> {
        let now = self.clock.now_ms();
        let accepted = new
            .into_iter()
            .map(|new| {
                let id = new.id.unwrap_or_else(|| generated_id(now));
                let key = new.function.invocation(&id);
                Invocation::accept(key, &new.qualifier, new.payload, &new.request_id, now)
            })
            .collect();
        let stored = self.backend.accept(accepted).await?;
        Ok(stored.into_iter().map(|one| Ok(one?)).collect())
    }

    /// Stop an invocation: queued ones stop at once; held ones go to Stopping, and are forced
    /// Stopped when the grace period runs out.
    pub async fn stop(&self, key: InvocationKey) -> Result<Arc<Invocation>, EngineError> {
        let transition = Transition::new(key, Change::Stop, self.clock.now_ms());
        let (invocation, _) = self.apply_one(transition).await?;
        Ok(invocation)
    }

    /// Apply one transition in its own commit.
    async fn apply_one(
        &self,
        transition: Transition,
    ) -> Result<(Arc<Invocation>, bool), EngineError> {
        let mut results = self.backend.apply(vec![transition]).await?;
        Ok(results
            .pop()
            .expect("a commit answers each transition it was given")?)
    }

    /// Create or replace a config.
    pub async fn put_config(
        &self,
        key: ConfigKey,
        config: AsyncInvokeConfig,
    ) -> Result<StoredConfig, EngineError> {
        Ok(self
            .backend
            .put_config(key, config, self.clock.now_ms())
            .await?)
    }

    /// Remove a config.
    pub async fn delete_config(&self, key: ConfigKey) -> Result<StoredConfig, EngineError> {
        Ok(self.backend.delete_config(key).await?)
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
        // Made before the first look for work, so that work arriving in between wakes this
        // poller.
        let waiter = self.backend.wait_for_work(&targets);
        loop {
            // A claim runs to completion in its own task: if the caller goes away mid-way,
            // claimed invocations still get leases (which then expire and retry) instead of
            // vanishing from the queue.
            let engine = self.clone();
            let (targets_now, worker) = (targets.clone(), worker_id.clone());
            let grants =
                tokio::spawn(async move { engine.claim(&targets_now, max, &worker).await })
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

    /// Claim up to `max` queued invocations of `targets` for `worker_id`: each goes Dequeued,
    /// then Running under a new lease, all in one commit (one sync however many the poll
    /// takes); one past its max event age expires instead.
    async fn claim(
        self: &Arc<Self>,
        targets: &[PollTarget],
        max: usize,
        worker_id: &str,
    ) -> Vec<Grant> {
        let now = self.clock.now_ms();
        let lease_deadline_ms = now.saturating_add(millis(self.config.lease_timeout));
        let (engine, worker_id) = (self.clone(), worker_id.to_string());
        let decide = move |record: &Invocation, config: &AsyncInvokeConfig| {
            if now > expiry_deadline_ms(record, config) {
                return Claim::Instead(engine.expiry_transition(record, config));
            }
            let attempt = record.attempts + 1;
            let mut dispatch = Transition::new(
                record.key.clone(),
                Change::Dispatch {
                    worker_id: worker_id.to_string(),
                    attempt,
                },
                now,
            );
            dispatch.attempt = Some(record.attempts);
            let mut start = Transition::new(record.key.clone(), Change::Start, now);
            start.attempt = Some(attempt);
            Claim::Lease {
                attempt,
                transitions: vec![dispatch, start],
            }
        };
        match self
            .backend
            .claim(targets, max, now, lease_deadline_ms, Arc::new(decide))
            .await
        {
            Ok(claimed) => claimed
                .into_iter()
                .map(|claimed| Grant {
                    token: claimed.token,
                    invocation: claimed.invocation,
                    attempt: claimed.attempt,
                    deadline_ms: claimed.deadline_ms,
                })
                .collect(),
            Err(err) => {
                tracing::warn!(%err, "a claim could not be committed");
                Vec::new()
            }
        }
    }

    /// The invocation, lease and config of attempt `attempt` of `key`, if a worker still
    /// holds it: the lease is held and not past its deadline, and the invocation is on that
    /// attempt and held by a worker. Otherwise why not.
    async fn held(&self, key: &InvocationKey, attempt: u32) -> Result<Held, EngineError> {
        let current = self
            .backend
            .current(std::slice::from_ref(key))
            .await?
            .pop()
            .flatten();
        self.still_held(current, attempt)
    }

    /// Whether attempt `attempt` of `current` is still held (see [`Engine::held`]).
    fn still_held(&self, current: Option<Current>, attempt: u32) -> Result<Held, EngineError> {
        let Current {
            record,
            config,
            lease,
        } = current.ok_or(EngineError::LeaseFenced(Fence::Gone))?;
        if record.attempts != attempt {
            return Err(EngineError::LeaseFenced(Fence::Superseded));
        }
        if !is_held(record.status) {
            return Err(EngineError::LeaseFenced(Fence::Ended));
        }
        match lease {
            // Past its deadline, a lease is over even before its expiry timer has run.
            Some(lease) if lease.attempt == attempt && lease.deadline_ms > self.clock.now_ms() => {
                Ok(Held {
                    record,
                    lease,
                    config,
                })
            }
            _ => Err(EngineError::LeaseFenced(Fence::Expired)),
        }
    }

    /// Extend a lease. Answers whether a stop was requested, and the new deadline.
    pub async fn heartbeat(&self, account: &str, token: &str) -> Result<(bool, i64), EngineError> {
        let (key, attempt) = self
            .backend
            .verify_lease(token, account)
            .ok_or(EngineError::LeaseNotFound)?;
        let Held { record, .. } = self.held(&key, attempt).await?;
        let deadline_ms = self
            .clock
            .now_ms()
            .saturating_add(millis(self.config.lease_timeout));
        if !self
            .backend
            .extend_lease(&key, attempt, deadline_ms)
            .await?
        {
            return Err(EngineError::LeaseFenced(Fence::Expired));
        }
        Ok((record.status == Status::Stopping, deadline_ms))
    }

    /// Report the outcome of an attempt. A repeat with the same outcome answers as the first
    /// did; another outcome on a used token is refused.
    pub async fn complete(
        self: &Arc<Self>,
        account: &str,
        token: &str,
        outcome: Outcome,
    ) -> Result<Arc<Invocation>, EngineError> {
        let (key, attempt) = self
            .backend
            .verify_lease(token, account)
            .ok_or(EngineError::LeaseNotFound)?;
        self.report_outcomes(vec![(key, attempt, outcome)])
            .await
            .pop()
            .expect("one answer per report")
    }

    /// Report the outcomes of several leases of `account`, in order, in one commit: each is
    /// checked and answered as `complete` would answer it. A token given twice is answered
    /// as a repeat of its first entry.
    pub async fn complete_all(
        self: &Arc<Self>,
        account: &str,
        entries: Vec<(String, Outcome)>,
    ) -> Vec<Result<Arc<Invocation>, EngineError>> {
        let mut answers: Vec<Option<Result<Arc<Invocation>, EngineError>>> =
            entries.iter().map(|_| None).collect();
        let mut seen = std::collections::HashSet::new();
        let mut repeats = Vec::new();
        let mut verified = Vec::with_capacity(entries.len());
        for (at, (token, outcome)) in entries.into_iter().enumerate() {
            if !seen.insert(token.clone()) {
                repeats.push((at, token, outcome));
                continue;
            }
            match self.backend.verify_lease(&token, account) {
                Some((key, attempt)) => verified.push((at, key, attempt, outcome)),
                None => answers[at] = Some(Err(EngineError::LeaseNotFound)),
            }
        }
        let places: Vec<usize> = verified.iter().map(|(at, ..)| *at).collect();
        let reports = verified
            .into_iter()
            .map(|(_, key, attempt, outcome)| (key, attempt, outcome))
            .collect();
        for (at, answer) in places.into_iter().zip(self.report_outcomes(reports).await) {
            answers[at] = Some(answer);
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

    /// Apply workers' outcomes on the attempts they hold, in one commit, each decided against
    /// its invocation as it is when they commit; answered in order, each as `complete`
    /// answers.
    async fn report_outcomes(
        self: &Arc<Self>,
        reports: Vec<(InvocationKey, u32, Outcome)>,
    ) -> Vec<Result<Arc<Invocation>, EngineError>> {
        let keys: Vec<InvocationKey> = reports.iter().map(|(key, ..)| key.clone()).collect();
        // Decided against each invocation as it is when the reports commit; why a report
        // was not applied is kept here, by its place in `reports`.
        let outcomes: Arc<Vec<(u32, Outcome)>> = Arc::new(
            reports
                .iter()
                .map(|(_, attempt, outcome)| (*attempt, outcome.clone()))
                .collect(),
        );
        let not_held: Arc<Mutex<Vec<Option<EngineError>>>> =
            Arc::new(Mutex::new(reports.iter().map(|_| None).collect()));
        let decide: DecideReport = {
            let (engine, outcomes, not_held) = (self.clone(), outcomes.clone(), not_held.clone());
            Arc::new(move |at, current| {
                let (attempt, outcome) = &outcomes[at];
                match engine.still_held(current, *attempt) {
                    Ok(held) => {
                        not_held.lock()[at] = None;
                        Some(engine.report_transition(&held, *attempt, outcome))
                    }
                    Err(why) => {
                        not_held.lock()[at] = Some(why);
                        None
                    }
                }
            })
        };
        let results = match self.backend.report(keys, decide).await {
            Ok(results) => results,
            Err(err) => return reports.iter().map(|_| Err(err.clone().into())).collect(),
        };
        let mut answers = Vec::with_capacity(reports.len());
        for (report, ((key, attempt, outcome), result)) in
            reports.into_iter().zip(results).enumerate()
        {
            answers.push(match result {
                Some(result) => {
                    let result = result
                        .map(|(invocation, _)| invocation)
                        .map_err(EngineError::from);
                    self.completed(&key, attempt, &outcome, result).await
                }
                None => {
                    let why = not_held.lock()[report]
                        .take()
                        .expect("a report decided to nothing has its reason kept");
                    self.repeated_completion(&key, attempt, &outcome)
                        .await
                        .and_then(|answer| answer.ok_or(why))
                }
            });
        }
        answers
    }

    /// A worker's outcome was applied (its lease ended with the attempt). When applying
    /// failed, answer as a repeat if a concurrent duplicate with the same outcome won the
    /// race.
    async fn completed(
        &self,
        key: &InvocationKey,
        attempt: u32,
        outcome: &Outcome,
        result: Result<Arc<Invocation>, EngineError>,
    ) -> Result<Arc<Invocation>, EngineError> {
        match result {
            Ok(invocation) => Ok(invocation),
            Err(err) => self
                .repeated_completion(key, attempt, outcome)
                .await?
                .ok_or(err),
        }
    }

    /// The answer to a completion of attempt `attempt` of `key` once that attempt ended,
    /// read from the invocation's own record (so it holds for as long as the record is
    /// kept): the invocation as it is now if the worker already reported this same outcome;
    /// refused if it reported another, or if the attempt ended without it. `None` while the
    /// attempt has not ended.
    async fn repeated_completion(
        &self,
        key: &InvocationKey,
        attempt: u32,
        outcome: &Outcome,
    ) -> Result<Option<Arc<Invocation>>, EngineError> {
        let record = self
            .backend
            .get(key)
            .await?
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

    /// The transition a worker's report of `outcome` on the attempt it holds calls for.
    fn report_transition(&self, held: &Held, attempt: u32, outcome: &Outcome) -> Transition {
        let duration_ms = self.clock.now_ms().saturating_sub(held.lease.started_ms);
        self.attempt_transition(&held.record, &held.config, attempt, outcome, duration_ms)
    }

    /// The transition that ends `attempt` of `record` with `outcome`, fenced on the attempt,
    /// with the destination records it delivers.
    fn attempt_transition(
        &self,
        record: &Invocation,
        config: &AsyncInvokeConfig,
        attempt: u32,
        outcome: &Outcome,
        duration_ms: i64,
    ) -> Transition {
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
        while let Some(due) = self.backend.next_due(&self.shutdown).await {
            self.fire(due).await;
        }
    }

    /// Act on the deadlines that came due: what each means is decided from the invocation's
    /// state now, and every resulting change is applied in one commit.
    async fn fire(&self, due: Vec<Due>) {
        let mut transitions = Vec::with_capacity(due.len());
        for due in &due {
            match self.deadline_passed(due).await {
                Some(transition) => transitions.push(transition),
                // A deadline that moved is armed again instead.
                None => self.backend.rearm(&due.record.key).await,
            }
        }
        if transitions.is_empty() {
            return;
        }
        let keys: Vec<InvocationKey> = transitions.iter().map(|t| t.key.clone()).collect();
        match self.backend.apply(transitions).await {
            Ok(results) => {
                for (key, result) in keys.iter().zip(results) {
                    if let Err(err) = result {
                        tracing::debug!(invocation = %key.id, %err, "a deadline no longer applies");
                        self.backend.rearm(key).await;
                    }
                }
            }
            Err(err) => {
                tracing::warn!(%err, "deadlines could not be applied; trying again in a second");
                let again = self.clock.now_ms().saturating_add(1_000);
                self.backend.retry_due(keys, again).await;
            }
        }
    }

    /// The deadline of `due` came: the change it calls for now, if any.
    async fn deadline_passed(&self, due: &Due) -> Option<Transition> {
        let Due {
            record,
            config,
            lease,
            status_since_ms,
        } = due;
        let key = &record.key;
        let now_ms = self.clock.now_ms();
        let expired = now_ms >= expiry_deadline_ms(record, config);
        match record.status {
            Status::Enqueued | Status::Retrying if expired => {
                Some(self.expiry_transition(record, config))
            }
            Status::Retrying if now_ms >= record.retry_at_ms => {
                let mut transition = Transition::new(key.clone(), Change::Requeue, now_ms);
                transition.attempt = Some(record.attempts);
                Some(transition)
            }
            Status::Stopping
                if now_ms >= grace_end_ms(*status_since_ms, self.config.stop_grace) =>
            {
                // The worker still holding the attempt is fenced off.
                if let Err(err) = self.backend.end_lease(key, record.attempts).await {
                    tracing::warn!(invocation = %key.id, %err, "cannot end the lease of a forced stop");
                    return None;
                }
                let mut transition = Transition::new(
                    key.clone(),
                    Change::ConfirmStop { by: "grace period" },
                    now_ms,
                );
                transition.attempt = Some(record.attempts);
                transition.keep_record = config.is_stateful();
                Some(transition)
            }
            Status::Dequeued | Status::Running | Status::Stopping => match lease {
                Some(lease) => self.lease_ran_out(record, config, lease).await,
                // Held with no lease: whoever ended it could not apply the attempt's end.
                None if record.status != Status::Stopping => {
                    Some(self.orphaned(record, config, *status_since_ms))
                }
                None => None,
            },
            _ => None,
        }
    }

    /// The failure of `record`'s attempt, held by no lease since `since_ms`: its lease ended
    /// (it ran out) but the failure was never applied.
    fn orphaned(
        &self,
        record: &Invocation,
        config: &AsyncInvokeConfig,
        since_ms: i64,
    ) -> Transition {
        let outcome = Outcome::Failure {
            error_message: attempt::LEASE_EXPIRED.into(),
            permanent: false,
        };
        metrics::counter!(crate::metrics::names::LEASE_EXPIRIES).increment(1);
        let duration_ms = self.clock.now_ms().saturating_sub(since_ms);
        self.attempt_transition(record, config, record.attempts, &outcome, duration_ms)
    }

    /// If `lease` on `record`'s attempt ran out without a heartbeat or a completion: ends
    /// it, and returns the failed attempt's transition.
    async fn lease_ran_out(
        &self,
        record: &Invocation,
        config: &AsyncInvokeConfig,
        lease: &Lease,
    ) -> Option<Transition> {
        let now_ms = self.clock.now_ms();
        if lease.deadline_ms > now_ms {
            return None;
        }
        // Of two takers of the same deadline, only the one that ends the lease goes on.
        match self.backend.end_lease(&record.key, lease.attempt).await {
            Ok(true) => {}
            Ok(false) => return None,
            Err(err) => {
                tracing::warn!(invocation = %record.key.id, %err, "cannot end an expired lease");
                return None;
            }
        }
        let outcome = Outcome::Failure {
            error_message: attempt::LEASE_EXPIRED.into(),
            permanent: false,
        };
        metrics::counter!(crate::metrics::names::LEASE_EXPIRIES).increment(1);
        let duration_ms = now_ms.saturating_sub(lease.started_ms);
        Some(self.attempt_transition(record, config, lease.attempt, &outcome, duration_ms))
    }

    /// How many of `function`'s invocations wait in its queue.
    pub fn queue_depth(&self, function: &crate::model::FunctionKey) -> usize {
        self.backend.queue_depth(function)
    }

    /// The `limit` functions with the most queued work, busiest first.
    pub fn busiest_queues(&self, limit: usize) -> Vec<QueueDepth> {
        self.backend.busiest_queues(limit)
    }

    /// What is held for open work.
    pub fn working_set(&self) -> WorkingSet {
        self.backend.working_set()
    }
}

#[cfg(test)]
mod tests;
