//! Transactions: every change is checked against the rows it locked, applied in Rust by the
//! model (the same code the embedded store runs), written back with the columns replicas
//! coordinate on, and appended to the account's change feed in the same transaction.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Transaction;
use tokio_postgres::error::SqlState;
use tokio_util::sync::CancellationToken;

use crate::model::{
    AsyncInvokeConfig, DestinationStatus, FunctionKey, Invocation, InvocationKey, Status,
    StoredConfig,
};
use crate::persist::Decoder;

use super::super::backend::{
    is_held, Claim, Claimed, Committed, Current, DecideReport, Due, Lease, PollTarget,
    ReportOutcomes, Reported,
};
use super::super::{check, ConfigKey, StoreError, Transition};
use super::group::{Job, Poll};
use super::rows::{self, KeyColumns, Loaded, LOADED_COLUMNS};
use super::signals::{self, Note};
use super::Inner;

/// How long a taken deadline stays with the replica that took it: if that replica dies
/// before acting on it, another takes it after this.
const TAKEN_FOR_MS: i64 = 30_000;
/// Most deadlines one scan takes.
const DUE_BATCH: i64 = 256;
/// How often deadlines are looked for when nothing says one is near.
const DUE_SCAN_EVERY_MS: i64 = 250;
const DUE_SCAN_EVERY: Duration = Duration::from_millis(DUE_SCAN_EVERY_MS.unsigned_abs());
/// Tries of a transaction that lost a deadlock or serialization race.
const TRIES: usize = 3;

/// What a transaction wrote besides its rows: feed entries per account, in commit order,
/// and what other replicas must hear of.
#[derive(Default)]
pub struct Writes {
    changes: BTreeMap<Arc<str>, Vec<ChangeRow>>,
    ready: BTreeSet<FunctionKey>,
    /// The soonest deadline written.
    soonest_due: Option<i64>,
    /// Configs read in this transaction (they cannot change under it: a config write
    /// locks its row).
    configs: HashMap<ConfigKey, AsyncInvokeConfig>,
}

struct ChangeRow {
    key: InvocationKey,
    started_ms: i64,
    event_id: i32,
    record: Vec<u8>,
}

impl Writes {
    /// Deadlines `due` were written.
    fn armed(&mut self, due: impl IntoIterator<Item = Option<i64>>) {
        self.soonest_due = due.into_iter().flatten().chain(self.soonest_due).min();
    }

    /// `invocation` just gained its last event.
    fn changed(&mut self, invocation: &Invocation) {
        let event_id = invocation
            .events
            .last()
            .map_or(0, |event| i32::try_from(event.event_id).unwrap_or(i32::MAX));
        self.changes
            .entry(invocation.key.function.account.clone())
            .or_default()
            .push(ChangeRow {
                key: invocation.key.clone(),
                started_ms: invocation.started_time_ms,
                event_id,
                record: rows::change_record(invocation),
            });
        if invocation.status == Status::Enqueued {
            self.ready.insert(invocation.key.function.clone());
        }
    }
}

/// Whether a failed transaction may simply run again.
pub fn retryable(err: &StoreError) -> bool {
    let StoreError::Database(db) = err else {
        return false;
    };
    let super::DatabaseError::Query(query) = &**db else {
        return false;
    };
    matches!(
        query.code(),
        Some(&SqlState::T_R_DEADLOCK_DETECTED) | Some(&SqlState::T_R_SERIALIZATION_FAILURE)
    )
}

/// Run `$body` (which uses `$tx` and `$writes`) in a transaction, then write the feed and
/// commit; again if it lost a deadlock.
macro_rules! transaction {
    ($inner:expr, |$tx:ident, $writes:ident| $body:expr) => {{
        let mut tries = 0;
        loop {
            tries += 1;
            let mut client = $inner.client().await?;
            let $tx = client.transaction().await?;
            let mut $writes = Writes::default();
            let result = async { $body }.await;
            let result = match result {
                Ok(value) => $inner.finish($tx, $writes).await.map(|()| value),
                Err(err) => Err(err),
            };
            match result {
                Err(err) if retryable(&err) && tries < TRIES => continue,
                Err(err) => {
                    if matches!(err, StoreError::Database(_)) {
                        $inner.reachable.store(false, Ordering::Relaxed);
                    }
                    break Err(err);
                }
                Ok(value) => {
                    $inner.reachable.store(true, Ordering::Relaxed);
                    break Ok(value);
                }
            }
        }
    }};
}

