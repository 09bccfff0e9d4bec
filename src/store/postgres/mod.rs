//! The PostgreSQL backend: several stateless replicas share one database. Every invocation
//! is a row whose columns hold what the replicas coordinate on: its queue position while
//! Enqueued, its one deadline while open, the lease a worker holds. A claim takes ready rows
//! with `FOR UPDATE SKIP LOCKED`, so replicas never hand out the same attempt; every change
//! is checked against the row it locked (the same fencing as the embedded store), and is
//! one transaction with the events it appends to the account's change feed.
//!
//! Replicas learn of each other's commits through one notification per transaction (which
//! functions gained ready work, which accounts' feeds moved), and poll behind it, so a lost
//! notification costs latency, never work: pollers look again every second, the feed is
//! read every 100 ms while anyone watches, deadlines are scanned every 250 ms.

mod claim;
mod deadline;
mod feed;
mod group;
mod read;
mod rows;
mod schema;
mod signals;
mod write;

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use parking_lot::RwLock;
use tokio::sync::Notify;
use tokio_postgres::NoTls;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::model::{AsyncInvokeConfig, FunctionKey, Invocation, InvocationKey, StoredConfig};

use super::backend::{
    Backend, ChangeCursor, Committed, Current, Decide, DecideReport, Due, Lease, PollTarget,
    PurgeStop, Purged, QueueDepth, Recovered, Reported, Schedule, WorkWaiter, WorkingSet,
};
use super::lease_token::LeaseSigner;
use super::page::PageSigner;
use super::{
    ConfigKey, ConfigPage, FunctionPage, ListQuery, Page, ResumeFrom, StoreError, StoreSize,
    Transition, WatchScope,
};

pub use schema::SCHEMA_VERSION;

use feed::Feed;
use signals::WorkSignals;
use write::RetentionBatch;

/// Connections a replica opens at most for its calls and background work (besides its
/// invoke committers' own and its one listening connection).
const POOL_SIZE: usize = 16;
/// How long a call waits for a connection before it is answered UNAVAILABLE.
const CONNECT_WAIT: Duration = Duration::from_secs(5);
/// How often the gauges are read from the database.
const STATS_EVERY: Duration = Duration::from_secs(2);
/// The advisory lock a replica analyzes the invocation table under ("sai" in ASCII, then 2):
/// replicas that find the statistics stale together analyze once, not once each.
const ANALYZE_LOCK: i64 = 0x0073_6169_0000_0002;
/// The advisory lock a batch of retention runs under ("sai" in ASCII, then 3): one batch at a
/// time in the cluster.
pub const RETENTION_LOCK: i64 = 0x0073_6169_0000_0003;

/// Why the database could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DatabaseError {
    /// A statement or the connection failed. Said with its causes: the driver's own message
    /// is only its kind ("db error", "error connecting to server"), and what went wrong (the
    /// server's error, the refused connection) is its source.
    #[error("PostgreSQL: {}", crate::error_chain::error_chain(.0))]
    Query(tokio_postgres::Error),
    /// No connection could be had in time.
    #[error("PostgreSQL unreachable: {0}")]
    Unreachable(String),
    /// The store address does not parse.
    #[error("--store: {0}")]
    Address(String),
    /// The schema was written by a newer sai.
    #[error("the database's sai schema is version {found}, newer than this sai knows ({known}); run a sai at least as new as the one that migrated it")]
    SchemaTooNew {
        /// The version found.
        found: i64,
        /// The newest this binary knows.
        known: i64,
    },
    /// `sai_meta` holds something this binary cannot read.
    #[error("the database's sai_meta is not readable: {found}")]
    Schema {
        /// What was found.
        found: String,
    },
    /// A stored row does not decode.
    #[error("a stored invocation does not decode: {0}")]
    Corrupt(String),
}

impl From<tokio_postgres::Error> for DatabaseError {
    fn from(err: tokio_postgres::Error) -> Self {
        DatabaseError::Query(err)
    }
}

