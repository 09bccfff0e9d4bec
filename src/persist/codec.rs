//! How records are laid out as storage keys and values.
//!
//! Format 4 (this build writes it):
//!
//! | partition | key | value |
//! |---|---|---|
//! | `history` | function number (u32 BE), started time (8 bytes, order-preserving), id | the record |
//! | `history_payloads` | as `history` | a payload over [`INLINE_PAYLOAD_MAX`] bytes |
//! | `ids` | function number, id | started time (varint): finds a record by id, for ids that do not carry the started time ([`has_id_entry`]) |
//! | `open` | as `history` | empty: present while the invocation is not terminal |
//! | `function_numbers` | function prefix | the function's number (varint) |
//! | `configs` / `functions` | function prefix, qualifier | config / empty |
//! | `meta` | `sequence`, `batch`, `retention-floor/` + function number | the last watch sequence number; the batch mark (`writer::BATCH_KEY`); where the function's records that retention keeps begin ([`encode_floor`]) |
//!
//! The function prefix is three length-prefixed parts (account, service, function; u16
//! big-endian length each); records carry the function's number instead (see
//! [`super::numbers`]). Records of one function therefore sit together in the order lists
//! page through them, (started time, id), so a page is one range scan; a restart reads only
//! `open`. A record value is postcard: the summary ([`StoredRecord`], times kept as
//! offsets from the started time), then the payload if it is small (else `None`, and the
//! payload is in `history_payloads`, written once), then the events. A list reads the first
//! two and never decodes events; the field order is part of the format (a change to it needs
//! a new `FORMAT_VERSION`). Event ids are not stored: they are 1-based positions.
//!
//! Formats 1 to 3 are still read, to be moved: format 3 keyed records by a record number and
//! put their identity in the value; formats 1 and 2 keyed them by function prefix and id (and
//! format 1 kept every payload apart).

use std::collections::{HashMap, HashSet};
use std::ops::Bound;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::model::{DestinationStatus, Event, FunctionKey, Invocation, InvocationKey, Status};

/// Why a stored key or value could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(String);

impl DecodeError {
    /// An error saying `what` is wrong.
    pub fn new(what: impl Into<String>) -> Self {
        DecodeError(what.into())
    }
}

fn push_part(key: &mut Vec<u8>, part: &str) {
    // Names are validated to far below 64 KiB, so the length always fits.
    let len = u16::try_from(part.len()).unwrap_or(u16::MAX);
    key.extend_from_slice(&len.to_be_bytes());
    key.extend_from_slice(&part.as_bytes()[..usize::from(len)]);
}

/// The key prefix of everything stored under one function.
pub fn function_prefix(function: &FunctionKey) -> Vec<u8> {
    let mut key = Vec::with_capacity(
        6 + function.account.len() + function.service.len() + function.function.len() + 48,
    );
    push_part(&mut key, &function.account);
    push_part(&mut key, &function.service);
    push_part(&mut key, &function.function);
    key
}

/// The key of something named `rest` (an invocation id, a qualifier) under `function`.
pub fn function_key(function: &FunctionKey, rest: &str) -> Vec<u8> {
    let mut key = function_prefix(function);
    key.extend_from_slice(rest.as_bytes());
    key
}

/// Whether the record of invocation `id` started at `started_time_ms` has an entry in the id
/// index. One whose id carries its started time (every id the service generates, see
/// [`crate::model::id`]) has none: the id alone says where the record is.
pub fn has_id_entry(id: &str, started_time_ms: i64) -> bool {
    crate::model::id::started_time(id) != Some(started_time_ms)
}

/// The key that finds an invocation's record by its id, in function `number`.
pub fn id_key(number: u32, id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(4 + id.len());
    key.extend_from_slice(&number.to_be_bytes());
    key.extend_from_slice(id.as_bytes());
    key
}

/// A time as 8 bytes that sort as the times do (negative ones first).
pub fn sortable_time(time_ms: i64) -> [u8; 8] {
    (u64::from_ne_bytes(time_ms.to_ne_bytes()) ^ (1 << 63)).to_be_bytes()
}

fn time_from_sortable(bytes: [u8; 8]) -> i64 {
    i64::from_ne_bytes((u64::from_be_bytes(bytes) ^ (1 << 63)).to_ne_bytes())
}

