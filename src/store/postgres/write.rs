//! Transactions: every change is checked against the rows it locked, applied in Rust by the
//! model (the same code the embedded store runs), written back with the columns replicas
//! coordinate on, and appended to the account's change feed in the same transaction.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use deadpool_postgres::Transaction;
use tokio_postgres::error::SqlState;

use crate::model::{
    AsyncInvokeConfig, DestinationStatus, FunctionKey, Invocation, InvocationKey, Status,
    StoredConfig,
};
use crate::persist::Decoder;

use super::super::backend::{
    is_held, Committed, Current, DecideReport, Lease, ReportOutcomes, Reported,
};
use super::super::{check, ConfigKey, StoreError, Transition};
use super::deadline::DUE_SCAN_EVERY_MS;
use super::group::Job;
use super::rows::{self, KeyColumns, Loaded, LOADED_COLUMNS};
use super::signals::{self, Note};
use super::{Inner, RETENTION_LOCK};

/// Tries of a transaction that lost a deadlock or serialization race.
pub const TRIES: usize = 3;

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
    pub(super) fn armed(&mut self, due: impl IntoIterator<Item = Option<i64>>) {
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
/// commit; again if it lost a deadlock. Its paths name this module from its parent, so that
/// the modules beside it can run transactions too.
macro_rules! transaction {
    ($inner:expr, |$tx:ident, $writes:ident| $body:expr) => {{
        let mut tries = 0;
        loop {
            tries += 1;
            let mut client = $inner.client().await?;
            let $tx = client.transaction().await?;
            let mut $writes = super::write::Writes::default();
            let result = async { $body }.await;
            let result = match result {
                Ok(value) => $inner.finish($tx, $writes).await.map(|()| value),
                Err(err) => Err(err),
            };
            match result {
                Err(err) if super::write::retryable(&err) && tries < super::write::TRIES => {
                    continue
                }
                Err(err) => {
                    if matches!(err, super::super::StoreError::Database(_)) {
                        $inner
                            .reachable
                            .store(false, std::sync::atomic::Ordering::Relaxed);
                    }
                    break Err(err);
                }
                Ok(value) => {
                    $inner
                        .reachable
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                    break Ok(value);
                }
            }
        }
    }};
}
pub(super) use transaction;

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
    pub(super) async fn configs(
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
    pub(super) async fn lock(
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

    /// Drop up to `budget` finished invocations that ended before `cutoff_ms`, and up to
    /// `budget` feed entries past what is kept for resuming watches, unless another replica is
    /// running a batch of retention now.
    ///
    /// One batch at a time in the cluster, under an advisory lock: replicas running the same
    /// deletes together would pick the same oldest rows, and all but one would wait on its
    /// row locks to find them gone, ending their passes early after the database had scanned
    /// the rows once per replica.
    pub async fn purge_ended_before(
        &self,
        cutoff_ms: i64,
        budget: usize,
    ) -> Result<RetentionBatch, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let ours: bool = tx
            .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&RETENTION_LOCK])
            .await?
            .try_get(0)?;
        if !ours {
            let due: bool = tx
                .query_one(
                    &tx.prepare_cached(
                        "SELECT EXISTS (SELECT 1 FROM sai_invocation
                         WHERE end_ms > 0 AND end_ms < $1)",
                    )
                    .await?,
                    &[&cutoff_ms],
                )
                .await?
                .try_get(0)?;
            tx.rollback().await?;
            return Ok(RetentionBatch::Waiting { due });
        }
        let budget = i64::try_from(budget).unwrap_or(i64::MAX);
        let purged: i64 = tx
            .query_one(
                &tx.prepare_cached(
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
        let changes: i64 = tx
            .query_one(
                &tx.prepare_cached(
                    "WITH trimmed AS (
                     DELETE FROM sai_change WHERE (account, seq) IN (
                         SELECT c.account, c.seq FROM sai_feed_head h
                         JOIN sai_change c ON c.account = h.account AND c.seq <= h.seq - $1
                         LIMIT $2)
                     RETURNING account, seq),
                 heads AS (
                     UPDATE sai_feed_head h SET trimmed_to = greatest(h.trimmed_to, t.top)
                     FROM (SELECT account, max(seq) AS top FROM trimmed GROUP BY account) t
                     WHERE h.account = t.account)
                 SELECT count(*) FROM trimmed",
                )
                .await?,
                &[&self.watch_history, &budget],
            )
            .await?
            .try_get(0)?;
        tx.commit().await?;
        Ok(RetentionBatch::Ran(Trimmed {
            invocations: usize::try_from(purged).unwrap_or(0),
            changes: usize::try_from(changes).unwrap_or(0),
        }))
    }
}

/// What a replica's call for a batch of retention came to.
#[derive(Debug, Clone, Copy)]
pub enum RetentionBatch {
    /// Its batch ran.
    Ran(Trimmed),
    /// Another replica's batch was running; `due`: invocations that ended before the cutoff
    /// are still stored.
    Waiting { due: bool },
}

/// What one batch of retention removed from the database.
#[derive(Debug, Clone, Copy)]
pub struct Trimmed {
    /// Finished invocations.
    pub invocations: usize,
    /// Feed entries past what is kept for resuming watches.
    pub changes: usize,
}