impl From<DatabaseError> for StoreError {
    fn from(err: DatabaseError) -> Self {
        StoreError::Database(Arc::new(err))
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(err: tokio_postgres::Error) -> Self {
        DatabaseError::Query(err).into()
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(err: deadpool_postgres::PoolError) -> Self {
        match err {
            deadpool_postgres::PoolError::Backend(err) => err.into(),
            other => DatabaseError::Unreachable(other.to_string()).into(),
        }
    }
}

/// Settings of a PostgreSQL backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresConfig {
    /// `postgres://user@host:port/database` (or key=value pairs).
    pub url: String,
}

/// The PostgreSQL backend.
pub struct Postgres {
    inner: Arc<Inner>,
}

/// What the backend's calls and its background tasks share.
struct Inner {
    pool: Pool,
    /// Connections of the invoke groups' committers, which keep generic plans.
    invoke_pool: Pool,
    schedule: Arc<dyn Schedule>,
    clock: Clock,
    leases: LeaseSigner,
    pages: PageSigner,
    feed: Arc<Feed>,
    work: Arc<WorkSignals>,
    /// Poked when a commit sets a deadline, so that the deadline scan looks at once.
    due_soon: Notify,
    /// Where the next poll starts among its targets.
    poll_rotation: AtomicUsize,
    /// Gauges, read every few seconds.
    stats: RwLock<Stats>,
    /// False after a commit failed for want of the database, until one succeeds.
    reachable: AtomicBool,
    /// Changes kept per account for resuming watches.
    watch_history: i64,
    /// Invokes and transitions waiting for the next group commit.
    groups: group::Groups,
    shutdown: CancellationToken,
}

/// The gauges of the last stats read.
#[derive(Debug, Default, Clone)]
struct Stats {
    working_set: WorkingSet,
    queues: Vec<QueueDepth>,
    size: StoreSize,
}

impl Postgres {
    /// Connect to the database at `config`, create or migrate its schema, and start the
    /// listener, feed and gauges; deadlines follow `schedule` on `clock`, `watch_history`
    /// changes are kept per account, and everything stops with `shutdown`.
    pub async fn connect(
        config: &PostgresConfig,
        schedule: Arc<dyn Schedule>,
        clock: Clock,
        watch_history: usize,
        shutdown: CancellationToken,
    ) -> Result<Arc<Self>, StoreError> {
        let mut pg = tokio_postgres::Config::from_str(&config.url)
            .map_err(|err| DatabaseError::Address(err.to_string()))?;
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(CONNECT_WAIT);
        }
        pg.application_name("sai");
        // Plans made for the rows at hand: a generic plan made while a queue was empty
        // scans the whole table once it is full.
        let pool = connection_pool(&pg, "force_custom_plan", POOL_SIZE)?;
        // An invoke group's statements (inserts from arrays, the catalog read by its key,
        // the feed append) have one plan whatever the tables hold: planned once per
        // connection, not on every commit, and without a statement per transaction to say so.
        let invoke_pool = connection_pool(
            &pg,
            "force_generic_plan",
            group::committers(group::Lane::Accepts),
        )?;
        let secrets = {
            let mut client = pool.get().await?;
            schema::migrate(&mut client).await?
        };
        let feed = Feed::new(pool.clone(), shutdown.clone());
        let work = Arc::new(WorkSignals::default());
        let inner = Arc::new(Inner {
            pool,
            invoke_pool,
            schedule,
            clock,
            leases: LeaseSigner::new(secrets.lease_key),
            pages: PageSigner::new(secrets.page_key),
            feed: feed.clone(),
            work: work.clone(),
            due_soon: Notify::new(),
            poll_rotation: AtomicUsize::new(0),
            stats: RwLock::new(Stats::default()),
            reachable: AtomicBool::new(true),
            watch_history: i64::try_from(watch_history).unwrap_or(i64::MAX),
            groups: group::Groups::new(),
            shutdown: shutdown.clone(),
        });
        tokio::spawn(feed.clone().tail());
        tokio::spawn(signals::listen(pg, inner.clone()));
        tokio::spawn(inner.clone().read_stats());
        for lane in group::Lane::ALL {
            for _ in 0..group::committers(lane) {
                tokio::spawn(group::run(inner.clone(), lane));
            }
        }
        Ok(Arc::new(Postgres { inner }))
    }
}