/// The key of an invocation's record: its function's number, then (started time, id), the
/// order lists page in.
pub fn history_key(number: u32, started_time_ms: i64, id: &str) -> Vec<u8> {
    let mut bytes = history_bound(number, started_time_ms);
    bytes.extend_from_slice(id.as_bytes());
    bytes
}

/// The start of function `number`'s records at `started_time_ms` (before any id).
pub fn history_bound(number: u32, started_time_ms: i64) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(12 + 40);
    bytes.extend_from_slice(&number.to_be_bytes());
    bytes.extend_from_slice(&sortable_time(started_time_ms));
    bytes
}

/// Prefix of the `meta` keys that say where each function's kept records begin.
pub const RETENTION_FLOOR_PREFIX: &[u8] = b"retention-floor/";

/// The `meta` key of where function `number`'s kept records begin.
pub fn retention_floor_key(number: u32) -> Vec<u8> {
    let mut key = RETENTION_FLOOR_PREFIX.to_vec();
    key.extend_from_slice(&number.to_be_bytes());
    key
}

/// The function number of a [`retention_floor_key`], or `None` for another `meta` key.
pub fn retention_floor_number(key: &[u8]) -> Option<u32> {
    let number = key.strip_prefix(RETENTION_FLOOR_PREFIX)?;
    Some(u32::from_be_bytes(number.try_into().ok()?))
}

/// Where a function's kept records begin, as a lower bound on (started time, id): at a record
/// or just past one.
pub fn encode_floor(floor: Bound<(i64, &str)>) -> Vec<u8> {
    encode(&floor)
}

/// A floor [`encode_floor`] wrote.
pub fn decode_floor(bytes: &[u8]) -> Result<Bound<(i64, Arc<str>)>, DecodeError> {
    let floor: Bound<(i64, &str)> = decode(bytes, "retention floor")?;
    Ok(floor.map(|(started, id)| (started, Arc::from(id))))
}

/// The function number, started time and id of a history key.
pub fn history_key_parts(key: &[u8]) -> Result<(u32, i64, &str), DecodeError> {
    let cut_short = || DecodeError(format!("record key {key:?} is cut short"));
    let number = u32::from_be_bytes(
        key.get(..4)
            .ok_or_else(cut_short)?
            .try_into()
            .map_err(|_| cut_short())?,
    );
    let time: [u8; 8] = key
        .get(4..12)
        .ok_or_else(cut_short)?
        .try_into()
        .map_err(|_| cut_short())?;
    let id = std::str::from_utf8(&key[12..])
        .map_err(|_| DecodeError(format!("record key {key:?} is not UTF-8")))?;
    Ok((number, time_from_sortable(time), id))
}

/// The 3 parts of a key's function prefix and its length in bytes.
fn split_function(key: &[u8]) -> Result<(usize, [&str; 3]), DecodeError> {
    let mut at = 0;
    let mut parts = [""; 3];
    for part in &mut parts {
        let len = key
            .get(at..at + 2)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
            .ok_or_else(|| DecodeError(format!("key {key:?} is cut short")))?;
        let bytes = key
            .get(at + 2..at + 2 + len)
            .ok_or_else(|| DecodeError(format!("key {key:?} is cut short")))?;
        *part = std::str::from_utf8(bytes)
            .map_err(|_| DecodeError(format!("key {key:?} is not UTF-8")))?;
        at += 2 + len;
    }
    Ok((at, parts))
}

/// Payloads up to this size are stored with their record.
pub const INLINE_PAYLOAD_MAX: usize = 1024;

/// Whether `payload` is stored with its record rather than apart.
pub fn payload_is_inline(payload: &str) -> bool {
    payload.len() <= INLINE_PAYLOAD_MAX
}

/// A format-4 record's summary: what a list needs, without the key's parts.
#[derive(Debug, Serialize, Deserialize)]
struct StoredRecord<'a> {
    qualifier: &'a str,
    status: Status,
    /// end_time - started_time once terminal; 0 before.
    end_after_start_ms: i64,
    destination_status: DestinationStatus,
    error_message: &'a str,
    attempts: u32,
    already_retried_times: u32,
    request_id: &'a str,
    instance_id: &'a str,
    duration_ms: i64,
    return_payload: &'a str,
    /// retry_at - started_time; None when retry_at is 0.
    retry_at_after_start_ms: Option<i64>,
}

