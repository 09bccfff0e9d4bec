//! Invocation ids the service generates when the caller gives none: UUIDv7s whose time part
//! is the invocation's started time, so that the id alone says where its record sits in the
//! list order (function, started time, id) and a get needs no lookup of the id first.

use uuid::{Builder, Uuid, Version};

/// Largest time a UUIDv7's 48-bit time field holds.
const MAX_V7_MILLIS: i64 = (1 << 48) - 1;

/// The id generated for an invocation started at `started_time_ms`, with its other 74 bits
/// from `random`. A time a UUIDv7 cannot carry (before 1970, or past the year 10889) gives a
/// UUIDv4 of the same bits, whose time is unknown.
pub fn time_ordered(started_time_ms: i64, random: [u8; 16]) -> String {
    match u64::try_from(started_time_ms) {
        Ok(millis) if started_time_ms <= MAX_V7_MILLIS => {
            let rest: &[u8; 10] = random[..10]
                .try_into()
                .expect("ten of sixteen bytes always fit ten");
            Builder::from_unix_timestamp_millis(millis, rest)
                .into_uuid()
                .to_string()
        }
        _ => Builder::from_random_bytes(random).into_uuid().to_string(),
    }
}

/// The started time a generated id carries: `Some` for a UUIDv7 in the form
/// [`time_ordered`] writes (lower-case, hyphenated). A caller may choose an id of that form
/// too, so a record found by this time must still be the one with this id; one not found
/// there may still be stored under its real started time.
pub fn started_time(id: &str) -> Option<i64> {
    if id.len() != 36 || id.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    let uuid = Uuid::try_parse(id).ok()?;
    if uuid.get_version() != Some(Version::SortRand) {
        return None;
    }
    let bytes = uuid.as_bytes();
    let mut millis = [0u8; 8];
    millis[2..].copy_from_slice(&bytes[..6]);
    Some(i64::from_be_bytes(millis))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_id_carries_its_started_time() {
        for time in [0, 1, 1_764_000_000_123, MAX_V7_MILLIS] {
            let id = time_ordered(time, [7; 16]);
            assert_eq!(id.len(), 36);
            assert_eq!(started_time(&id), Some(time), "{id}");
        }
    }

    #[test]
    fn ids_differ_by_their_random_bits_and_sort_by_time() {
        let (a, b) = (time_ordered(5, [1; 16]), time_ordered(5, [2; 16]));
        assert_ne!(a, b);
        assert!(time_ordered(5, [9; 16]) < time_ordered(6, [0; 16]));
    }

    #[test]
    fn times_a_v7_cannot_hold_give_ids_without_a_time() {
        for time in [-1, i64::MIN, MAX_V7_MILLIS + 1, i64::MAX] {
            let id = time_ordered(time, [3; 16]);
            assert!(Uuid::try_parse(&id).is_ok(), "{id}");
            assert_eq!(started_time(&id), None, "{id}");
        }
    }

    #[test]
    fn other_ids_carry_no_time() {
        let v4 = Builder::from_random_bytes([4; 16]).into_uuid().to_string();
        let upper = time_ordered(5, [0xab; 16]).to_uppercase();
        let simple = Uuid::try_parse(&time_ordered(5, [1; 16]))
            .expect("a generated id parses")
            .simple()
            .to_string();
        for id in [v4.as_str(), &upper, &simple, "job-1", "", "0"] {
            assert_eq!(started_time(id), None, "{id}");
        }
    }
}