impl Inner {
    /// A pooled connection; UNAVAILABLE if none can be had in time.
    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.client_of(&self.pool).await
    }

    /// A connection for an invoke group's transaction.
    async fn invoke_client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.client_of(&self.invoke_pool).await
    }

    async fn client_of(&self, pool: &Pool) -> Result<deadpool_postgres::Object, StoreError> {
        if self.shutdown.is_cancelled() {
            return Err(StoreError::ShuttingDown);
        }
        match pool.get().await {
            Ok(client) => Ok(client),
            Err(err) => {
                self.reachable.store(false, Ordering::Relaxed);
                Err(err.into())
            }
        }
    }

    /// What a notification from another replica (or a listener that reconnected) asks.
    fn notified(&self, note: &signals::Note) {
        if note.everything {
            self.work.wake_all();
            self.feed.wake();
            self.due_soon.notify_one();
            return;
        }
        for function in &note.ready {
            self.work.wake(function);
        }
        if note.feed {
            self.feed.wake();
        }
        if note.due {
            self.due_soon.notify_one();
        }
    }

    /// Analyze the invocation table once it changed by a tenth since it was last analyzed
    /// (and by at least a thousand rows), without waiting for autovacuum's next round: with
    /// the statistics of a table that was empty, the planner finds an invocation by key
    /// through the list index's (account, service, function) prefix, scanning every
    /// invocation of the function, instead of through the unique key. One replica at a time
    /// analyzes, and only if the statistics are still stale once it holds the lock: every
    /// replica reads the same counter, and each analysis costs PostgreSQL a sample of the
    /// table.
    async fn refresh_statistics(
        &self,
        client: &mut deadpool_postgres::Object,
    ) -> Result<(), StoreError> {
        if !statistics_stale(client).await? {
            return Ok(());
        }
        let tx = client.transaction().await?;
        let locked: bool = tx
            .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&ANALYZE_LOCK])
            .await?
            .try_get(0)?;
        if locked && statistics_stale(&tx).await? {
            tx.batch_execute("ANALYZE sai_invocation").await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Read the gauges every few seconds until shutdown.
    async fn read_stats(self: Arc<Self>) {
        loop {
            match self.stats_now().await {
                Ok(stats) => *self.stats.write() = stats,
                Err(err) => tracing::debug!(%err, "gauges not read"),
            }
            tokio::select! {
                _ = tokio::time::sleep(STATS_EVERY) => {}
                _ = self.shutdown.cancelled() => return,
            }
        }
    }

    async fn stats_now(&self) -> Result<Stats, StoreError> {
        let mut client = self.client().await?;
        self.refresh_statistics(&mut client).await?;
        let counts = client
            .query_one(
                &client
                    .prepare_cached(
                        "SELECT count(*) FILTER (WHERE ready_ms IS NOT NULL),
                        count(*) FILTER (WHERE lease_attempt IS NOT NULL),
                        count(*)
                 FROM sai_invocation WHERE due_ms IS NOT NULL",
                    )
                    .await?,
                &[],
            )
            .await?;
        let count = |at: usize| -> Result<usize, StoreError> {
            Ok(usize::try_from(counts.try_get::<_, i64>(at)?).unwrap_or(0))
        };
        let working_set = WorkingSet {
            queued: count(0)?,
            active_leases: count(1)?,
            pending_timers: count(2)?,
        };
        let now_ms = self.clock.now_ms();
        let queues = client
            .query(
                &client
                    .prepare_cached(
                        "SELECT account, service, function, count(*), min(ready_ms)
                 FROM sai_invocation WHERE ready_ms IS NOT NULL
                 GROUP BY 1, 2, 3 ORDER BY 4 DESC LIMIT 100",
                    )
                    .await?,
                &[],
            )
            .await?
            .iter()
            .map(|row| {
                let oldest: i64 = row.try_get(4)?;
                Ok(QueueDepth {
                    function: FunctionKey::new(row.try_get(0)?, row.try_get(1)?, row.try_get(2)?),
                    depth: usize::try_from(row.try_get::<_, i64>(3)?).unwrap_or(0),
                    oldest_age: Duration::from_millis(
                        u64::try_from(now_ms.saturating_sub(oldest)).unwrap_or(0),
                    ),
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let disk: i64 = client
            .query_one(
                &client
                    .prepare_cached(
                        "SELECT pg_total_relation_size('sai_invocation')
                      + pg_total_relation_size('sai_change')",
                    )
                    .await?,
                &[],
            )
            .await?
            .try_get(0)?;
        Ok(Stats {
            size: StoreSize {
                open: working_set.pending_timers,
                disk_bytes: u64::try_from(disk).unwrap_or(0),
                watched: self.feed.watched(),
                ..StoreSize::default()
            },
            working_set,
            queues,
        })
    }
}

#[async_trait]
impl Backend for Postgres {
    async fn accept(&self, invocations: Vec<Invocation>) -> Committed<Arc<Invocation>> {
        self.inner.accept(invocations).await
    }

    async fn apply(&self, transitions: Vec<Transition>) -> Committed<(Arc<Invocation>, bool)> {
        self.inner.apply(transitions).await
    }

    async fn claim(
        &self,
        targets: &[PollTarget],
        max: usize,
        now_ms: i64,
        lease_deadline_ms: i64,
        decide: Decide,
    ) -> Result<Vec<super::backend::Claimed>, StoreError> {
        let offset = self.inner.poll_rotation.fetch_add(1, Ordering::Relaxed);
        self.inner
            .claim(group::Poll {
                targets: targets.to_vec(),
                max,
                offset,
                now_ms,
                lease_deadline_ms,
                decide,
            })
            .await
    }

    fn wait_for_work(&self, targets: &[PollTarget]) -> Box<dyn WorkWaiter> {
        Box::new(self.inner.work.wait_on(targets))
    }

    fn verify_lease(&self, token: &str, account: &str) -> Option<(InvocationKey, u32)> {
        self.inner.leases.verify(token, account)
    }

    async fn lease(&self, key: &InvocationKey, attempt: u32) -> Result<Option<Lease>, StoreError> {
        self.inner.lease(key, attempt).await
    }

    async fn extend_lease(
        &self,
        key: &InvocationKey,
        attempt: u32,
        deadline_ms: i64,
    ) -> Result<bool, StoreError> {
        self.inner.extend_lease(key, attempt, deadline_ms).await
    }

    async fn end_lease(&self, key: &InvocationKey, attempt: u32) -> Result<bool, StoreError> {
        self.inner.end_lease(key, attempt).await
    }

    async fn next_due(&self, shutdown: &CancellationToken) -> Option<Vec<Due>> {
        self.inner.next_due(shutdown).await
    }

    async fn rearm(&self, key: &InvocationKey) {
        if let Err(err) = self.inner.rearm(key).await {
            tracing::warn!(invocation = %key.id, %err, "a deadline could not be armed again");
        }
    }

    async fn retry_due(&self, keys: Vec<InvocationKey>, at_ms: i64) {
        if let Err(err) = self.inner.retry_due(&keys, at_ms).await {
            // Taken deadlines come due again on their own once their taking runs out.
            tracing::warn!(%err, "deadlines could not be offered again");
        }
    }

    async fn recover(&self) -> Result<Recovered, StoreError> {
        // Queues, leases and deadlines are columns: nothing to rebuild after a restart.
        Ok(Recovered::default())
    }

    async fn put_config(
        &self,
        key: ConfigKey,
        config: AsyncInvokeConfig,
        now_ms: i64,
    ) -> Result<StoredConfig, StoreError> {
        self.inner.put_config(&key, config, now_ms).await
    }

    async fn delete_config(&self, key: ConfigKey) -> Result<StoredConfig, StoreError> {
        self.inner.delete_config(&key).await
    }

    async fn purge_ended_before(
        &self,
        cutoff_ms: i64,
        budget: usize,
    ) -> Result<Purged, StoreError> {
        let trimmed = match self.inner.purge_ended_before(cutoff_ms, budget).await? {
            RetentionBatch::Ran(trimmed) => trimmed,
            // Another replica is at it, for the whole cluster: what it leaves is this
            // replica's next pass, and once nothing due is left, retention has got through
            // this cutoff whichever replica did the work (so this one's caught-up gauge moves).
            RetentionBatch::Waiting { due } => {
                return Ok(Purged {
                    invocations: 0,
                    stopped: if due {
                        PurgeStop::HeldBack
                    } else {
                        PurgeStop::CaughtUp
                    },
                })
            }
        };
        Ok(Purged {
            invocations: trimmed.invocations,
            // Oldest end first: a batch short of its budget dropped all that was due. The
            // feed grows several changes per invocation, so it may need more batches.
            stopped: if trimmed.invocations == budget || trimmed.changes == budget {
                PurgeStop::Budget
            } else {
                PurgeStop::CaughtUp
            },
        })
    }

    async fn get(&self, key: &InvocationKey) -> Result<Option<Arc<Invocation>>, StoreError> {
        Ok(self
            .inner
            .read_invocation(key, crate::persist::Detail::Full)
            .await?
            .map(Arc::new))
    }

    async fn summary(&self, key: &InvocationKey) -> Result<Option<Invocation>, StoreError> {
        self.inner
            .read_invocation(key, crate::persist::Detail::Summary)
            .await
    }

    async fn current(&self, keys: &[InvocationKey]) -> Result<Vec<Option<Current>>, StoreError> {
        self.inner.current(keys).await
    }

    async fn report(&self, keys: Vec<InvocationKey>, decide: DecideReport) -> Reported {
        self.inner.report(keys, decide).await
    }

    async fn list(&self, query: &ListQuery) -> Result<Page, StoreError> {
        self.inner.list(query).await
    }

    async fn config(&self, key: &ConfigKey) -> Result<StoredConfig, StoreError> {
        self.inner
            .stored_config(key)
            .await?
            .ok_or_else(|| StoreError::ConfigNotFound {
                service: key.function.service.to_string(),
                function: key.function.function.to_string(),
                qualifier: key.qualifier.to_string(),
            })
    }

    async fn effective_config(&self, key: &ConfigKey) -> Result<AsyncInvokeConfig, StoreError> {
        Ok(self
            .inner
            .stored_config(key)
            .await?
            .map(|stored| stored.config)
            .unwrap_or_default())
    }

    async fn list_configs(
        &self,
        function: &FunctionKey,
        limit: usize,
        next_token: &str,
    ) -> Result<ConfigPage, StoreError> {
        self.inner.list_configs(function, limit, next_token).await
    }

    async fn list_functions(
        &self,
        account: &Arc<str>,
        limit: usize,
        next_token: &str,
    ) -> Result<FunctionPage, StoreError> {
        self.inner.list_functions(account, limit, next_token).await
    }

    async fn watch_invocation(
        &self,
        key: InvocationKey,
        from_event_id: u64,
    ) -> Result<Box<dyn ChangeCursor>, StoreError> {
        let watch = self.inner.feed.watch_invocation(key, from_event_id).await?;
        Ok(Box::new(watch))
    }

    async fn watch_changes(
        &self,
        scope: WatchScope,
        from: ResumeFrom,
    ) -> Result<Box<dyn ChangeCursor>, StoreError> {
        let watch = self.inner.feed.watch_changes(scope, from).await?;
        Ok(Box::new(watch))
    }

    fn queue_depth(&self, function: &FunctionKey) -> usize {
        self.inner
            .stats
            .read()
            .queues
            .iter()
            .find(|queue| &queue.function == function)
            .map_or(0, |queue| queue.depth)
    }

    fn busiest_queues(&self, limit: usize) -> Vec<QueueDepth> {
        let stats = self.inner.stats.read();
        stats.queues.iter().take(limit).cloned().collect()
    }

    fn working_set(&self) -> WorkingSet {
        self.inner.stats.read().working_set
    }

    fn size(&self) -> StoreSize {
        let mut size = self.inner.stats.read().size;
        size.watched = self.inner.feed.watched();
        size
    }

    fn writable(&self) -> bool {
        !self.inner.shutdown.is_cancelled() && self.inner.reachable.load(Ordering::Relaxed)
    }

    fn write_running_for(&self) -> Option<Duration> {
        None
    }
}

/// Whether the invocation table changed by a tenth (and a thousand rows) since it was last
/// analyzed.
async fn statistics_stale(client: &impl GenericClient) -> Result<bool, StoreError> {
    let row = client
        .query_opt(
            "SELECT s.n_mod_since_analyze, c.reltuples FROM pg_stat_user_tables s
             JOIN pg_class c ON c.oid = s.relid WHERE s.relname = 'sai_invocation'",
            &[],
        )
        .await?;
    let Some(row) = row else { return Ok(false) };
    let changed: i64 = row.try_get(0)?;
    let rows: f32 = row.try_get(1)?;
    Ok(changed >= 1_000 && changed as f32 >= rows.max(0.0) * 0.1)
}

/// A pool of up to `size` connections to `pg` that plan prepared statements with
/// `plan_cache_mode`.
fn connection_pool(
    pg: &tokio_postgres::Config,
    plan_cache_mode: &str,
    size: usize,
) -> Result<Pool, StoreError> {
    let mut pg = pg.clone();
    pg.options(format!("-c plan_cache_mode={plan_cache_mode}"));
    let manager = Manager::from_config(
        pg,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Ok(Pool::builder(manager)
        .max_size(size)
        .wait_timeout(Some(CONNECT_WAIT))
        .create_timeout(Some(CONNECT_WAIT))
        .recycle_timeout(Some(CONNECT_WAIT))
        .runtime(Runtime::Tokio1)
        .build()
        .map_err(|err| DatabaseError::Address(err.to_string()))?)
}
