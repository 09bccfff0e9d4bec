//! Backoff between attempts: exponential from an initial delay, capped, with jitter so that
//! invocations that failed together do not retry together.

use std::time::Duration;

use rand::Rng;

/// Delay before the retry that follows failed attempt `attempt` (1-based): half of
/// `initial * 2^(attempt-1)` (capped at `max`) fixed, the other half random.
pub fn backoff(initial: Duration, max: Duration, attempt: u32) -> Duration {
    let exponent = attempt.saturating_sub(1).min(32);
    let full = initial.saturating_mul(1u32 << exponent.min(31)).min(max);
    let half = full / 2;
    let jitter_ms = u64::try_from(half.as_millis()).unwrap_or(u64::MAX);
    let jitter = if jitter_ms == 0 {
        Duration::ZERO
    } else {
        Duration::from_millis(rand::rng().random_range(0..=jitter_ms))
    };
    half + jitter
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_exponentially_within_jitter_and_caps() {
        let initial = Duration::from_millis(100);
        let max = Duration::from_secs(1);
        for attempt in 1..=10 {
            let full = (initial * 2u32.pow(attempt - 1)).min(max);
            for _ in 0..50 {
                let delay = backoff(initial, max, attempt);
                assert!(delay >= full / 2 && delay <= full, "{attempt}: {delay:?}");
            }
        }
        assert!(backoff(initial, max, u32::MAX) <= max);
        assert_eq!(backoff(Duration::ZERO, max, 3), Duration::ZERO);
    }
}