/// A format-4 event: its time as an offset from the started time.
#[derive(Debug, Serialize, Deserialize)]
struct StoredEvent4<'a> {
    status: Status,
    after_start_ms: i64,
    detail: &'a str,
}

/// The stored value of an invocation record (format 4).
pub fn encode_record(invocation: &Invocation) -> Vec<u8> {
    let started = invocation.started_time_ms;
    let stored = StoredRecord {
        qualifier: &invocation.qualifier,
        status: invocation.status,
        end_after_start_ms: if invocation.status.is_terminal() {
            invocation.end_time_ms.wrapping_sub(started)
        } else {
            0
        },
        destination_status: invocation.destination_status,
        error_message: &invocation.error_message,
        attempts: invocation.attempts,
        already_retried_times: invocation.already_retried_times,
        request_id: &invocation.request_id,
        instance_id: &invocation.instance_id,
        duration_ms: invocation.duration_ms,
        return_payload: &invocation.return_payload,
        retry_at_after_start_ms: (invocation.retry_at_ms != 0)
            .then(|| invocation.retry_at_ms.wrapping_sub(started)),
    };
    let inline = payload_is_inline(&invocation.payload).then_some(&*invocation.payload);
    let events: Vec<StoredEvent4<'_>> = invocation
        .events
        .iter()
        .map(|e| StoredEvent4 {
            status: e.status,
            after_start_ms: e.timestamp_ms.wrapping_sub(started),
            detail: &e.detail,
        })
        .collect();
    // Sized up front: growing from empty cost several reallocations per record written.
    let buffer = Vec::with_capacity(encoded_len_bound(invocation, inline.is_some()));
    // Encoding into a Vec cannot fail: every field is a plain value or a string.
    let buffer = postcard::to_extend(&stored, buffer).expect("a record always encodes");
    let buffer = postcard::to_extend(&inline, buffer).expect("a payload always encodes");
    postcard::to_extend(&events, buffer).expect("events always encode")
}

/// At least the encoded size of `invocation`'s record: postcard writes each integer in at
/// most 10 bytes and each string as its bytes after a length of at most 5.
fn encoded_len_bound(invocation: &Invocation, inline_payload: bool) -> usize {
    const NUMBER: usize = 10;
    const STRING: usize = 5;
    let strings = [
        &*invocation.qualifier,
        &invocation.error_message,
        &*invocation.request_id,
        &*invocation.instance_id,
        &*invocation.return_payload,
    ];
    let events: usize = invocation
        .events
        .iter()
        .map(|e| 2 * NUMBER + STRING + e.detail.len())
        .sum();
    let payload = if inline_payload {
        STRING + invocation.payload.len()
    } else {
        0
    };
    12 * NUMBER
        + strings.iter().map(|s| STRING + s.len()).sum::<usize>()
        + NUMBER
        + events
        + payload
}

/// The status and end time of a stored record (what retention needs), without decoding the
/// rest of it.
pub fn record_status(value: &[u8], started_time_ms: i64) -> Result<(Status, i64), DecodeError> {
    let (stored, _): (StoredRecord<'_>, _) = postcard::take_from_bytes(value)
        .map_err(|e| DecodeError(format!("invocation record: {e}")))?;
    let end = if stored.status.is_terminal() {
        started_time_ms.wrapping_add(stored.end_after_start_ms)
    } else {
        0
    };
    Ok((stored.status, end))
}

/// Encode any serde value (configs).
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_allocvec(value).expect("configs and counters always encode")
}

/// Decode any serde value (configs).
pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8], what: &str) -> Result<T, DecodeError> {
    postcard::from_bytes(bytes).map_err(|e| DecodeError(format!("{what}: {e}")))
}

/// What of a record to decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detail {
    /// The summary and the payload, as lists show it.
    Summary,
    /// Everything, events included.
    Full,
}

/// Rebuilds keys and records, sharing the strings that repeat across records (function
/// keys, qualifiers, worker ids), so that many decoded records do not hold as many copies of
/// the same names. What it shares is bounded: past [`Decoder::MAX_SHARED`] strings it starts
/// over.
#[derive(Debug, Default)]
pub struct Decoder {
    functions: HashMap<Box<[u8]>, FunctionKey>,
    strings: HashSet<Arc<str>>,
}

impl Decoder {
    /// Most strings and functions a decoder shares before it forgets them.
    const MAX_SHARED: usize = 10_000;

