//! Invocation rows: what is read back from `sai_invocation`, and the values written to it.

use std::sync::Arc;

use tokio_postgres::Row;

use crate::model::{FunctionKey, Invocation, InvocationKey, Status};
use crate::persist::{encode_record, payload_is_inline, DecodeError, Decoder, Detail};

use super::super::backend::Lease;
use super::super::ConfigKey;
use super::DatabaseError;

/// The columns [`Loaded::from_row`] reads, in its order.
pub const LOADED_COLUMNS: &str = "record_no, account, service, function, id, started_ms, record, \
     payload, lease_attempt, lease_started_ms, lease_deadline_ms";

/// An invocation row read for a change: whole, with its lease.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The row's internal number.
    pub record_no: i64,
    /// The invocation, with its events and payload.
    pub invocation: Invocation,
    /// The lease a worker holds on it, if any.
    pub lease: Option<Lease>,
}

impl Loaded {
    /// From a row of [`LOADED_COLUMNS`].
    pub fn from_row(row: &Row, decoder: &mut Decoder) -> Result<Self, DatabaseError> {
        Ok(Loaded {
            record_no: row.try_get(0)?,
            invocation: decode(row, 1, decoder, Detail::Full)?,
            lease: lease(row, 8)?,
        })
    }
}

/// The lease in a row whose columns from `at` are lease_attempt, lease_started_ms,
/// lease_deadline_ms.
pub fn lease(row: &Row, at: usize) -> Result<Option<Lease>, DatabaseError> {
    Ok(
        match (
            row.try_get::<_, Option<i32>>(at)?,
            row.try_get::<_, Option<i64>>(at + 1)?,
            row.try_get::<_, Option<i64>>(at + 2)?,
        ) {
            (Some(attempt), Some(started_ms), Some(deadline_ms)) => Some(Lease {
                attempt: u32::try_from(attempt).unwrap_or(0),
                started_ms,
                deadline_ms,
            }),
            _ => None,
        },
    )
}

/// The invocation in a row whose columns from `at` are account, service, function, id,
/// started_ms, record, payload.
pub fn decode(
    row: &Row,
    at: usize,
    decoder: &mut Decoder,
    detail: Detail,
) -> Result<Invocation, DatabaseError> {
    let function = FunctionKey::new(row.try_get(at)?, row.try_get(at + 1)?, row.try_get(at + 2)?);
    let id: &str = row.try_get(at + 3)?;
    let started: i64 = row.try_get(at + 4)?;
    let record: &[u8] = row.try_get(at + 5)?;
    let payload: Option<&str> = row.try_get(at + 6)?;
    decoder
        .record(function, id, started, record, detail, || {
            payload.map(Arc::from).ok_or_else(|| {
                DecodeError::new("the payload is in neither the record nor its column")
            })
        })
        .map_err(|err| DatabaseError::Corrupt(err.to_string()))
}

/// The payload column of `invocation`: its payload when the record does not hold it.
pub fn payload_apart(invocation: &Invocation) -> Option<&str> {
    (!payload_is_inline(&invocation.payload)).then_some(&*invocation.payload)
}

/// The record column of `invocation`.
pub fn record(invocation: &Invocation) -> Vec<u8> {
    encode_record(invocation)
}

/// The record of one change in the feed: the invocation after `event_id`, holding only that
/// event, without its payload.
pub fn change_record(invocation: &Invocation) -> Vec<u8> {
    let mut summary = invocation.without_events();
    summary.payload = "".into();
    summary.events = invocation.events.last().cloned().into_iter().collect();
    encode_record(&summary)
}

/// The config that applies to `invocation`.
pub fn config_key(invocation: &Invocation) -> ConfigKey {
    ConfigKey {
        function: invocation.key.function.clone(),
        qualifier: invocation.qualifier.clone(),
    }
}

/// The key columns of `keys` as arrays (account, service, function, qualifier), for
/// statements that take them with `unnest`.
pub fn config_key_columns<'a>(
    keys: impl IntoIterator<Item = &'a ConfigKey> + Clone,
) -> [Vec<&'a str>; 4] {
    let column = |pick: fn(&'a ConfigKey) -> &'a str| keys.clone().into_iter().map(pick).collect();
    [
        column(|k| &k.function.account),
        column(|k| &k.function.service),
        column(|k| &k.function.function),
        column(|k| &k.qualifier),
    ]
}

/// The status column.
pub fn status_name(status: Status) -> &'static str {
    status.as_str()
}

/// When an invocation in `status` entered the queue, if it is queued.
pub fn ready_ms(invocation: &Invocation) -> Option<i64> {
    (invocation.status == Status::Enqueued).then(|| invocation.status_since_ms())
}

/// Column values of a key, for `unnest`.
#[derive(Debug, Default)]
pub struct KeyColumns<'a> {
    pub account: Vec<&'a str>,
    pub service: Vec<&'a str>,
    pub function: Vec<&'a str>,
    pub id: Vec<&'a str>,
}

impl<'a> KeyColumns<'a> {
    /// The columns of `keys`.
    pub fn of(keys: impl IntoIterator<Item = &'a InvocationKey>) -> Self {
        let mut columns = KeyColumns::default();
        for key in keys {
            columns.account.push(&key.function.account);
            columns.service.push(&key.function.service);
            columns.function.push(&key.function.function);
            columns.id.push(&key.id);
        }
        columns
    }
}
