//! The database schema, created and moved forward by sai itself: each migration is one
//! transaction, applied in order under an advisory lock so that replicas starting together
//! migrate once; a database whose schema is newer than this binary knows is refused.
//!
//! Invocation records are stored in the data directory's record encoding (format 4, see
//! `persist::codec`) beside the columns that queries filter and order on; their payload is
//! kept in the record when small, in its own column otherwise.

use tokio_postgres::Client;

use super::DatabaseError;

/// The advisory lock key migrations run under ("sai" in ASCII, then 1).
const MIGRATION_LOCK: i64 = 0x0073_6169_0000_0001;

/// Every migration, in order; the schema version is how many have been applied.
const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE sai_function (
    account   text COLLATE "C" NOT NULL,
    service   text COLLATE "C" NOT NULL,
    function  text COLLATE "C" NOT NULL,
    qualifier text COLLATE "C" NOT NULL,
    -- The stored config as JSON; NULL for a function invoked but never configured.
    config    text,
    PRIMARY KEY (account, service, function, qualifier)
);

CREATE TABLE sai_invocation (
    record_no  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account    text COLLATE "C" NOT NULL,
    service    text COLLATE "C" NOT NULL,
    function   text COLLATE "C" NOT NULL,
    id         text COLLATE "C" NOT NULL,
    qualifier  text COLLATE "C" NOT NULL,
    status     text NOT NULL,
    started_ms bigint NOT NULL,
    -- When it became terminal; 0 while open.
    end_ms     bigint NOT NULL DEFAULT 0,
    attempts   integer NOT NULL,
    -- While Enqueued: when it entered the queue (dispatch order).
    ready_ms   bigint,
    -- While open: its one deadline (expiry, backoff, lease, stop grace).
    due_ms     bigint,
    -- The lease a worker holds on the current attempt, if any.
    lease_attempt     integer,
    lease_started_ms  bigint,
    lease_deadline_ms bigint,
    record     bytea NOT NULL,
    -- The payload when the record does not hold it.
    payload    text,
    UNIQUE (account, service, function, id)
);
CREATE INDEX sai_invocation_list ON sai_invocation (account, service, function, started_ms, id);
CREATE INDEX sai_invocation_ready ON sai_invocation (account, service, function, ready_ms, record_no)
    WHERE ready_ms IS NOT NULL;
CREATE INDEX sai_invocation_due ON sai_invocation (due_ms) WHERE due_ms IS NOT NULL;
CREATE INDEX sai_invocation_ended ON sai_invocation (end_ms) WHERE end_ms > 0;
ALTER TABLE sai_invocation SET (
    autovacuum_vacuum_scale_factor = 0.05,
    autovacuum_analyze_scale_factor = 0.02
);

-- The change feed: every committed event, numbered per account in commit order.
CREATE TABLE sai_change (
    account    text COLLATE "C" NOT NULL,
    seq        bigint NOT NULL,
    service    text COLLATE "C" NOT NULL,
    function   text COLLATE "C" NOT NULL,
    id         text COLLATE "C" NOT NULL,
    started_ms bigint NOT NULL,
    event_id   integer NOT NULL,
    -- The invocation right after the event, holding only that event, without payload.
    record     bytea NOT NULL,
    PRIMARY KEY (account, seq)
);

-- Each account's last feed position, and the highest one trimmed away.
CREATE TABLE sai_feed_head (
    account    text COLLATE "C" PRIMARY KEY,
    seq        bigint NOT NULL,
    trimmed_to bigint NOT NULL DEFAULT 0
);
"#];

/// The schema version this binary writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Bring the schema to [`SCHEMA_VERSION`]; refuse a newer one. Returns the secrets every
/// replica shares: the page token key and the lease token key.
pub async fn migrate(client: &mut Client) -> Result<Secrets, DatabaseError> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    let result = migrate_locked(client).await;
    // Released even when migrating failed; a failure to release ends with the session.
    let _ = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await;
    result
}

async fn migrate_locked(client: &mut Client) -> Result<Secrets, DatabaseError> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS sai_meta (key text PRIMARY KEY, value bytea NOT NULL)",
        )
        .await?;
    let found: i64 = match client
        .query_opt(
            "SELECT value FROM sai_meta WHERE key = 'schema_version'",
            &[],
        )
        .await?
    {
        Some(row) => {
            let value: Vec<u8> = row.get(0);
            std::str::from_utf8(&value)
                .ok()
                .and_then(|text| text.parse().ok())
                .ok_or(DatabaseError::Schema {
                    found: String::from_utf8_lossy(&value).into_owned(),
                })?
        }
        None => 0,
    };
    if found > SCHEMA_VERSION {
        return Err(DatabaseError::SchemaTooNew {
            found,
            known: SCHEMA_VERSION,
        });
    }
    for (version, migration) in (1..)
        .zip(MIGRATIONS.iter())
        .skip(usize::try_from(found).unwrap_or(0))
    {
        let tx = client.transaction().await?;
        tx.batch_execute(migration).await?;
        tx.execute(
            "INSERT INTO sai_meta (key, value) VALUES ('schema_version', $1)
             ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            &[&version.to_string().into_bytes()],
        )
        .await?;
        tx.commit().await?;
        tracing::info!(version, "database schema migrated");
    }
    Ok(Secrets {
        page_key: secret(client, "page_token_key").await?,
        lease_key: secret(client, "lease_token_key").await?,
    })
}

/// Keys every replica must share.
pub struct Secrets {
    /// Signs page tokens.
    pub page_key: [u8; 32],
    /// Signs lease tokens.
    pub lease_key: [u8; 32],
}

/// The 32-byte secret `name`, drawn by whichever replica asks first.
async fn secret(client: &Client, name: &str) -> Result<[u8; 32], DatabaseError> {
    let drawn: [u8; 32] = rand::random();
    client
        .execute(
            "INSERT INTO sai_meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
            &[&name, &drawn.as_slice()],
        )
        .await?;
    let row = client
        .query_one("SELECT value FROM sai_meta WHERE key = $1", &[&name])
        .await?;
    let value: Vec<u8> = row.get(0);
    value.try_into().map_err(|_| DatabaseError::Schema {
        found: format!("{name} is not 32 bytes"),
    })
}