    fn shared(&mut self, text: &str) -> Arc<str> {
        if let Some(known) = self.strings.get(text) {
            return known.clone();
        }
        if self.strings.len() >= Self::MAX_SHARED {
            self.strings.clear();
        }
        let new: Arc<str> = text.into();
        self.strings.insert(new.clone());
        new
    }

    /// The function of a key and the length of its function prefix.
    pub fn function(&mut self, key: &[u8]) -> Result<(FunctionKey, usize), DecodeError> {
        let (prefix_len, [account, service, function]) = split_function(key)?;
        let prefix = &key[..prefix_len];
        if let Some(known) = self.functions.get(prefix) {
            return Ok((known.clone(), prefix_len));
        }
        if self.functions.len() >= Self::MAX_SHARED {
            self.functions.clear();
        }
        let new = FunctionKey::new(account, service, function);
        self.functions.insert(prefix.into(), new.clone());
        Ok((new, prefix_len))
    }

    /// The function of a key and the rest of the key (id or qualifier).
    pub fn function_and_rest<'k>(
        &mut self,
        key: &'k [u8],
    ) -> Result<(FunctionKey, &'k str), DecodeError> {
        let (function, prefix_len) = self.function(key)?;
        let rest = std::str::from_utf8(&key[prefix_len..])
            .map_err(|_| DecodeError(format!("key {key:?} is not UTF-8")))?;
        Ok((function, rest))
    }

    /// A qualifier, shared.
    pub fn qualifier(&mut self, text: &str) -> Arc<str> {
        self.shared(text)
    }

    /// An invocation from its format-4 key and value, of `function` (the function the key's
    /// number names); `apart` gives its payload when the value does not hold it. With
    /// [`Detail::Summary`] its events are left out.
    pub fn history(
        &mut self,
        function: FunctionKey,
        key: &[u8],
        value: &[u8],
        detail: Detail,
        apart: impl FnOnce() -> Result<Arc<str>, DecodeError>,
    ) -> Result<Invocation, DecodeError> {
        let (_, started, id) = history_key_parts(key)?;
        self.record(function, id, started, value, detail, apart)
    }

    /// An invocation of `function` with `id` and `started` time from its format-4 value
    /// ([`encode_record`]); `apart` gives its payload when the value does not hold it. With
    /// [`Detail::Summary`] its events are left out.
    pub fn record(
        &mut self,
        function: FunctionKey,
        id: &str,
        started: i64,
        value: &[u8],
        detail: Detail,
        apart: impl FnOnce() -> Result<Arc<str>, DecodeError>,
    ) -> Result<Invocation, DecodeError> {
        let (stored, rest): (StoredRecord<'_>, &[u8]) = postcard::take_from_bytes(value)
            .map_err(|e| DecodeError(format!("invocation record: {e}")))?;
        let (inline, rest): (Option<&str>, &[u8]) = postcard::take_from_bytes(rest)
            .map_err(|e| DecodeError(format!("invocation payload: {e}")))?;
        let payload: Arc<str> = match inline {
            Some(inline) => inline.into(),
            None => apart()?,
        };
        let events = match detail {
            Detail::Summary => Vec::new(),
            Detail::Full => {
                let events: Vec<StoredEvent4<'_>> = decode(rest, "invocation events")?;
                events
                    .iter()
                    .zip(1u64..)
                    .map(|(e, event_id)| Event {
                        event_id,
                        status: e.status,
                        timestamp_ms: started.wrapping_add(e.after_start_ms),
                        detail: e.detail.to_string(),
                    })
                    .collect()
            }
        };
        Ok(Invocation {
            key: InvocationKey {
                function,
                id: id.into(),
            },
            qualifier: self.shared(stored.qualifier),
            status: stored.status,
            started_time_ms: started,
            end_time_ms: if stored.status.is_terminal() {
                started.wrapping_add(stored.end_after_start_ms)
            } else {
                0
            },
            destination_status: stored.destination_status,
            error_message: stored.error_message.to_string(),
            payload,
            attempts: stored.attempts,
            already_retried_times: stored.already_retried_times,
            request_id: stored.request_id.into(),
            instance_id: self.shared(stored.instance_id),
            duration_ms: stored.duration_ms,
            return_payload: stored.return_payload.into(),
            retry_at_ms: stored
                .retry_at_after_start_ms
                .map_or(0, |after| started.wrapping_add(after)),
            events,
        })
    }

    /// An invocation from a format-3 record value; `apart` gives its payload when the value
    /// does not hold it.
    pub fn format_3(
        &mut self,
        value: &[u8],
        apart: impl FnOnce() -> Result<Arc<str>, DecodeError>,
    ) -> Result<Invocation, DecodeError> {
        let (identity_len, rest): (u32, &[u8]) = postcard::take_from_bytes(value)
            .map_err(|e| DecodeError(format!("record identity: {e}")))?;
        let identity_len = usize::try_from(identity_len).unwrap_or(usize::MAX);
        let (identity, body) = (rest.get(..identity_len), rest.get(identity_len..));
        let (Some(identity), Some(body)) = (identity, body) else {
            return Err(DecodeError("record identity is cut short".into()));
        };
        self.format_2(identity, body, apart)
    }

    /// An invocation from its identity key and the rest of its value (formats 1 and 2 store
    /// them as key and value); `apart` gives its payload when the value does not hold it.
    pub fn format_2(
        &mut self,
        key: &[u8],
        value: &[u8],
        apart: impl FnOnce() -> Result<Arc<str>, DecodeError>,
    ) -> Result<Invocation, DecodeError> {
        let (function, id) = self.function_and_rest(key)?;
        let (stored, rest): (StoredInvocation<'_>, &[u8]) = postcard::take_from_bytes(value)
            .map_err(|e| DecodeError(format!("invocation record: {e}")))?;
        let payload: Arc<str> = if rest.is_empty() {
            apart()?
        } else {
            let inline: &str = decode(rest, "inline payload")?;
            inline.into()
        };
        let events = stored
            .events
            .iter()
            .zip(1u64..)
            .map(|(e, event_id)| Event {
                event_id,
                status: e.status,
                timestamp_ms: e.timestamp_ms,
                detail: e.detail.to_string(),
            })
            .collect();
        Ok(Invocation {
            key: InvocationKey {
                function,
                id: id.into(),
            },
            qualifier: self.shared(stored.qualifier),
            status: stored.status,
            started_time_ms: stored.started_time_ms,
            end_time_ms: stored.end_time_ms,
            destination_status: stored.destination_status,
            error_message: stored.error_message.to_string(),
            payload,
            attempts: stored.attempts,
            already_retried_times: stored.already_retried_times,
            request_id: stored.request_id.into(),
            instance_id: self.shared(stored.instance_id),
            duration_ms: stored.duration_ms,
            return_payload: stored.return_payload.into(),
            retry_at_ms: stored.retry_at_ms,
            events,
        })
    }
}

/// One invocation as formats 1 to 3 stored it, without its key and payload.
#[derive(Debug, Serialize, Deserialize)]
struct StoredInvocation<'a> {
    qualifier: &'a str,
    status: Status,
    started_time_ms: i64,
    end_time_ms: i64,
    destination_status: DestinationStatus,
    error_message: &'a str,
    attempts: u32,
    already_retried_times: u32,
    request_id: &'a str,
    instance_id: &'a str,
    duration_ms: i64,
    return_payload: &'a str,
    retry_at_ms: i64,
    #[serde(borrow)]
    events: Vec<StoredEvent<'a>>,
}

