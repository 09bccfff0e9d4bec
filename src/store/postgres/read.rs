//! Reads: one invocation by key, keyset pages of a function's invocations, configs and the
//! functions of an account. Every read goes to the primary, so a replica reads what any other
//! replica acknowledged.

use std::collections::HashMap;
use std::sync::Arc;

use deadpool_postgres::{GenericClient, Transaction};
use tokio_postgres::types::ToSql;

use crate::model::{AsyncInvokeConfig, FunctionKey, Invocation, InvocationKey, StoredConfig};
use crate::persist::{Decoder, Detail};

use super::super::backend::Current;
use super::super::catalog::Catalog;
use super::super::index::{self, ListEntry, Order, SCAN_BUDGET};
use super::super::{page, ConfigKey, ConfigPage, FunctionPage, ListQuery, Page, StoreError};
use super::rows::{self, KeyColumns};
use super::{DatabaseError, Inner};

/// A stored config from its column.
pub fn parse_config(json: &str) -> Result<StoredConfig, StoreError> {
    serde_json::from_str(json)
        .map_err(|err| DatabaseError::Corrupt(format!("a stored config: {err}")).into())
}

/// The column of a stored config.
pub fn config_json(stored: &StoredConfig) -> String {
    serde_json::to_string(stored).expect("a config is plain data and always serializes")
}

/// One entry of a list page: its position, and the invocation when it matches the filters.
struct Entry {
    started_ms: i64,
    id: String,
    invocation: Option<Invocation>,
}

impl ListEntry for Entry {
    fn position(&self) -> (i64, &str) {
        (self.started_ms, &self.id)
    }
}

/// One invocation by key, whole or without its events.
pub async fn find(
    client: &deadpool_postgres::Client,
    key: &InvocationKey,
    detail: Detail,
) -> Result<Option<Invocation>, StoreError> {
    let statement = client
        .prepare_cached(
            "SELECT account, service, function, id, started_ms, record, payload
             FROM sai_invocation
             WHERE account = $1 AND service = $2 AND function = $3 AND id = $4",
        )
        .await?;
    let row = client
        .query_opt(
            &statement,
            &[
                &&*key.function.account,
                &&*key.function.service,
                &&*key.function.function,
                &&*key.id,
            ],
        )
        .await?;
    row.map(|row| rows::decode(&row, 0, &mut Decoder::default(), detail))
        .transpose()
        .map_err(StoreError::from)
}

