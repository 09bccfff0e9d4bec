//! Claims and leases: polls take ready rows with `FOR UPDATE SKIP LOCKED` inside a group
//! commit, decide each, and lease what starts; a lease is read, extended and ended by
//! whichever replica the worker reaches, each checked against the row it locks.

use std::collections::{BTreeSet, HashMap};

use deadpool_postgres::Transaction;

use crate::model::{InvocationKey, Status};
use crate::persist::Decoder;

use super::super::backend::{Claim, Claimed, Lease, PollTarget};
use super::super::StoreError;
use super::group::{Job, Poll};
use super::rows::{self, Loaded, LOADED_COLUMNS};
use super::write::{transaction, Writes};
use super::Inner;

impl Inner {
    /// Take up to `max` ready invocations of `targets`, decide each, apply the decisions and
    /// lease what started, in the next group commit.
    pub async fn claim(&self, poll: Poll) -> Result<Vec<Claimed>, StoreError> {
        if poll.targets.is_empty() || poll.max == 0 {
            return Ok(Vec::new());
        }
        self.groups.ask(|reply| Job::Claim { poll, reply }).await?
    }

    /// The claims of a group inside `tx`, answered in order. Polls of the same targets share
    /// one take (`FOR UPDATE SKIP LOCKED` does not skip rows this transaction locked, so
    /// separate takes would have to run one after the other, each writing its rows before
    /// the next looks) and one write; the rows taken go to the polls in arrival order, each
    /// up to its `max`, and each poll decides its own with its own `decide`.
    pub async fn claims_in(
        &self,
        tx: &Transaction<'_>,
        writes: &mut Writes,
        polls: &[&Poll],
    ) -> Result<Vec<Vec<Claimed>>, StoreError> {
        let mut claimed: Vec<Vec<Claimed>> = polls.iter().map(|_| Vec::new()).collect();
        let mut done = vec![false; polls.len()];
        for first in 0..polls.len() {
            if done[first] {
                continue;
            }
            let sharing: Vec<usize> = (first..polls.len())
                .filter(|&at| !done[at] && polls[at].targets == polls[first].targets)
                .collect();
            for &at in &sharing {
                done[at] = true;
            }
            let answers = self.claim_together(tx, writes, polls, &sharing).await?;
            for (at, answer) in sharing.into_iter().zip(answers) {
                claimed[at] = answer;
            }
        }
        Ok(claimed)
    }

    /// Up to `max` ready rows of `targets`, fairly across them from `offset`, locked.
    async fn take(
        &self,
        tx: &Transaction<'_>,
        targets: &[PollTarget],
        max: usize,
        offset: usize,
    ) -> Result<Vec<Loaded>, StoreError> {
        let share = max.div_ceil(targets.len());
        let mut taken: Vec<Loaded> = Vec::with_capacity(max);
        let mut decoder = Decoder::default();
        for at in 0..targets.len() {
            let left = max - taken.len();
            if left == 0 {
                break;
            }
            let target = &targets[(offset + at) % targets.len()];
            let limit = i64::try_from(share.min(left)).unwrap_or(i64::MAX);
            let f = &target.function;
            let found = match &target.qualifier {
                None => {
                    tx.query(
                        &tx.prepare_cached(&format!(
                            "SELECT {LOADED_COLUMNS} FROM sai_invocation
                             WHERE account = $1 AND service = $2 AND function = $3
                               AND ready_ms IS NOT NULL
                             ORDER BY ready_ms, record_no LIMIT $4 FOR UPDATE SKIP LOCKED"
                        ))
                        .await?,
                        &[&&*f.account, &&*f.service, &&*f.function, &limit],
                    )
                    .await?
                }
                Some(qualifier) => {
                    tx.query(
                        &tx.prepare_cached(&format!(
                            "SELECT {LOADED_COLUMNS} FROM sai_invocation
                             WHERE account = $1 AND service = $2 AND function = $3
                               AND ready_ms IS NOT NULL AND qualifier = $5
                             ORDER BY ready_ms, record_no LIMIT $4 FOR UPDATE SKIP LOCKED"
                        ))
                        .await?,
                        &[
                            &&*f.account,
                            &&*f.service,
                            &&*f.function,
                            &limit,
                            &&**qualifier,
                        ],
                    )
                    .await?
                }
            };
            for row in &found {
                taken.push(Loaded::from_row(row, &mut decoder)?);
            }
        }
        Ok(taken)
    }

