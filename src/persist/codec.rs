//! How records are laid out as storage keys and values.
//!
//! Invocation records (format 3) are keyed by their record number (u64, big-endian), so that
//! new records land after the old ones in key order instead of among them. Their value starts
//! with the record's identity (a varint length, then the identity key below), then the record
//! itself. Configs and functions are keyed by the identity key: a function prefix of three
//! length-prefixed parts (account, service, function; u16 big-endian length each), then the
//! qualifier as the rest. Values are postcard-encoded structs below, whose field order is part
//! of the on-disk format (a change to it needs a new `FORMAT_VERSION`). Event ids are not
//! stored: they are 1-based positions.
//!
//! A payload of up to [`INLINE_PAYLOAD_MAX`] bytes follows its record in the same value (one
//! storage entry per write instead of two: the storage engine's cost is mostly per entry); a
//! larger one is kept apart, written once and never rewritten by status changes.
//!
//! Formats 1 and 2 keyed invocation records by their identity key and did not repeat it in
//! the value (format 1 also kept every payload apart); they are still read, to be moved.

use std::collections::{HashMap, HashSet};
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
        6 + function.account.len() + function.service.len() + function.function.len() + 40,
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

/// Splits a key into its function prefix (length in bytes) and the rest.
fn split_key(key: &[u8]) -> Result<(usize, [&str; 3], &str), DecodeError> {
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
    let rest = std::str::from_utf8(&key[at..])
        .map_err(|_| DecodeError(format!("key {key:?} is not UTF-8")))?;
    Ok((at, parts, rest))
}

/// One stored invocation, without its key and payload.
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

/// Payloads up to this size are stored with their record.
pub const INLINE_PAYLOAD_MAX: usize = 1024;

/// Whether `payload` is stored with its record rather than apart.
pub fn payload_is_inline(payload: &str) -> bool {
    payload.len() <= INLINE_PAYLOAD_MAX
}

/// The storage key of an invocation record: its record number.
pub fn record_key(invocation: &Invocation) -> Vec<u8> {
    invocation.record_number.to_be_bytes().to_vec()
}

/// The record number a storage key holds.
pub fn record_number(key: &[u8]) -> Result<u64, DecodeError> {
    let bytes: [u8; 8] = key
        .try_into()
        .map_err(|_| DecodeError(format!("record key {key:?} is not 8 bytes")))?;
    Ok(u64::from_be_bytes(bytes))
}

/// The stored value of an invocation record: its identity, the record, and its payload if
/// that is small.
pub fn encode_record(invocation: &Invocation) -> Vec<u8> {
    let identity_len = identity_len(invocation);
    let inline = payload_is_inline(&invocation.payload);
    // Sized up front: growing from empty cost several reallocations per record written.
    let mut buffer =
        Vec::with_capacity(VARINT_MAX + identity_len + encoded_len_bound(invocation, inline));
    // A u32 varint into a Vec cannot fail.
    buffer = postcard::to_extend(&u32::try_from(identity_len).unwrap_or(u32::MAX), buffer)
        .unwrap_or_default();
    let function = &invocation.key.function;
    push_part(&mut buffer, &function.account);
    push_part(&mut buffer, &function.service);
    push_part(&mut buffer, &function.function);
    buffer.extend_from_slice(invocation.key.id.as_bytes());
    encode_body(invocation, buffer)
}

/// Most bytes of a u32 varint.
const VARINT_MAX: usize = 5;

fn identity_len(invocation: &Invocation) -> usize {
    let function = &invocation.key.function;
    6 + function.account.len()
        + function.service.len()
        + function.function.len()
        + invocation.key.id.len()
}

/// The record and its payload if that is small, after what `buffer` holds.
fn encode_body(invocation: &Invocation, buffer: Vec<u8>) -> Vec<u8> {
    let stored = StoredInvocation {
        qualifier: &invocation.qualifier,
        status: invocation.status,
        started_time_ms: invocation.started_time_ms,
        end_time_ms: invocation.end_time_ms,
        destination_status: invocation.destination_status,
        error_message: &invocation.error_message,
        attempts: invocation.attempts,
        already_retried_times: invocation.already_retried_times,
        request_id: &invocation.request_id,
        instance_id: &invocation.instance_id,
        duration_ms: invocation.duration_ms,
        return_payload: &invocation.return_payload,
        retry_at_ms: invocation.retry_at_ms,
        events: invocation
            .events
            .iter()
            .map(|e| StoredEvent {
                status: e.status,
                timestamp_ms: e.timestamp_ms,
                detail: &e.detail,
            })
            .collect(),
    };
    let inline = payload_is_inline(&invocation.payload);
    // Encoding into a Vec cannot fail: every field is a plain value or a string.
    let value = postcard::to_extend(&stored, buffer).unwrap_or_default();
    if inline {
        postcard::to_extend(&*invocation.payload, value).unwrap_or_default()
    } else {
        value
    }
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

/// Encode any serde value (configs).
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_allocvec(value).unwrap_or_default()
}

/// Decode any serde value (configs).
pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8], what: &str) -> Result<T, DecodeError> {
    postcard::from_bytes(bytes).map_err(|e| DecodeError(format!("{what}: {e}")))
}

