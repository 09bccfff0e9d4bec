//! The one source of time for a server: wall-clock milliseconds for what is stored and shown
//! (record and event times, retry and lease deadlines as workers see them, retention), and a
//! monotonic instant for the deadlines the engine waits on. Both come from the same [`Clock`],
//! so that a server built on a [`ManualClock`] sees exactly the time its test sets: a fixture's
//! date, or an hour later without an hour of sleeping.
//!
//! `sai serve` runs on [`Clock::system`]. A long-poll's wait and the transport's keepalives are
//! bounds on a request or a connection, not part of an invocation's lifecycle, and stay on the
//! runtime's own timer.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;
use tokio::time::Instant;

/// Where a server reads the time. Cheap to clone; every clone reads the same source.
#[derive(Clone, Default)]
pub struct Clock {
    source: Source,
}

#[derive(Clone, Default)]
enum Source {
    /// The operating system's clocks.
    #[default]
    System,
    /// Time that moves only when a test moves it.
    Manual(Arc<Manual>),
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.source {
            Source::System => f.write_str("Clock::System"),
            Source::Manual(manual) => write!(f, "Clock::Manual(at {} ms)", manual.now_ms()),
        }
    }
}

impl Clock {
    /// The operating system's wall clock and the runtime's monotonic clock.
    pub fn system() -> Self {
        Clock {
            source: Source::System,
        }
    }

    /// Milliseconds since the Unix epoch (0 if the system clock is set before it).
    pub fn now_ms(&self) -> i64 {
        match &self.source {
            Source::System => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, millis),
            Source::Manual(manual) => manual.now_ms(),
        }
    }

    /// The monotonic now that deadlines are measured against.
    pub fn now(&self) -> Instant {
        match &self.source {
            Source::System => Instant::now(),
            Source::Manual(manual) => manual.now(),
        }
    }

    /// The instant at which this clock's wall time reaches `epoch_ms` (now if it has).
    pub fn instant_at(&self, epoch_ms: i64) -> Instant {
        let wait = u64::try_from(epoch_ms.saturating_sub(self.now_ms())).unwrap_or(0);
        self.now() + Duration::from_millis(wait)
    }

    /// Resolves once this clock reaches `deadline`.
    pub async fn sleep_until(&self, deadline: Instant) {
        match &self.source {
            Source::System => tokio::time::sleep_until(deadline).await,
            Source::Manual(manual) => manual.sleep_until(deadline).await,
        }
    }

    /// Resolves once `duration` has passed on this clock.
    pub async fn sleep(&self, duration: Duration) {
        self.sleep_until(self.now() + duration).await
    }
}

/// A clock that stands still until it is moved: tests build a server on it to put "now" at a
/// fixture's date, or to run an hour of leases, retries and retention in milliseconds.
#[derive(Clone, Debug)]
pub struct ManualClock {
    manual: Arc<Manual>,
}

#[derive(Debug)]
struct Manual {
    /// Wall time when the clock was made.
    start_ms: i64,
    /// Monotonic time when the clock was made; only `moved` is added to it.
    start: Instant,
    /// How far the clock has been moved; sleepers wait for it to change.
    moved: watch::Sender<Duration>,
}

impl ManualClock {
    /// A clock whose wall time reads `epoch_ms` until it is advanced.
    pub fn starting_at(epoch_ms: i64) -> Self {
        ManualClock {
            manual: Arc::new(Manual {
                start_ms: epoch_ms,
                start: Instant::now(),
                moved: watch::Sender::new(Duration::ZERO),
            }),
        }
    }

    /// The [`Clock`] to build a server with; it reads this manual time.
    pub fn clock(&self) -> Clock {
        Clock {
            source: Source::Manual(self.manual.clone()),
        }
    }

    /// Move time forward by `by`: whatever waits on a deadline it reaches wakes up.
    pub fn advance(&self, by: Duration) {
        self.manual.moved.send_modify(|moved| *moved += by);
    }

    /// The wall time it reads, epoch ms.
    pub fn now_ms(&self) -> i64 {
        self.manual.now_ms()
    }
}

impl Manual {
    fn moved(&self) -> Duration {
        *self.moved.borrow()
    }

    fn now_ms(&self) -> i64 {
        self.start_ms.saturating_add(millis(self.moved()))
    }

    fn now(&self) -> Instant {
        self.start + self.moved()
    }

    async fn sleep_until(&self, deadline: Instant) {
        // Subscribed before the check, so that a move between the two is not missed.
        let mut moves = self.moved.subscribe();
        while self.now() < deadline {
            if moves.changed().await.is_err() {
                // Unreachable while `self` holds the sender; never wake early.
                std::future::pending::<()>().await;
            }
        }
    }
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
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
    }

    #[tokio::test]
    async fn a_manual_clock_moves_both_readings_only_when_advanced_and_wakes_sleepers() {
        let manual = ManualClock::starting_at(1_700_000_000_000);
        let clock = manual.clock();
        let (wall, mono) = (clock.now_ms(), clock.now());
        assert_eq!(wall, 1_700_000_000_000);
        assert_eq!(clock.now(), mono, "stands still");

        let sleeper = {
            let clock = clock.clone();
            tokio::spawn(async move { clock.sleep(Duration::from_secs(3600)).await })
        };
        // Let it start its hour before time moves.
        tokio::task::yield_now().await;
        manual.advance(Duration::from_secs(1800));
        tokio::task::yield_now().await;
        assert!(!sleeper.is_finished(), "half way");
        manual.advance(Duration::from_secs(1800));
        tokio::time::timeout(Duration::from_secs(10), sleeper)
            .await
            .expect("woken when its deadline is reached")
            .expect("sleeper");
        assert_eq!(clock.now_ms(), wall + 3_600_000);
        assert_eq!(clock.now() - mono, Duration::from_secs(3600));
        assert_eq!(
            clock.instant_at(wall + 3_600_000 + 5),
            clock.now() + Duration::from_millis(5)
        );
        assert_eq!(clock.instant_at(0), clock.now(), "a past time is now");
    }

    #[test]
    fn the_system_clock_reads_the_operating_system() {
        let before = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("after 1970")
            .as_millis();
        let read = Clock::system().now_ms();
        assert!(i128::from(read) >= i128::try_from(before).expect("fits"));
    }
}
