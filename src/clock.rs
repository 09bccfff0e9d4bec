//! Wall-clock time in epoch milliseconds, the unit of every timestamp in the API.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (0 if the clock is set before it).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// RFC 3339 UTC with seconds, e.g. `2020-09-10T02:45:02Z`, as FC's config times.
pub fn rfc3339(epoch_ms: i64) -> String {
    let since_epoch = std::time::Duration::from_millis(u64::try_from(epoch_ms).unwrap_or(0));
    humantime::format_rfc3339_seconds(UNIX_EPOCH + since_epoch).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_fc() {
        assert_eq!(rfc3339(1_599_705_902_000), "2020-09-10T02:45:02Z");
        assert!(now_ms() > 1_600_000_000_000);
    }
}