/// The stored config of `key`, locked for update when `lock` (inside a transaction).
async fn config(
    client: &impl GenericClient,
    key: &ConfigKey,
    lock: bool,
) -> Result<Option<StoredConfig>, StoreError> {
    let f = &key.function;
    let sql = format!(
        "SELECT config FROM sai_function
         WHERE account = $1 AND service = $2 AND function = $3 AND qualifier = $4{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    let statement = client.prepare_cached(&sql).await?;
    let row = client
        .query_opt(
            &statement,
            &[&&*f.account, &&*f.service, &&*f.function, &&*key.qualifier],
        )
        .await?;
    match row {
        Some(row) => row
            .try_get::<_, Option<&str>>(0)?
            .map(parse_config)
            .transpose(),
        None => Ok(None),
    }
}

impl Inner {
    /// `keys` (without events) with their configs and the leases on their current attempts,
    /// in one statement.
    pub async fn current(
        &self,
        keys: &[InvocationKey],
    ) -> Result<Vec<Option<Current>>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "SELECT i.account, i.service, i.function, i.id, i.started_ms, i.record, i.payload,
                        i.lease_attempt, i.lease_started_ms, i.lease_deadline_ms, f.config
                 FROM sai_invocation i
                 LEFT JOIN sai_function f ON f.account = i.account AND f.service = i.service
                      AND f.function = i.function AND f.qualifier = i.qualifier
                 WHERE (i.account, i.service, i.function, i.id) IN
                       (SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]))",
            )
            .await?;
        let columns = KeyColumns::of(keys);
        let found = client
            .query(
                &statement,
                &[
                    &columns.account,
                    &columns.service,
                    &columns.function,
                    &columns.id,
                ],
            )
            .await?;
        let mut decoder = Decoder::default();
        let mut by_key = HashMap::with_capacity(found.len());
        for row in &found {
            let record = rows::decode(row, 0, &mut decoder, Detail::Summary)?;
            let lease = rows::lease(row, 7)?.filter(|lease| lease.attempt == record.attempts);
            let config = match row.try_get::<_, Option<&str>>(10)? {
                Some(json) => parse_config(json)?.config,
                None => AsyncInvokeConfig::default(),
            };
            by_key.insert(
                record.key.clone(),
                Current {
                    record,
                    config,
                    lease,
                },
            );
        }
        Ok(keys.iter().map(|key| by_key.get(key).cloned()).collect())
    }

    /// One invocation, whole or without its events.
    pub async fn read_invocation(
        &self,
        key: &InvocationKey,
        detail: Detail,
    ) -> Result<Option<Invocation>, StoreError> {
        find(&self.client().await?, key, detail).await
    }

    /// One page of a function's invocations: a keyset range scan in page order, examining
    /// at most [`SCAN_BUDGET`] entries, with the same tokens as the embedded store's.
    pub async fn list(&self, query: &ListQuery) -> Result<Page, StoreError> {
        let Some((low, high)) = index::range(&self.pages, query)? else {
            return Ok(index::empty_page());
        };
        let f = &query.function;
        let mut params: Vec<Box<dyn ToSql + Sync + Send>> = vec![
            Box::new(f.account.to_string()),
            Box::new(f.service.to_string()),
            Box::new(f.function.to_string()),
            Box::new(query.status.map(|s| rows::status_name(s).to_string())),
            Box::new(query.qualifier.clone()),
            Box::new(query.id_prefix.clone()),
        ];
        let mut conditions = String::new();
        for (bound, below) in [(&low, false), (&high, true)] {
            let (op, (time, id)) = match (bound, below) {
                (std::ops::Bound::Included(at), false) => (">=", at),
                (std::ops::Bound::Excluded(at), false) => (">", at),
                (std::ops::Bound::Included(at), true) => ("<=", at),
                (std::ops::Bound::Excluded(at), true) => ("<", at),
                (std::ops::Bound::Unbounded, _) => continue,
            };
            params.push(Box::new(*time));
            params.push(Box::new(id.to_string()));
            conditions.push_str(&format!(
                " AND (started_ms, id) {op} (${}, ${})",
                params.len() - 1,
                params.len()
            ));
        }
        let filtered =
            query.status.is_some() || query.qualifier.is_some() || !query.id_prefix.is_empty();
        let fetch = if filtered { SCAN_BUDGET } else { query.limit } + 1;
        params.push(Box::new(i64::try_from(fetch).unwrap_or(i64::MAX)));
        let direction = match query.order {
            Order::Asc => "ASC",
            Order::Desc => "DESC",
        };
        let sql = format!(
            "SELECT started_ms, id,
                    CASE WHEN ($4::text IS NULL OR status = $4)
                          AND ($5::text IS NULL OR qualifier = $5)
                          AND starts_with(id, $6)
                         THEN record END,
                    payload, account, service, function
             FROM sai_invocation
             WHERE account = $1 AND service = $2 AND function = $3{conditions}
             ORDER BY started_ms {direction}, id {direction}
             LIMIT ${}",
            params.len()
        );
        let client = self.client().await?;
        let refs: Vec<&(dyn ToSql + Sync)> =
            params.iter().map(|p| &**p as &(dyn ToSql + Sync)).collect();
        let found = client
            .query(&client.prepare_cached(&sql).await?, &refs)
            .await?;
        let mut decoder = Decoder::default();
        let function = query.function.clone();
        let entries = found.iter().map(|row| {
            let started_ms: i64 = row.try_get(0)?;
            let id: &str = row.try_get(1)?;
            let record: Option<&[u8]> = row.try_get(2)?;
            let payload: Option<&str> = row.try_get(3)?;
            let invocation = record
                .map(|record| {
                    decoder
                        .record(
                            function.clone(),
                            id,
                            started_ms,
                            record,
                            Detail::Summary,
                            || {
                                payload.map(Arc::from).ok_or_else(|| {
                                    crate::persist::DecodeError::new(
                                        "the payload is in neither the record nor its column",
                                    )
                                })
                            },
                        )
                        .map_err(|err| StoreError::from(DatabaseError::Corrupt(err.to_string())))
                })
                .transpose()?;
            Ok(Entry {
                started_ms,
                id: id.to_string(),
                invocation,
            })
        });
        index::page(&self.pages, query, entries, |entry| Ok(entry.invocation))
    }

    /// The stored config of `key`, if any.
    pub async fn stored_config(&self, key: &ConfigKey) -> Result<Option<StoredConfig>, StoreError> {
        config(&self.client().await?, key, false).await
    }

    /// The stored config of `key` inside `tx`, locked for update when `lock`.
    pub async fn config_in(
        &self,
        tx: &Transaction<'_>,
        key: &ConfigKey,
        lock: bool,
    ) -> Result<Option<StoredConfig>, StoreError> {
        config(tx, key, lock).await
    }

    /// The catalog of what `sql` (with `params`) selects: rows of (account, service,
    /// function, qualifier, config).
    async fn catalog(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Catalog, StoreError> {
        let client = self.client().await?;
        let mut catalog = Catalog::default();
        for row in client
            .query(&client.prepare_cached(sql).await?, params)
            .await?
        {
            let key = ConfigKey {
                function: FunctionKey::new(row.try_get(0)?, row.try_get(1)?, row.try_get(2)?),
                qualifier: row.try_get::<_, &str>(3)?.into(),
            };
            match row.try_get::<_, Option<&str>>(4)? {
                Some(json) => catalog.restore(key, parse_config(json)?),
                None => catalog.register(key),
            }
        }
        Ok(catalog)
    }

    /// A page of a function's configs.
    pub async fn list_configs(
        &self,
        function: &FunctionKey,
        limit: usize,
        next_token: &str,
    ) -> Result<ConfigPage, StoreError> {
        let catalog = self
            .catalog(
                "SELECT account, service, function, qualifier, config FROM sai_function
                 WHERE account = $1 AND service = $2 AND function = $3 AND config IS NOT NULL",
                &[
                    &&*function.account,
                    &&*function.service,
                    &&*function.function,
                ],
            )
            .await?;
        catalog.list_configs(&self.pages, function, limit, next_token)
    }

    /// A page of an account's functions.
    pub async fn list_functions(
        &self,
        account: &Arc<str>,
        limit: usize,
        next_token: &str,
    ) -> Result<FunctionPage, StoreError> {
        // Only what one page can examine is read: from the token's function on, in page
        // order, the token's own and one more than the scan budget after it (the catalog's
        // paging stops there).
        let (service, function, qualifier) = if next_token.is_empty() {
            (String::new(), String::new(), String::new())
        } else {
            let scope: [&str; 1] = [account];
            let mut parts = self
                .pages
                .decode("next_token", next_token, page::KIND_FUNCTIONS, &scope, 3)?
                .into_iter();
            let mut part = || parts.next().expect("decode checked there are 3 parts");
            (part(), part(), part())
        };
        let examined = i64::try_from(SCAN_BUDGET + 2).expect("the scan budget is small");
        let catalog = self
            .catalog(
                "SELECT account, service, function, qualifier, config FROM sai_function
                 WHERE account = $1 AND (service, function, qualifier) >= ($2, $3, $4)
                 ORDER BY service, function, qualifier LIMIT $5",
                &[&&**account, &service, &function, &qualifier, &examined],
            )
            .await?;
        catalog.list_functions(&self.pages, account, limit, next_token)
    }
}