/// Rebuilds keys and records, sharing the strings that repeat across records (function
/// keys, qualifiers, worker ids) so that a million recovered records do not hold a million
/// copies of the same names.
#[derive(Debug, Default)]
pub struct Decoder {
    functions: HashMap<Box<[u8]>, FunctionKey>,
    strings: HashSet<Arc<str>>,
}

impl Decoder {
    fn shared(&mut self, text: &str) -> Arc<str> {
        if let Some(known) = self.strings.get(text) {
            return known.clone();
        }
        let new: Arc<str> = text.into();
        self.strings.insert(new.clone());
        new
    }

    /// The function of a key and the rest of the key (id or qualifier).
    pub fn function_and_rest<'k>(
        &mut self,
        key: &'k [u8],
    ) -> Result<(FunctionKey, &'k str), DecodeError> {
        let (prefix_len, [account, service, function], rest) = split_key(key)?;
        let prefix = &key[..prefix_len];
        let function = match self.functions.get(prefix) {
            Some(known) => known.clone(),
            None => {
                let new = FunctionKey::new(account, service, function);
                self.functions.insert(prefix.into(), new.clone());
                new
            }
        };
        Ok((function, rest))
    }

    /// A qualifier, shared.
    pub fn qualifier(&mut self, text: &str) -> Arc<str> {
        self.shared(text)
    }

    /// An invocation from a record value (format 3); `apart` gives its payload when the
    /// value does not hold it. Its record number is the caller's to set, from the key.
    pub fn record(
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
        self.invocation(identity, body, apart)
    }

    /// An invocation from its identity key and the rest of its value (formats 1 and 2 store
    /// them as key and value); `apart` gives its payload when the value does not hold it.
    pub fn invocation(
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
            record_number: 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Change;

    #[test]
    fn an_invocation_round_trips_through_key_value_and_payload() {
        let function = FunctionKey::new("acct", "svc", "fn");
        let mut inv = Invocation::accept(
            function.invocation("job-1"),
            "LATEST",
            "{\"x\":1}".into(),
            "req",
            5,
        );
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
        inv.record_number = 7;
        assert_eq!(record_number(&record_key(&inv)).expect("key"), 7);
        let value = encode_record(&inv);
        assert!(
            value.len() <= VARINT_MAX + identity_len(&inv) + encoded_len_bound(&inv, true),
            "sized up front"
        );
        let mut decoder = Decoder::default();
        let no_payload_apart = || Err(DecodeError("not looked up: the payload is inline".into()));
        let mut back = decoder.record(&value, no_payload_apart).expect("decode");
        back.record_number = 7;
        assert_eq!(back, inv);
        // The second record of the same function shares its key's strings.
        let again = decoder.record(&value, no_payload_apart).expect("decode");
        assert!(Arc::ptr_eq(
            &back.key.function.account,
            &again.key.function.account
        ));

        // Format 2: the identity as the key, the rest as the value.
        inv.record_number = 0;
        let key = function_key(&inv.key.function, &inv.key.id);
        let value = encode_body(&inv, Vec::new());
        let back = decoder
            .invocation(&key, &value, no_payload_apart)
            .expect("decode format 2");
        assert_eq!(back, inv);
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
            inv.attempts = u32::MAX;
            inv.error_message = "e".repeat(70_000);
            let inline = payload_is_inline(&inv.payload);
            assert!(encode_body(&inv, Vec::new()).len() <= encoded_len_bound(&inv, inline));
        }
    }

    #[test]
    fn a_damaged_key_or_value_is_an_error_not_a_panic() {
        let mut decoder = Decoder::default();
        assert!(decoder
            .invocation(&[0, 9, b'a'], &[], || Ok("".into()))
            .is_err());
        let key = function_key(&FunctionKey::new("a", "s", "f"), "id");
        assert!(decoder
            .invocation(&key, &[0xff; 3], || Ok("".into()))
            .is_err());
        for value in [&[][..], &[0xff; 3], &[40, 0, 1, b'a']] {
            assert!(decoder.record(value, || Ok("".into())).is_err());
        }
        assert!(record_number(&[1, 2, 3]).is_err());
    }

    #[test]
    fn a_large_payload_is_kept_apart_and_a_format_1_record_reads_its_payload_from_apart() {
        let function = FunctionKey::new("acct", "svc", "fn");
        let large: Arc<str> = "x".repeat(INLINE_PAYLOAD_MAX + 1).into();
        let inv = Invocation::accept(function.invocation("big"), "LATEST", large.clone(), "r", 5);
        let value = encode_record(&inv);
        assert!(
            value.len() < INLINE_PAYLOAD_MAX,
            "the payload is not in the record"
        );
        let back = Decoder::default()
            .record(&value, || Ok(large.clone()))
            .expect("decode");
        assert_eq!(back, inv);

        // A format-1 record of a small payload: the record alone, its payload apart.
        let small = Invocation::accept(function.invocation("v1"), "LATEST", "{}".into(), "r", 5);
        let key = function_key(&small.key.function, &small.key.id);
        let mut value = encode_body(&small, Vec::new());
        value.truncate(value.len() - 3); // the inline "{}": its length byte and two bytes
        let back = Decoder::default()
            .invocation(&key, &value, || Ok("{}".into()))
            .expect("decode");
        assert_eq!(back, small);
    }
}