#[derive(Debug, Serialize, Deserialize)]
struct StoredEvent<'a> {
    status: Status,
    timestamp_ms: i64,
    detail: &'a str,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Change;

    fn lived(function: &FunctionKey, id: &str, payload: Arc<str>) -> Invocation {
        let mut inv = Invocation::accept(function.invocation(id), "LATEST", payload, "req", 5);
        inv.apply(
            &Change::Dispatch {
                worker_id: "w1".into(),
                attempt: 1,
            },
            6,
        )
        .expect("dispatch");
        inv.apply(&Change::Start, 7).expect("start");
        inv.apply(
            &Change::Fail {
                error: "boom".into(),
                retry_at_ms: Some(99),
                duration_ms: 3,
            },
            8,
        )
        .expect("fail");
        inv.apply(&Change::Stop, 9).expect("stop");
        inv
    }

    fn no_payload_apart() -> Result<Arc<str>, DecodeError> {
        Err(DecodeError("not looked up: the payload is inline".into()))
    }

    fn key_of(inv: &Invocation) -> Vec<u8> {
        history_key(7, inv.started_time_ms, &inv.key.id)
    }

    #[test]
    fn an_invocation_round_trips_through_its_format_4_key_and_value() {
        let function = FunctionKey::new("acct", "svc", "fn");
        let inv = lived(&function, "job-1", "{\"x\":1}".into());
        let key = key_of(&inv);
        let value = encode_record(&inv);
        assert!(
            value.len() <= encoded_len_bound(&inv, true),
            "sized up front"
        );
        let mut decoder = Decoder::default();
        let back = decoder
            .history(
                function.clone(),
                &key,
                &value,
                Detail::Full,
                no_payload_apart,
            )
            .expect("decode");
        assert_eq!(back, inv);
        let summary = decoder
            .history(function, &key, &value, Detail::Summary, no_payload_apart)
            .expect("decode");
        assert_eq!(summary, inv.without_events());
        assert_eq!(
            record_status(&value, inv.started_time_ms).expect("status"),
            (Status::Stopped, 9)
        );
    }

    #[test]
    fn history_keys_sort_by_function_then_started_time_then_id() {
        let keys = [
            history_key(1, -5, "b"),
            history_key(1, 0, "a"),
            history_key(1, 0, "b"),
            history_key(1, 1, "a"),
            history_key(1, i64::MAX, "a"),
            history_key(2, i64::MIN, "a"),
            history_key(256, i64::MIN, "a"),
        ];
        assert!(keys.windows(2).all(|pair| pair[0] < pair[1]));
        assert_eq!(history_key_parts(&keys[0]).expect("parts"), (1, -5, "b"));
        assert!(history_bound(1, 0) < keys[1]);
        assert!(history_bound(1, 1) > keys[2]);
        assert_eq!(&id_key(1, "a")[..4], &keys[1][..4]);
    }

    #[test]
    fn the_size_bound_holds_for_large_numbers_and_long_strings() {
        let function = FunctionKey::new("acct", "svc", "fn");
        for payload_len in [0, 100, INLINE_PAYLOAD_MAX, INLINE_PAYLOAD_MAX + 1] {
            let mut inv = Invocation::accept(
                function.invocation("job"),
                "LATEST",
                "p".repeat(payload_len).into(),
                &"r".repeat(300),
                i64::MIN,
            );
            inv.end_time_ms = i64::MAX;
            inv.status = Status::Failed;
            inv.attempts = u32::MAX;
            inv.retry_at_ms = i64::MAX;
            inv.error_message = "e".repeat(70_000);
            let inline = payload_is_inline(&inv.payload);
            assert!(encode_record(&inv).len() <= encoded_len_bound(&inv, inline));
            let back = Decoder::default()
                .history(
                    function.clone(),
                    &key_of(&inv),
                    &encode_record(&inv),
                    Detail::Full,
                    || Ok(inv.payload.clone()),
                )
                .expect("extreme values round trip");
            assert_eq!(back, inv);
        }
    }

    #[test]
    fn a_damaged_key_or_value_is_an_error_not_a_panic() {
        let mut decoder = Decoder::default();
        let function = FunctionKey::new("a", "s", "f");
        assert!(decoder
            .format_2(&[0, 9, b'a'], &[], || Ok("".into()))
            .is_err());
        let key = function_key(&function, "id");
        assert!(decoder
            .format_2(&key, &[0xff; 3], || Ok("".into()))
            .is_err());
        for value in [&[][..], &[0xff; 3], &[40, 0, 1, b'a']] {
            assert!(decoder.format_3(value, || Ok("".into())).is_err());
            assert!(decoder
                .history(
                    function.clone(),
                    &history_key(1, 0, "i"),
                    value,
                    Detail::Full,
                    || Ok("".into())
                )
                .is_err());
            assert!(record_status(value, 0).is_err());
        }
        assert!(history_key_parts(&[0, 0, 1]).is_err());
    }

    #[test]
    fn a_large_payload_is_kept_apart() {
        let function = FunctionKey::new("acct", "svc", "fn");
        let large: Arc<str> = "x".repeat(INLINE_PAYLOAD_MAX + 1).into();
        let inv = lived(&function, "big", large.clone());
        let value = encode_record(&inv);
        assert!(
            value.len() < INLINE_PAYLOAD_MAX,
            "the payload is not in the record"
        );
        let back = Decoder::default()
            .history(function, &key_of(&inv), &value, Detail::Full, || {
                Ok(large.clone())
            })
            .expect("decode");
        assert_eq!(back, inv);
    }
}