/// One account's feed entries of a transaction, as the append statement takes them.
struct FeedAppend<'a> {
    account: &'a str,
    count: i64,
    service: Vec<&'a str>,
    function: Vec<&'a str>,
    id: Vec<&'a str>,
    started: Vec<i64>,
    event: Vec<i32>,
    record: Vec<&'a [u8]>,
}

impl<'a> FeedAppend<'a> {
    fn of(account: &'a str, changes: &'a [ChangeRow]) -> Self {
        FeedAppend {
            account,
            count: i64::try_from(changes.len()).unwrap_or(i64::MAX),
            service: changes.iter().map(|c| &*c.key.function.service).collect(),
            function: changes.iter().map(|c| &*c.key.function.function).collect(),
            id: changes.iter().map(|c| &*c.key.id).collect(),
            started: changes.iter().map(|c| c.started_ms).collect(),
            event: changes.iter().map(|c| c.event_id).collect(),
            record: changes.iter().map(|c| c.record.as_slice()).collect(),
        }
    }

    fn params(&self) -> [&(dyn tokio_postgres::types::ToSql + Sync); 8] {
        [
            &self.account,
            &self.count,
            &self.service,
            &self.function,
            &self.id,
            &self.started,
            &self.event,
            &self.record,
        ]
    }
}

