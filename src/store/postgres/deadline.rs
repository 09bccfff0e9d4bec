//! Deadlines: every open invocation's one deadline is a column, scanned by every replica and
//! taken with `FOR UPDATE SKIP LOCKED`, so each fires once in the cluster while any replica
//! lives; a taken deadline is moved out of the others' way until the engine has acted on it.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::model::InvocationKey;
use crate::persist::Decoder;

use super::super::backend::Due;
use super::super::StoreError;
use super::rows::{self, KeyColumns, Loaded, LOADED_COLUMNS};
use super::write::Writes;
use super::Inner;

/// How long a taken deadline stays with the replica that took it: if that replica dies
/// before acting on it, another takes it after this.
const TAKEN_FOR_MS: i64 = 30_000;
/// Most deadlines one scan takes.
const DUE_BATCH: i64 = 256;
/// How often deadlines are looked for when nothing says one is near.
pub const DUE_SCAN_EVERY_MS: i64 = 250;
const DUE_SCAN_EVERY: Duration = Duration::from_millis(DUE_SCAN_EVERY_MS.unsigned_abs());

impl Inner {
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
}
