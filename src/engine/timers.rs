//! Every deadline of the engine in one ordered map, driven by one task: lease expiry, retry
//! backoff, expiry of queued invocations, stop grace periods. A million pending timers cost a
//! map entry each, not a task or a sleep each.
//!
//! Timers are never cancelled. When one fires, the engine checks the invocation's current
//! state (status, attempt, lease deadline) and ignores a timer that no longer applies.

use std::collections::BTreeMap;

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::model::InvocationKey;

/// What to do when a deadline passes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Timer {
    /// The lease with this token may have run out.
    LeaseExpiry(String),
    /// The oldest finished leases may be due to be forgotten.
    ForgetLeases,
    /// A retry's backoff is over: back to the queue.
    Requeue(InvocationKey),
    /// A queued invocation reached its max event age.
    Expire(InvocationKey),
    /// A stop's grace period is over for this attempt.
    StopGrace(InvocationKey, u32),
}

/// Most timers handed out by one wake-up, so that a burst does not starve other work.
const MAX_FIRED_AT_ONCE: usize = 1_024;

/// The pending timers.
#[derive(Debug)]
pub struct Timers {
    pending: Mutex<Pending>,
    wake: Notify,
    clock: Clock,
}

#[derive(Debug, Default)]
struct Pending {
    queue: BTreeMap<(Instant, u64), Timer>,
    next_seq: u64,
}

impl Timers {
    /// No timers yet; deadlines are read on `clock`.
    pub fn new(clock: Clock) -> Self {
        Timers {
            pending: Mutex::default(),
            wake: Notify::new(),
            clock,
        }
    }

    /// Fire `timer` at `at` (at once if `at` is past).
    pub fn schedule(&self, at: Instant, timer: Timer) {
        let mut pending = self.pending.lock();
        let earliest = pending
            .queue
            .keys()
            .next()
            .is_none_or(|(first, _)| at < *first);
        let seq = pending.next_seq;
        pending.next_seq += 1;
        pending.queue.insert((at, seq), timer);
        drop(pending);
        if earliest {
            self.wake.notify_one();
        }
    }

    /// How many timers are pending.
    pub fn len(&self) -> usize {
        self.pending.lock().queue.len()
    }

    /// Wait until some timers are due and take them, or `None` once `shutdown` fires.
    pub async fn next_due(&self, shutdown: &CancellationToken) -> Option<Vec<Timer>> {
        loop {
            let notified = self.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let next_deadline = {
                let mut pending = self.pending.lock();
                let now = self.clock.now();
                let mut due = Vec::new();
                while due.len() < MAX_FIRED_AT_ONCE {
                    match pending.queue.first_key_value() {
                        Some(((at, _), _)) if *at <= now => {
                            if let Some((_, timer)) = pending.queue.pop_first() {
                                due.push(timer);
                            }
                        }
                        _ => break,
                    }
                }
                if !due.is_empty() {
                    return Some(due);
                }
                pending.queue.keys().next().map(|(at, _)| *at)
            };
            let sleep = async {
                match next_deadline {
                    Some(at) => self.clock.sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return None,
                _ = notified => {}
                _ = sleep => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::model::FunctionKey;
    use std::time::Duration;

    #[tokio::test]
    async fn timers_fire_in_deadline_order_and_an_earlier_one_wakes_the_driver() {
        let manual = ManualClock::starting_at(0);
        let clock = manual.clock();
        let timers = std::sync::Arc::new(Timers::new(clock.clone()));
        let key = |id: &str| FunctionKey::new("a", "s", "f").invocation(id);
        let start = clock.now();
        timers.schedule(start + Duration::from_secs(10), Timer::Expire(key("late")));
        let shutdown = CancellationToken::new();
        let (fired_tx, mut fired) = tokio::sync::mpsc::unbounded_channel();
        let driver = {
            let (timers, shutdown, clock) = (timers.clone(), shutdown.clone(), clock.clone());
            tokio::spawn(async move {
                while let Some(due) = timers.next_due(&shutdown).await {
                    for timer in due {
                        let _ = fired_tx.send((timer, clock.now() - start));
                    }
                }
            })
        };
        manual.advance(Duration::from_secs(1));
        timers.schedule(start + Duration::from_secs(3), Timer::Expire(key("early")));
        tokio::task::yield_now().await;
        assert!(fired.try_recv().is_err(), "nothing is due at 1 s");
        manual.advance(Duration::from_secs(2));
        assert_eq!(
            fired.recv().await,
            Some((Timer::Expire(key("early")), Duration::from_secs(3)))
        );
        manual.advance(Duration::from_secs(7));
        assert_eq!(
            fired.recv().await,
            Some((Timer::Expire(key("late")), Duration::from_secs(10)))
        );
        assert_eq!(timers.len(), 0);
        shutdown.cancel();
        driver.await.expect("the driver ends on shutdown");
    }
}