impl Inner {
    /// Append the transaction's feed entries, tell the other replicas, commit, and tell this
    /// one.
    pub async fn finish(&self, tx: Transaction<'_>, writes: Writes) -> Result<(), StoreError> {
        let mut note = Note {
            ready: writes.ready.iter().cloned().collect(),
            feed: !writes.changes.is_empty(),
            // A deadline after the next regular scan is found by it; scanning at once for
            // every commit would cost a transaction each.
            due: writes.soonest_due.is_some_and(|at_ms| {
                at_ms <= self.clock.now_ms().saturating_add(DUE_SCAN_EVERY_MS)
            }),
            everything: false,
        };
        let payload = (note.feed || note.due || !note.ready.is_empty()).then(|| {
            let payload = note.encode();
            if payload.len() > signals::MAX_NOTE_BYTES {
                note = Note::everything();
                note.encode()
            } else {
                payload
            }
        });
        let notify = tx.prepare_cached("SELECT pg_notify($1, $2)").await?;
        let append = tx
            .prepare_cached(
                "WITH head AS (
                     INSERT INTO sai_feed_head (account, seq) VALUES ($1, $2)
                     ON CONFLICT (account) DO UPDATE SET seq = sai_feed_head.seq + EXCLUDED.seq
                     RETURNING seq - $2 AS base)
                 INSERT INTO sai_change (account, seq, service, function, id, started_ms, event_id, record)
                 SELECT $1, head.base + c.ord, c.s, c.f, c.i, c.t, c.e, c.r
                 FROM head, unnest($3::text[], $4::text[], $5::text[], $6::bigint[], $7::int[], $8::bytea[])
                      WITH ORDINALITY AS c(s, f, i, t, e, r, ord)",
            )
            .await?;
        let feeds: Vec<FeedAppend> = writes
            .changes
            .iter()
            .map(|(account, changes)| FeedAppend::of(account, changes))
            .collect();
        // The notification (sent at commit, whatever its place in the transaction), the feed
        // appends and the COMMIT go out together, one round trip for all; they run in this
        // order, so the notification stays out of the time a feed head is locked. Feed appends
        // come last, one statement per account, accounts in order: a head row stays locked
        // only from here to the end of the commit, and two transactions never wait on each
        // other's heads. Every replica's commits of an account wait for its head, so that
        // time holds no round trip back to sai between the appends and the COMMIT.
        let notified = async {
            match &payload {
                Some(payload) => tx
                    .execute(&notify, &[&signals::CHANNEL, payload])
                    .await
                    .map(|_| ()),
                None => Ok(()),
            }
        };
        let params: Vec<_> = feeds.iter().map(FeedAppend::params).collect();
        let appended = futures_util::future::try_join_all(
            params.iter().map(|params| tx.execute(&append, params)),
        );
        let committed = tx.client().batch_execute("COMMIT");
        let (notified, appended, committed) =
            futures_util::future::join3(notified, appended, committed).await;
        // The transaction ended with that COMMIT: committed, or rolled back if a statement
        // before it failed (PostgreSQL ends a failed transaction's COMMIT as a ROLLBACK), and
        // the handle would send a ROLLBACK of its own when dropped.
        std::mem::forget(tx);
        notified?;
        appended?;
        committed?;
        self.notified(&note);
        Ok(())
    }

    /// The configs of `keys` (the defaults where none is stored), each read once per
    /// transaction.
    async fn configs(
        &self,
        tx: &Transaction<'_>,
        writes: &mut Writes,
        keys: impl Iterator<Item = ConfigKey>,
    ) -> Result<HashMap<ConfigKey, AsyncInvokeConfig>, StoreError> {
        let mut configs = HashMap::new();
        let mut keys: BTreeSet<ConfigKey> = keys.collect();
        keys.retain(|key| match writes.configs.get(key) {
            Some(known) => {
                configs.insert(key.clone(), known.clone());
                false
            }
            None => true,
        });
        if keys.is_empty() {
            return Ok(configs);
        }
        for key in &keys {
            configs.insert(key.clone(), AsyncInvokeConfig::default());
        }
        let [account, service, function, qualifier] = rows::config_key_columns(&keys);
        let found = tx
            .query(
                &tx.prepare_cached(
                    "SELECT account, service, function, qualifier, config FROM sai_function
                 WHERE (account, service, function, qualifier) IN
                       (SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]))
                   AND config IS NOT NULL",
                )
                .await?,
                &[&account, &service, &function, &qualifier],
            )
            .await?;
        for row in found {
            let key = ConfigKey {
                function: FunctionKey::new(row.try_get(0)?, row.try_get(1)?, row.try_get(2)?),
                qualifier: row.try_get::<_, &str>(3)?.into(),
            };
            let stored = super::read::parse_config(row.try_get(4)?)?;
            configs.insert(key, stored.config);
        }
        for key in keys {
            let config = configs.get(&key).cloned().unwrap_or_default();
            writes.configs.insert(key, config);
        }
        Ok(configs)
    }

    /// Lock and read the rows of `keys`.
    async fn lock(
        &self,
        tx: &Transaction<'_>,
        keys: &BTreeSet<InvocationKey>,
    ) -> Result<HashMap<InvocationKey, Loaded>, StoreError> {
        if keys.is_empty() {
            return Ok(HashMap::new());
        }
        let columns = KeyColumns::of(keys.iter());
        let found = tx
            .query(
                &tx.prepare_cached(&format!(
                    "SELECT {LOADED_COLUMNS} FROM sai_invocation
                     WHERE (account, service, function, id) IN
                           (SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]))
                     ORDER BY record_no FOR UPDATE"
                ))
                .await?,
                &[
                    &columns.account,
                    &columns.service,
                    &columns.function,
                    &columns.id,
                ],
            )
            .await?;
        let mut decoder = Decoder::default();
        let mut loaded = HashMap::with_capacity(found.len());
        for row in &found {
            let one = Loaded::from_row(row, &mut decoder)?;
            loaded.insert(one.invocation.key.clone(), one);
        }
        Ok(loaded)
    }

    /// Insert newly accepted invocations; an id already taken is refused.
    pub async fn insert(
        &self,
        tx: &Transaction<'_>,
        writes: &mut Writes,
        invocations: Vec<Invocation>,
    ) -> Result<Vec<Result<Arc<Invocation>, StoreError>>, StoreError> {
        let mut seen = HashSet::with_capacity(invocations.len());
        let fresh: Vec<bool> = invocations
            .iter()
            .map(|invocation| seen.insert(invocation.key.clone()))
            .collect();
        let candidates: Vec<&Invocation> = invocations
            .iter()
            .zip(&fresh)
            .filter(|(_, fresh)| **fresh)
            .map(|(invocation, _)| invocation)
            .collect();
        let functions: BTreeSet<ConfigKey> =
            candidates.iter().map(|i| rows::config_key(i)).collect();
        let [account, service, function, qualifier] = rows::config_key_columns(&functions);
        let catalog = tx
            .prepare_cached(
                "INSERT INTO sai_function (account, service, function, qualifier)
                 SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[])
                 ON CONFLICT DO NOTHING",
            )
            .await?;
        // Neither needs the other: one round trip for both.
        let (configs, _) = futures_util::future::try_join(
            self.configs(tx, writes, invocations.iter().map(rows::config_key)),
            async {
                tx.execute(&catalog, &[&account, &service, &function, &qualifier])
                    .await
                    .map_err(StoreError::from)
            },
        )
        .await?;
        let columns = KeyColumns::of(candidates.iter().map(|i| &i.key));
        let qualifier: Vec<&str> = candidates.iter().map(|i| &*i.qualifier).collect();
        let status: Vec<&str> = candidates
            .iter()
            .map(|i| rows::status_name(i.status))
            .collect();
        let started: Vec<i64> = candidates.iter().map(|i| i.started_time_ms).collect();
        let attempts: Vec<i32> = candidates
            .iter()
            .map(|i| i32::try_from(i.attempts).unwrap_or(i32::MAX))
            .collect();
        let ready: Vec<Option<i64>> = candidates.iter().map(|i| rows::ready_ms(i)).collect();
        let due: Vec<Option<i64>> = candidates
            .iter()
            .map(|i| {
                let config = configs
                    .get(&rows::config_key(i))
                    .cloned()
                    .unwrap_or_default();
                self.schedule.deadline_ms(i, &config, None)
            })
            .collect();
        let record: Vec<Vec<u8>> = candidates.iter().map(|i| rows::record(i)).collect();
        let payload: Vec<Option<&str>> =
            candidates.iter().map(|i| rows::payload_apart(i)).collect();
        let inserted = tx
            .query(
                &tx.prepare_cached(
                    "INSERT INTO sai_invocation (account, service, function, id, qualifier, status,
                        started_ms, attempts, ready_ms, due_ms, record, payload)
                 SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                        $6::text[], $7::bigint[], $8::int[], $9::bigint[], $10::bigint[],
                        $11::bytea[], $12::text[])
                 ON CONFLICT (account, service, function, id) DO NOTHING
                 RETURNING account, service, function, id",
                )
                .await?,
                &[
                    &columns.account,
                    &columns.service,
                    &columns.function,
                    &columns.id,
                    &qualifier,
                    &status,
                    &started,
                    &attempts,
                    &ready,
                    &due,
                    &record,
                    &payload,
                ],
            )
            .await?;
        let mut stored = HashSet::with_capacity(inserted.len());
        for row in &inserted {
            stored.insert(
                FunctionKey::new(row.try_get(0)?, row.try_get(1)?, row.try_get(2)?)
                    .invocation(row.try_get(3)?),
            );
        }
        writes.armed(
            due.iter()
                .zip(&candidates)
                .filter(|(_, i)| stored.contains(&i.key))
                .map(|(due, _)| *due),
        );
        Ok(invocations
            .into_iter()
            .zip(fresh)
            .map(|(invocation, fresh)| {
                if fresh && stored.contains(&invocation.key) {
                    writes.changed(&invocation);
                    Ok(Arc::new(invocation.without_events()))
                } else {
                    Err(StoreError::InvocationAlreadyExists(invocation.key))
                }
            })
            .collect())
    }

    /// Store newly accepted invocations, in the next group commit.
    pub async fn accept(&self, invocations: Vec<Invocation>) -> Committed<Arc<Invocation>> {
        self.groups
            .ask(|reply| Job::Accept { invocations, reply })
            .await?
    }

    /// Apply transitions in order, in the next group commit.
    pub async fn apply(&self, transitions: Vec<Transition>) -> Committed<(Arc<Invocation>, bool)> {
        self.groups
            .ask(|reply| Job::Apply { transitions, reply })
            .await?
    }

    /// Apply `transitions` in order inside `tx`; `granted` are leases that start with them,
    /// `locked` rows this transaction already locked and read (the others are locked here).
    pub async fn apply_in(
        &self,
        tx: &Transaction<'_>,
        writes: &mut Writes,
        transitions: Vec<Transition>,
        granted: &HashMap<InvocationKey, Lease>,
        locked: HashMap<InvocationKey, Loaded>,
    ) -> Result<Vec<Result<(Arc<Invocation>, bool), StoreError>>, StoreError> {
        let mut keys: BTreeSet<InvocationKey> = transitions.iter().map(|t| t.key.clone()).collect();
        let mut loaded = locked;
        keys.retain(|key| !loaded.contains_key(key));
        loaded.extend(self.lock(tx, &keys).await?);
        let mut dirty: BTreeSet<InvocationKey> = BTreeSet::new();
        let mut removed: BTreeSet<InvocationKey> = BTreeSet::new();
        let mut results = Vec::with_capacity(transitions.len());
        for t in transitions {
            let Some(row) = loaded.get_mut(&t.key) else {
                results.push(Err(StoreError::InvocationNotFound(t.key.clone())));
                continue;
            };
            if removed.contains(&t.key) {
                results.push(Err(StoreError::InvocationNotFound(t.key.clone())));
                continue;
            }
            let to = match check(&row.invocation, &t) {
                Err(err) => {
                    results.push(Err(err));
                    continue;
                }
                Ok(None) => {
                    results.push(Ok((Arc::new(row.invocation.without_events()), false)));
                    continue;
                }
                Ok(Some(to)) => to,
            };
            let destination = match to {
                Status::Succeeded => t.on_success.clone(),
                Status::Failed | Status::Expired => t.on_failure.clone(),
                _ => None,
            };
            let delivered = match destination {
                Some(record) => Some(match self.insert(tx, writes, vec![*record]).await?.pop() {
                    Some(Ok(_)) => DestinationStatus::Succeeded,
                    _ => DestinationStatus::Failed,
                }),
                None => None,
            };
            let row = loaded
                .get_mut(&t.key)
                .expect("the row was found above and nothing removes it in between");
            let invocation = &mut row.invocation;
            if let Some(status) = delivered {
                invocation.destination_status = status;
            }
            match invocation.apply(&t.change, t.now_ms) {
                Ok(Some(_)) => {}
                Ok(None) => {
                    results.push(Ok((Arc::new(invocation.without_events()), false)));
                    continue;
                }
                Err(source) => {
                    results.push(Err(StoreError::IllegalTransition {
                        key: t.key.clone(),
                        source,
                    }));
                    continue;
                }
            }
            writes.changed(invocation);
            dirty.insert(t.key.clone());
            if invocation.status.is_terminal() && !t.keep_record {
                removed.insert(t.key.clone());
            }
            results.push(Ok((Arc::new(invocation.without_events()), true)));
        }
        let configs = self
            .configs(
                tx,
                writes,
                dirty
                    .iter()
                    .filter(|key| !removed.contains(*key))
                    .filter_map(|key| loaded.get(key))
                    .map(|row| rows::config_key(&row.invocation)),
            )
            .await?;
        let mut updates = Vec::with_capacity(dirty.len());
        for key in dirty.iter().filter(|key| !removed.contains(*key)) {
            let row = loaded.get_mut(key).expect("dirty rows were loaded");
            let invocation = &row.invocation;
            let lease =
                granted.get(key).copied().or(row.lease).filter(|lease| {
                    is_held(invocation.status) && lease.attempt == invocation.attempts
                });
            row.lease = lease;
            let config = configs
                .get(&rows::config_key(invocation))
                .cloned()
                .unwrap_or_default();
            let due = self
                .schedule
                .deadline_ms(invocation, &config, lease.as_ref());
            updates.push((row.record_no, due));
        }
        self.write_rows(tx, &loaded, &updates).await?;
        writes.armed(updates.iter().map(|(_, due)| *due));
        if !removed.is_empty() {
            let gone: Vec<i64> = removed
                .iter()
                .filter_map(|key| loaded.get(key))
                .map(|row| row.record_no)
                .collect();
            tx.execute(
                &tx.prepare_cached("DELETE FROM sai_invocation WHERE record_no = ANY($1)")
                    .await?,
                &[&gone],
            )
            .await?;
        }
        Ok(results)
    }

    /// Write back the rows `updates` names (record number, deadline), from `loaded`.
    async fn write_rows(
        &self,
        tx: &Transaction<'_>,
        loaded: &HashMap<InvocationKey, Loaded>,
        updates: &[(i64, Option<i64>)],
    ) -> Result<(), StoreError> {
        if updates.is_empty() {
            return Ok(());
        }
        let by_number: HashMap<i64, &Loaded> =
            loaded.values().map(|row| (row.record_no, row)).collect();
        let mut number = Vec::with_capacity(updates.len());
        let mut status = Vec::with_capacity(updates.len());
        let mut end = Vec::with_capacity(updates.len());
        let mut attempts = Vec::with_capacity(updates.len());
        let mut ready = Vec::with_capacity(updates.len());
        let mut due = Vec::with_capacity(updates.len());
        let mut lease_attempt = Vec::with_capacity(updates.len());
        let mut lease_started = Vec::with_capacity(updates.len());
        let mut lease_deadline = Vec::with_capacity(updates.len());
        let mut record = Vec::with_capacity(updates.len());
        for (record_no, deadline) in updates {
            let row = by_number[record_no];
            let invocation = &row.invocation;
            number.push(*record_no);
            status.push(rows::status_name(invocation.status));
            end.push(if invocation.status.is_terminal() {
                invocation.end_time_ms
            } else {
                0
            });
            attempts.push(i32::try_from(invocation.attempts).unwrap_or(i32::MAX));
            ready.push(rows::ready_ms(invocation));
            due.push(*deadline);
            lease_attempt.push(
                row.lease
                    .map(|lease| i32::try_from(lease.attempt).unwrap_or(i32::MAX)),
            );
            lease_started.push(row.lease.map(|lease| lease.started_ms));
            lease_deadline.push(row.lease.map(|lease| lease.deadline_ms));
            record.push(rows::record(invocation));
        }
        tx.execute(
            &tx.prepare_cached(
                "UPDATE sai_invocation AS i SET status = v.status, end_ms = v.end_ms,
                    attempts = v.attempts, ready_ms = v.ready_ms, due_ms = v.due_ms,
                    lease_attempt = v.lease_attempt, lease_started_ms = v.lease_started_ms,
                    lease_deadline_ms = v.lease_deadline_ms, record = v.record
             FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::int[], $5::bigint[],
                         $6::bigint[], $7::int[], $8::bigint[], $9::bigint[], $10::bytea[])
                  AS v(record_no, status, end_ms, attempts, ready_ms, due_ms, lease_attempt,
                       lease_started_ms, lease_deadline_ms, record)
             WHERE i.record_no = v.record_no",
            )
            .await?,
            &[
                &number,
                &status,
                &end,
                &attempts,
                &ready,
                &due,
                &lease_attempt,
                &lease_started,
                &lease_deadline,
                &record,
            ],
        )
        .await?;
        Ok(())
    }

    /// Decide workers' reports against their rows and apply them, in the next group commit.
    pub async fn report(&self, keys: Vec<InvocationKey>, decide: DecideReport) -> Reported {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        self.groups
            .ask(|reply| Job::Report {
                keys,
                decide,
                reply,
            })
            .await?
    }

    /// Reports inside `tx`: the rows of every report locked and read in one statement, each
    /// report decided against its row as it is here, and every decided transition applied
    /// with one write. Answers each report's outcomes, in order.
    pub async fn report_in(
        &self,
        tx: &Transaction<'_>,
        writes: &mut Writes,
        reports: &[(&[InvocationKey], &DecideReport)],
    ) -> Result<Vec<ReportOutcomes>, StoreError> {
        let keys: BTreeSet<InvocationKey> = reports
            .iter()
            .flat_map(|(keys, _)| keys.iter().cloned())
            .collect();
        let locked = self.lock(tx, &keys).await?;
        let configs = self
            .configs(
                tx,
                writes,
                locked.values().map(|row| rows::config_key(&row.invocation)),
            )
            .await?;
        let mut transitions = Vec::new();
        // (report, place in it) of each transition.
        let mut decided = Vec::new();
        for (report, (keys, decide)) in reports.iter().enumerate() {
            for (at, key) in keys.iter().enumerate() {
                let current = locked.get(key).map(|row| Current {
                    record: row.invocation.without_events(),
                    config: configs
                        .get(&rows::config_key(&row.invocation))
                        .cloned()
                        .unwrap_or_default(),
                    lease: row
                        .lease
                        .filter(|lease| lease.attempt == row.invocation.attempts),
                });
                if let Some(transition) = decide(at, current) {
                    transitions.push(transition);
                    decided.push((report, at));
                }
            }
        }
        let mut answers: Vec<Vec<_>> = reports
            .iter()
            .map(|(keys, _)| keys.iter().map(|_| None).collect())
            .collect();
        if !transitions.is_empty() {
            let results = self
                .apply_in(tx, writes, transitions, &HashMap::new(), locked)
                .await?;
            for ((report, at), result) in decided.into_iter().zip(results) {
                answers[report][at] = Some(result);
            }
        }
        Ok(answers)
    }

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

    /// Offer the deadlines of `keys` again at `at_ms`.
    pub async fn retry_due(&self, keys: &[InvocationKey], at_ms: i64) -> Result<(), StoreError> {
        let client = self.client().await?;
        let columns = KeyColumns::of(keys.iter());
        client
            .execute(
                &client
                    .prepare_cached(
                        "UPDATE sai_invocation SET due_ms = $5
                 WHERE (account, service, function, id) IN
                       (SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]))
                   AND due_ms IS NOT NULL",
                    )
                    .await?,
                &[
                    &columns.account,
                    &columns.service,
                    &columns.function,
                    &columns.id,
                    &at_ms,
                ],
            )
            .await?;
        Ok(())
    }

    /// Wait until deadlines come due, and take them: each is moved out of every replica's
    /// way for [`TAKEN_FOR_MS`], in which the engine acts on it.
    pub async fn next_due(&self, shutdown: &CancellationToken) -> Option<Vec<Due>> {
        loop {
            if shutdown.is_cancelled() {
                return None;
            }
            match self.take_due(self.clock.now_ms()).await {
                Ok(due) if !due.is_empty() => return Some(due),
                Ok(_) => {}
                Err(StoreError::ShuttingDown) => return None,
                Err(err) => tracing::warn!(%err, "deadlines could not be read"),
            }
            tokio::select! {
                _ = self.clock.sleep(DUE_SCAN_EVERY) => {}
                _ = tokio::time::sleep(DUE_SCAN_EVERY) => {}
                _ = self.due_soon.notified() => {}
                _ = shutdown.cancelled() => return None,
            }
        }
    }

    async fn take_due(&self, now_ms: i64) -> Result<Vec<Due>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let found = tx
            .query(
                &tx.prepare_cached(&format!(
                    "SELECT {LOADED_COLUMNS} FROM sai_invocation
                     WHERE due_ms <= $1 ORDER BY due_ms LIMIT $2 FOR UPDATE SKIP LOCKED"
                ))
                .await?,
                &[&now_ms, &DUE_BATCH],
            )
            .await?;
        if found.is_empty() {
            return Ok(Vec::new());
        }
        let mut decoder = Decoder::default();
        let loaded = found
            .iter()
            .map(|row| Loaded::from_row(row, &mut decoder))
            .collect::<Result<Vec<_>, _>>()?;
        let numbers: Vec<i64> = loaded.iter().map(|row| row.record_no).collect();
        tx.execute(
            &tx.prepare_cached("UPDATE sai_invocation SET due_ms = $2 WHERE record_no = ANY($1)")
                .await?,
            &[&numbers, &now_ms.saturating_add(TAKEN_FOR_MS)],
        )
        .await?;
        let configs = self
            .configs(
                &tx,
                &mut Writes::default(),
                loaded.iter().map(|row| rows::config_key(&row.invocation)),
            )
            .await?;
        tx.commit().await?;
        Ok(loaded
            .into_iter()
            .filter(|row| !row.invocation.status.is_terminal())
            .map(|row| Due {
                config: configs
                    .get(&rows::config_key(&row.invocation))
                    .cloned()
                    .unwrap_or_default(),
                status_since_ms: row.invocation.status_since_ms(),
                lease: row.lease,
                record: row.invocation.without_events(),
            })
            .collect())
    }

    /// Create or replace a config, keeping its creation time.
    pub async fn put_config(
        &self,
        key: &ConfigKey,
        config: AsyncInvokeConfig,
        now_ms: i64,
    ) -> Result<StoredConfig, StoreError> {
        transaction!(self, |tx, _writes| {
            let old = self.config_in(&tx, key, true).await?;
            let stored = StoredConfig {
                config: config.clone(),
                created_time_ms: old.map_or(now_ms, |old| old.created_time_ms),
                last_modified_time_ms: now_ms,
            };
            let json = super::read::config_json(&stored);
            let f = &key.function;
            tx.execute(
                &tx.prepare_cached(
                    "INSERT INTO sai_function (account, service, function, qualifier, config)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (account, service, function, qualifier)
                 DO UPDATE SET config = EXCLUDED.config",
                )
                .await?,
                &[
                    &&*f.account,
                    &&*f.service,
                    &&*f.function,
                    &&*key.qualifier,
                    &json,
                ],
            )
            .await?;
            Ok(stored)
        })
    }

    /// Remove a config.
    pub async fn delete_config(&self, key: &ConfigKey) -> Result<StoredConfig, StoreError> {
        transaction!(self, |tx, _writes| {
            let old = self.config_in(&tx, key, true).await?.ok_or_else(|| {
                StoreError::ConfigNotFound {
                    service: key.function.service.to_string(),
                    function: key.function.function.to_string(),
                    qualifier: key.qualifier.to_string(),
                }
            })?;
            let f = &key.function;
            tx.execute(
                &tx.prepare_cached(
                    "UPDATE sai_function SET config = NULL
                 WHERE account = $1 AND service = $2 AND function = $3 AND qualifier = $4",
                )
                .await?,
                &[&&*f.account, &&*f.service, &&*f.function, &&*key.qualifier],
            )
            .await?;
            Ok(old)
        })
    }

    /// Drop up to `budget` finished invocations that ended before `cutoff_ms`, and the feed
    /// entries past what is kept for resuming watches.
    pub async fn purge_ended_before(
        &self,
        cutoff_ms: i64,
        budget: usize,
    ) -> Result<usize, StoreError> {
        let client = self.client().await?;
        let budget = i64::try_from(budget).unwrap_or(i64::MAX);
        let purged: i64 = client
            .query_one(
                &client
                    .prepare_cached(
                        "WITH gone AS (
                     DELETE FROM sai_invocation WHERE record_no IN (
                         SELECT record_no FROM sai_invocation
                         WHERE end_ms > 0 AND end_ms < $1 ORDER BY end_ms LIMIT $2)
                     RETURNING 1)
                 SELECT count(*) FROM gone",
                    )
                    .await?,
                &[&cutoff_ms, &budget],
            )
            .await?
            .try_get(0)?;
        client
            .execute(
                &client
                    .prepare_cached(
                        "WITH trimmed AS (
                     DELETE FROM sai_change WHERE (account, seq) IN (
                         SELECT c.account, c.seq FROM sai_feed_head h
                         JOIN sai_change c ON c.account = h.account AND c.seq <= h.seq - $1
                         LIMIT $2)
                     RETURNING account, seq)
                 UPDATE sai_feed_head h SET trimmed_to = greatest(h.trimmed_to, t.top)
                 FROM (SELECT account, max(seq) AS top FROM trimmed GROUP BY account) t
                 WHERE h.account = t.account",
                    )
                    .await?,
                &[&self.watch_history, &budget],
            )
            .await?;
        Ok(usize::try_from(purged).unwrap_or(0))
    }
}
