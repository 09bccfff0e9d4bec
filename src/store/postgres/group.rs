//! Group commit: invokes and transitions that arrive while transactions are in flight are
//! gathered into the next one, so that a replica under load commits many calls with one
//! round of locks, one feed append per account and one WAL flush. Each lane's committers
//! (see [`committers`]) run side by side, each on its own connection; a call is answered once
//! its group committed (or failed as a whole), and a group runs to the end even if its
//! callers stop waiting.
//!
//! Invokes and the rest (transitions, workers' reports, claims) queue apart, each for
//! committers of its own: a producer's call waits only for its group's insert and commit, not
//! for the row locks and updates of other calls' completions and claims. Mixed groups made
//! every invoke wait for those too; apart, end to end went faster in each of six alternating
//! runs against mixed groups (one and three replicas; BENCHMARKS.md).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, Mutex};

use crate::model::{Invocation, InvocationKey};

use super::super::backend::{
    Claimed, Committed, Decide, DecideReport, PollTarget, ReportOutcomes, Reported,
};
use super::super::{StoreError, Transition};
use super::write::{retryable, Writes};
use super::Inner;

/// Committers running side by side in `lane`. Invokes have one: a second committer
/// split a replica's waiting producers between two smaller groups (one gathering while the
/// other commits), and with one, eight alternating rounds were faster in seven at one replica
/// and at three, at 3-4% less machine CPU per invocation (BENCHMARKS.md).
pub fn committers(lane: Lane) -> usize {
    match lane {
        Lane::Accepts => 1,
        Lane::Changes => 4,
    }
}

/// Whether a group of `lane` lingers (see [`LINGER_BELOW`]) after a group of a single call.
/// Invokes that come one call at a time (one producer sending batches, each waiting for its
/// answer) gain nothing by waiting. Workers' polls and reports do: under the same rule, three
/// replicas spent up to 40% more of the machine per invocation on their smaller groups, and
/// went up to a quarter slower (BENCHMARKS.md).
fn lingers_after_one_call(lane: Lane) -> bool {
    match lane {
        Lane::Accepts => false,
        Lane::Changes => true,
    }
}

/// Most items (invocations and transitions) one group takes.
const GROUP_ITEMS: usize = 1_000;
/// While another group of this replica is committing, a group smaller than this waits up
/// to [`LINGER`] for more calls: every commit of an account's changes takes its feed head in
/// turn, so under load fewer, bigger commits go faster (and the group would wait on the
/// head anyway). A call arriving at an idle replica is committed at once, and so is one
/// whose lane's last group held a single call, unless [`lingers_after_one_call`]; a lane fed
/// by many callers fills its groups again.
const LINGER_BELOW: usize = 128;
const LINGER: std::time::Duration = std::time::Duration::from_millis(5);
/// Calls waiting for a committer at most; more wait to be queued.
const QUEUE: usize = 4_096;
/// Tries of a group that lost a deadlock.
const TRIES: usize = 3;

/// One call's work.
pub enum Job {
    /// Newly accepted invocations.
    Accept {
        invocations: Vec<Invocation>,
        reply: oneshot::Sender<Committed<Arc<Invocation>>>,
    },
    /// Transitions.
    Apply {
        transitions: Vec<Transition>,
        reply: oneshot::Sender<Committed<(Arc<Invocation>, bool)>>,
    },
    /// Workers' reports, decided against the rows this transaction locks.
    Report {
        keys: Vec<InvocationKey>,
        decide: DecideReport,
        reply: oneshot::Sender<Reported>,
    },
    /// A poll's claim.
    Claim {
        poll: Poll,
        reply: oneshot::Sender<Result<Vec<Claimed>, StoreError>>,
    },
}

/// What a claim takes and how it decides.
pub struct Poll {
    pub targets: Vec<PollTarget>,
    pub max: usize,
    /// Where it starts among its targets.
    pub offset: usize,
    pub now_ms: i64,
    pub lease_deadline_ms: i64,
    pub decide: Decide,
}

impl Job {
    fn items(&self) -> usize {
        match self {
            Job::Accept { invocations, .. } => invocations.len(),
            Job::Apply { transitions, .. } => transitions.len(),
            Job::Report { keys, .. } => keys.len(),
            Job::Claim { poll, .. } => poll.max,
        }
    }

