//! Every deadline of the engine in one ordered map, driven by one task. An open invocation
//! has at most one pending deadline at a time, keyed by the invocation: arming it again moves
//! it, and the engine disarms it when the invocation ends, so what is pending is bounded by
//! what is open, not by what was ever invoked. What a deadline means (a lease ran out, a
//! backoff ended, the max event age passed, a stop's grace period ended) follows from the
//! invocation's state when it fires; one that no longer applies is armed again or dropped.

use std::collections::{BTreeMap, HashMap};

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::model::InvocationKey;

/// Most timers handed out by one wake-up: they are applied in one commit, and a burst
/// should not starve other work.
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
    /// In deadline order; the sequence number breaks ties in arming order.
    queue: BTreeMap<(Instant, u64), InvocationKey>,
    /// Where each pending deadline sits in `queue`, to move or remove it.
    at: HashMap<InvocationKey, (Instant, u64), crate::store::Hashing>,
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

    /// Fire the deadline of `timer` at `at` (at once if `at` is past), replacing the one it
    /// had.
    pub fn schedule(&self, at: Instant, timer: InvocationKey) {
        let mut pending = self.pending.lock();
        if pending.at.get(&timer).is_some_and(|(old, _)| *old == at) {
            return;
        }
        let earliest = pending
            .queue
            .keys()
            .next()
            .is_none_or(|(first, _)| at < *first);
        let seq = pending.next_seq;
        pending.next_seq += 1;
        if let Some(old) = pending.at.insert(timer.clone(), (at, seq)) {
            pending.queue.remove(&old);
        }
        pending.queue.insert((at, seq), timer);
        drop(pending);
        if earliest {
            self.wake.notify_one();
        }
    }

    /// Disarm the deadline of `timer` if it has one.
    pub fn cancel(&self, timer: &InvocationKey) {
        let mut pending = self.pending.lock();
        if let Some(slot) = pending.at.remove(timer) {
            pending.queue.remove(&slot);
        }
    }

    /// When the deadline of `timer` is, if it has one.
    #[cfg(test)]
    pub fn deadline(&self, timer: &InvocationKey) -> Option<Instant> {
        self.pending.lock().at.get(timer).map(|(at, _)| *at)
    }

    /// How many timers are pending.
    pub fn len(&self) -> usize {
        self.pending.lock().queue.len()
    }

    /// Wait until some deadlines are due and take them, or `None` once `shutdown` fires.
    pub async fn next_due(&self, shutdown: &CancellationToken) -> Option<Vec<InvocationKey>> {
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
                                pending.at.remove(&timer);
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

    fn due(id: &str) -> InvocationKey {
        FunctionKey::new("a", "s", "f").invocation(id)
    }

    #[tokio::test]
    async fn timers_fire_in_deadline_order_and_an_earlier_one_wakes_the_driver() {
        let manual = ManualClock::starting_at(0);
        let clock = manual.clock();
        let timers = std::sync::Arc::new(Timers::new(clock.clone()));
        let start = clock.now();
        timers.schedule(start + Duration::from_secs(10), due("late"));
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
        timers.schedule(start + Duration::from_secs(3), due("early"));
        tokio::task::yield_now().await;
        assert!(fired.try_recv().is_err(), "nothing is due at 1 s");
        manual.advance(Duration::from_secs(2));
        assert_eq!(
            fired.recv().await,
            Some((due("early"), Duration::from_secs(3)))
        );
        manual.advance(Duration::from_secs(7));
        assert_eq!(
            fired.recv().await,
            Some((due("late"), Duration::from_secs(10)))
        );
        assert_eq!(timers.len(), 0);
        shutdown.cancel();
        driver.await.expect("the driver ends on shutdown");
    }

    #[test]
    fn arming_again_moves_a_timer_and_cancelling_removes_it() {
        let timers = Timers::new(ManualClock::starting_at(0).clock());
        let start = Instant::now();
        let at = |s| start + Duration::from_secs(s);
        timers.schedule(at(10), due("moved"));
        timers.schedule(at(20), due("moved"));
        timers.schedule(at(5), due("moved"));
        timers.schedule(at(30), due("cancelled"));
        assert_eq!(timers.len(), 2, "one entry per key");
        assert_eq!(timers.deadline(&due("moved")), Some(at(5)));
        timers.cancel(&due("cancelled"));
        timers.cancel(&due("never armed"));
        assert_eq!(timers.len(), 1);
        assert_eq!(timers.deadline(&due("cancelled")), None);
    }
}