    /// The polls `sharing` (indexes into `polls`, all of the same targets): one take for
    /// all, each poll's rows decided by it, one apply for all.
    async fn claim_together(
        &self,
        tx: &Transaction<'_>,
        writes: &mut Writes,
        polls: &[&Poll],
        sharing: &[usize],
    ) -> Result<Vec<Vec<Claimed>>, StoreError> {
        let lead = polls[sharing[0]];
        let max = sharing.iter().map(|&at| polls[at].max).sum();
        let taken = self.take(tx, &lead.targets, max, lead.offset).await?;
        if taken.is_empty() {
            return Ok(sharing.iter().map(|_| Vec::new()).collect());
        }
        let configs = self
            .configs(
                tx,
                writes,
                taken.iter().map(|row| rows::config_key(&row.invocation)),
            )
            .await?;
        let mut transitions = Vec::with_capacity(taken.len() * 2);
        // (poll among `sharing`, key, attempt, its last transition, lease deadline)
        let mut leasing = Vec::with_capacity(taken.len());
        let mut granted = HashMap::with_capacity(taken.len());
        let mut remaining = taken.iter();
        for (poll_at, &at) in sharing.iter().enumerate() {
            let poll = polls[at];
            for row in remaining.by_ref().take(poll.max) {
                let record = &row.invocation;
                if record.status != Status::Enqueued {
                    continue;
                }
                let config = configs
                    .get(&rows::config_key(record))
                    .cloned()
                    .unwrap_or_default();
                match (poll.decide)(record, &config) {
                    Claim::Lease {
                        attempt,
                        transitions: starting,
                    } => {
                        transitions.extend(starting);
                        leasing.push((
                            poll_at,
                            record.key.clone(),
                            attempt,
                            transitions.len() - 1,
                            poll.lease_deadline_ms,
                        ));
                        granted.insert(
                            record.key.clone(),
                            Lease {
                                attempt,
                                started_ms: poll.now_ms,
                                deadline_ms: poll.lease_deadline_ms,
                            },
                        );
                    }
                    Claim::Instead(transition) => transitions.push(transition),
                }
            }
        }
        // The take already locked and read these rows.
        let locked = taken
            .into_iter()
            .map(|row| (row.invocation.key.clone(), row))
            .collect();
        let results = self
            .apply_in(tx, writes, transitions, &granted, locked)
            .await?;
        let mut claimed: Vec<Vec<Claimed>> = sharing.iter().map(|_| Vec::new()).collect();
        for (poll_at, key, attempt, last, deadline_ms) in leasing {
            let Some(Ok((invocation, _))) = results.get(last) else {
                continue;
            };
            claimed[poll_at].push(Claimed {
                token: self.leases.token(&key, attempt),
                invocation: invocation.clone(),
                attempt,
                deadline_ms,
            });
        }
        Ok(claimed)
    }

    /// The lease on attempt `attempt` of `key`, if held.
    pub async fn lease(
        &self,
        key: &InvocationKey,
        attempt: u32,
    ) -> Result<Option<Lease>, StoreError> {
        let client = self.client().await?;
        let attempt_column = i32::try_from(attempt).unwrap_or(i32::MAX);
        let row = client
            .query_opt(
                &client
                    .prepare_cached(
                        "SELECT lease_started_ms, lease_deadline_ms FROM sai_invocation
                 WHERE account = $1 AND service = $2 AND function = $3 AND id = $4
                   AND lease_attempt = $5",
                    )
                    .await?,
                &[
                    &&*key.function.account,
                    &&*key.function.service,
                    &&*key.function.function,
                    &&*key.id,
                    &attempt_column,
                ],
            )
            .await?;
        row.map(|row| {
            Ok(Lease {
                attempt,
                started_ms: row.try_get(0)?,
                deadline_ms: row.try_get(1)?,
            })
        })
        .transpose()
    }