    fn fail(self, err: StoreError) {
        // A caller that stopped waiting is told nothing.
        match self {
            Job::Accept { reply, .. } => drop(reply.send(Err(err))),
            Job::Apply { reply, .. } => drop(reply.send(Err(err))),
            Job::Report { reply, .. } => drop(reply.send(Err(err))),
            Job::Claim { reply, .. } => drop(reply.send(Err(err))),
        }
    }
}

/// Which queue a job joins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// Newly accepted invocations.
    Accepts,
    /// Transitions, reports and claims.
    Changes,
}

impl Lane {
    pub const ALL: [Lane; 2] = [Lane::Accepts, Lane::Changes];
}

/// One lane's queue.
struct Queue {
    jobs: mpsc::Sender<Job>,
    waiting: Arc<Mutex<mpsc::Receiver<Job>>>,
    /// Calls the lane's last group gathered.
    last_group_calls: AtomicUsize,
}

impl Queue {
    fn new() -> Self {
        let (jobs, waiting) = mpsc::channel(QUEUE);
        Queue {
            jobs,
            waiting: Arc::new(Mutex::new(waiting)),
            last_group_calls: AtomicUsize::new(0),
        }
    }
}

/// The queues calls join.
pub struct Groups {
    accepts: Queue,
    changes: Queue,
    /// Groups being committed now, in both lanes.
    committing: AtomicUsize,
}

impl Groups {
    /// An empty queue; [`run`] its committers.
    pub fn new() -> Self {
        Groups {
            accepts: Queue::new(),
            changes: Queue::new(),
            committing: AtomicUsize::new(0),
        }
    }

    fn queue(&self, lane: Lane) -> &Queue {
        match lane {
            Lane::Accepts => &self.accepts,
            Lane::Changes => &self.changes,
        }
    }

    /// Queue the job `make` builds around its reply, and wait for the answer.
    pub async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Job,
    ) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        let job = make(reply);
        let lane = match job {
            Job::Accept { .. } => Lane::Accepts,
            Job::Apply { .. } | Job::Report { .. } | Job::Claim { .. } => Lane::Changes,
        };
        self.queue(lane)
            .jobs
            .send(job)
            .await
            .map_err(|_| StoreError::ShuttingDown)?;
        answer.await.map_err(|_| StoreError::ShuttingDown)
    }
}

/// Run one committer of `lane` until shutdown.
pub async fn run(inner: Arc<Inner>, lane: Lane) {
    let queue = inner.groups.queue(lane);
    loop {
        let group = {
            let mut waiting = queue.waiting.lock().await;
            let first = tokio::select! {
                job = waiting.recv() => job,
                _ = inner.shutdown.cancelled() => None,
            };
            let Some(first) = first else { return };
            let mut items = first.items();
            let mut group = vec![first];
            let linger_until = tokio::time::Instant::now() + LINGER;
            let lingers = inner.groups.committing.load(Ordering::Acquire) > 0
                && (lingers_after_one_call(lane)
                    || queue.last_group_calls.load(Ordering::Relaxed) > 1);
            while items < GROUP_ITEMS {
                let next = match waiting.try_recv() {
                    Ok(job) => Some(job),
                    Err(_) if !lingers || items >= LINGER_BELOW => None,
                    Err(_) => tokio::time::timeout_at(linger_until, waiting.recv())
                        .await
                        .ok()
                        .flatten(),
                };
                match next {
                    Some(job) => {
                        items += job.items();
                        group.push(job);
                    }
                    None => break,
                }
            }
            inner.groups.committing.fetch_add(1, Ordering::AcqRel);
            queue.last_group_calls.store(group.len(), Ordering::Relaxed);
            group
        };
        commit(&inner, group).await;
        inner.groups.committing.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What one job of a group answers.
enum Answer {
    Accept(Vec<Result<Arc<Invocation>, StoreError>>),
    Apply(Vec<Result<(Arc<Invocation>, bool), StoreError>>),
    Report(ReportOutcomes),
    Claim(Vec<Claimed>),
}

async fn commit(inner: &Inner, group: Vec<Job>) {
    let mut tries = 0;
    let answers = loop {
        tries += 1;
        match attempt(inner, &group).await {
            Err(err) if retryable(&err) && tries < TRIES => continue,
            other => break other,
        }
    };
    match answers {
        Ok(answers) => {
            inner.reachable.store(true, Ordering::Relaxed);
            for (job, answer) in group.into_iter().zip(answers) {
                match (job, answer) {
                    (Job::Accept { reply, .. }, Answer::Accept(results)) => {
                        drop(reply.send(Ok(results)))
                    }
                    (Job::Apply { reply, .. }, Answer::Apply(results)) => {
                        drop(reply.send(Ok(results)))
                    }
                    (Job::Report { reply, .. }, Answer::Report(results)) => {
                        drop(reply.send(Ok(results)))
                    }
                    (Job::Claim { reply, .. }, Answer::Claim(claimed)) => {
                        drop(reply.send(Ok(claimed)))
                    }
                    (job, _) => job.fail(StoreError::WriterStopped),
                }
            }
        }
        Err(err) => {
            if matches!(err, StoreError::Database(_)) {
                inner.reachable.store(false, Ordering::Relaxed);
            }
            for job in group {
                job.fail(err.clone());
            }
        }
    }
}

/// One transaction for the whole group: every invocation accepted in one insert (a group of
/// the invoke lane holds nothing else), or every transition applied with one round of locks
/// and one write, in arrival order (so a call's changes apply as they would alone), then
/// every report decided and applied the same way (after the transitions, so it sees them),
/// then the claims.
async fn attempt(inner: &Inner, group: &[Job]) -> Result<Vec<Answer>, StoreError> {
    let mut client = if group.iter().all(|job| matches!(job, Job::Accept { .. })) {
        inner.invoke_client().await?
    } else {
        inner.client().await?
    };
    let tx = client.transaction().await?;
    let mut writes = Writes::default();
    let invocations: Vec<Invocation> = group
        .iter()
        .filter_map(|job| match job {
            Job::Accept { invocations, .. } => Some(invocations.iter().cloned()),
            _ => None,
        })
        .flatten()
        .collect();
    let mut accepted = if invocations.is_empty() {
        Vec::new()
    } else {
        inner.insert(&tx, &mut writes, invocations).await?
    }
    .into_iter();
    let transitions: Vec<Transition> = group
        .iter()
        .filter_map(|job| match job {
            Job::Apply { transitions, .. } => Some(transitions.iter().cloned()),
            _ => None,
        })
        .flatten()
        .collect();
    let mut applied = if transitions.is_empty() {
        Vec::new()
    } else {
        inner
            .apply_in(
                &tx,
                &mut writes,
                transitions,
                &HashMap::new(),
                HashMap::new(),
            )
            .await?
    }
    .into_iter();
    let reports: Vec<(&[InvocationKey], &DecideReport)> = group
        .iter()
        .filter_map(|job| match job {
            Job::Report { keys, decide, .. } => Some((keys.as_slice(), decide)),
            _ => None,
        })
        .collect();
    let mut reported = if reports.is_empty() {
        Vec::new()
    } else {
        inner.report_in(&tx, &mut writes, &reports).await?
    }
    .into_iter();
    let polls: Vec<&Poll> = group
        .iter()
        .filter_map(|job| match job {
            Job::Claim { poll, .. } => Some(poll),
            _ => None,
        })
        .collect();
    let mut claimed = if polls.is_empty() {
        Vec::new()
    } else {
        inner.claims_in(&tx, &mut writes, &polls).await?
    }
    .into_iter();
    let mut answers = Vec::with_capacity(group.len());
    for job in group {
        answers.push(match job {
            Job::Accept { invocations, .. } => {
                Answer::Accept(accepted.by_ref().take(invocations.len()).collect())
            }
            Job::Apply { transitions, .. } => {
                Answer::Apply(applied.by_ref().take(transitions.len()).collect())
            }
            Job::Report { .. } => Answer::Report(
                reported
                    .next()
                    .expect("report_in answers every report of the group"),
            ),
            Job::Claim { .. } => Answer::Claim(
                claimed
                    .next()
                    .expect("claims_in answers every claim of the group"),
            ),
        });
    }
    inner.finish(tx, writes).await?;
    Ok(answers)
}