    /// Move a held lease's deadline, and the invocation's deadline with it.
    pub async fn extend_lease(
        &self,
        key: &InvocationKey,
        attempt: u32,
        deadline_ms: i64,
    ) -> Result<bool, StoreError> {
        transaction!(self, |tx, writes| {
            let keys = BTreeSet::from([key.clone()]);
            let mut loaded = self.lock(&tx, &keys).await?;
            let Some(row) = loaded.get_mut(key) else {
                return Ok(false);
            };
            match &mut row.lease {
                Some(lease) if lease.attempt == attempt => lease.deadline_ms = deadline_ms,
                _ => return Ok(false),
            }
            self.rearm_in(&tx, &mut writes, &loaded, key).await?;
            Ok(true)
        })
    }

    /// Write the deadline of `key` (loaded and locked) from its state now.
    async fn rearm_in(
        &self,
        tx: &Transaction<'_>,
        writes: &mut Writes,
        loaded: &HashMap<InvocationKey, Loaded>,
        key: &InvocationKey,
    ) -> Result<(), StoreError> {
        let Some(row) = loaded.get(key) else {
            return Ok(());
        };
        let config_key = rows::config_key(&row.invocation);
        let configs = self
            .configs(tx, writes, std::iter::once(config_key.clone()))
            .await?;
        let config = configs.get(&config_key).cloned().unwrap_or_default();
        let due = self
            .schedule
            .deadline_ms(&row.invocation, &config, row.lease.as_ref());
        tx.execute(
            &tx.prepare_cached("UPDATE sai_invocation SET due_ms = $2, lease_deadline_ms = $3 WHERE record_no = $1").await?,
            &[
                &row.record_no,
                &due,
                &row.lease.map(|lease| lease.deadline_ms),
            ],
        )
        .await?;
        writes.armed([due]);
        Ok(())
    }

    /// End the lease on attempt `attempt` of `key`; true for the one caller that ended it.
    /// An invocation still held is due at once: if whoever ended the lease dies before it
    /// applies the attempt's end, the next deadline scan (on any replica) finds it held with
    /// no lease, and the engine fails the attempt.
    pub async fn end_lease(&self, key: &InvocationKey, attempt: u32) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let attempt = i32::try_from(attempt).unwrap_or(i32::MAX);
        let now_ms = self.clock.now_ms();
        let ended = client
            .execute(
                &client
                    .prepare_cached(
                        "UPDATE sai_invocation
                 SET lease_attempt = NULL, lease_started_ms = NULL, lease_deadline_ms = NULL,
                     due_ms = CASE WHEN status IN ('Dequeued', 'Running') THEN $6 ELSE due_ms END
                 WHERE account = $1 AND service = $2 AND function = $3 AND id = $4
                   AND lease_attempt = $5",
                    )
                    .await?,
                &[
                    &&*key.function.account,
                    &&*key.function.service,
                    &&*key.function.function,
                    &&*key.id,
                    &attempt,
                    &now_ms,
                ],
            )
            .await?;
        Ok(ended == 1)
    }

    /// Arm the deadline of `key` from its state now.
    pub async fn rearm(&self, key: &InvocationKey) -> Result<(), StoreError> {
        transaction!(self, |tx, writes| {
            let keys = BTreeSet::from([key.clone()]);
            let loaded = self.lock(&tx, &keys).await?;
            self.rearm_in(&tx, &mut writes, &loaded, key).await
        })
    }
}
