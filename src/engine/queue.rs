//! Ready queues: FIFO per (function, qualifier), popped fairly across the functions a poll
//! names. Entries are not removed when an invocation is stopped or expires while queued; the
//! dispatcher skips entries whose invocation is no longer Enqueued.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::model::{FunctionKey, InvocationKey};

/// What one poll asks for: a function, and optionally one qualifier of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollTarget {
    /// The function.
    pub function: FunctionKey,
    /// Only this qualifier (None: any).
    pub qualifier: Option<Arc<str>>,
}

/// One function's queues, by qualifier.
type QualifierQueues = BTreeMap<Arc<str>, VecDeque<InvocationKey>>;

/// The queues and the signal pollers wait on.
#[derive(Debug, Default)]
pub struct ReadyQueues {
    queues: Mutex<HashMap<FunctionKey, QualifierQueues>>,
    /// Woken on every push; pollers re-check their queues.
    ready: Notify,
}

impl ReadyQueues {
    /// Queue `key` (invoked under `qualifier`) and wake the pollers.
    pub fn push(&self, qualifier: &Arc<str>, key: InvocationKey) {
        self.queues
            .lock()
            .entry(key.function.clone())
            .or_default()
            .entry(qualifier.clone())
            .or_default()
            .push_back(key);
        self.ready.notify_waiters();
    }

    /// The signal a waiting poller listens to.
    pub fn ready(&self) -> &Notify {
        &self.ready
    }

    /// Take up to `max` keys for `targets`, one per target in turn starting at `offset`, so
    /// that one busy function cannot starve the others; FIFO within each queue.
    pub fn pop(&self, targets: &[PollTarget], max: usize, offset: usize) -> Vec<InvocationKey> {
        let mut taken = Vec::new();
        if targets.is_empty() {
            return taken;
        }
        let mut queues = self.queues.lock();
        loop {
            let mut progressed = false;
            for i in 0..targets.len() {
                if taken.len() == max {
                    return taken;
                }
                let target = &targets[(offset + i) % targets.len()];
                let Some(by_qualifier) = queues.get_mut(&target.function) else {
                    continue;
                };
                let queue = match &target.qualifier {
                    Some(q) => by_qualifier.get_mut(q),
                    None => by_qualifier.values_mut().find(|q| !q.is_empty()),
                };
                if let Some(key) = queue.and_then(VecDeque::pop_front) {
                    taken.push(key);
                    progressed = true;
                }
                if by_qualifier.values().all(VecDeque::is_empty) {
                    queues.remove(&target.function);
                }
            }
            if !progressed {
                return taken;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_fifo_within_a_function_and_round_robin_across_functions() {
        let queues = ReadyQueues::default();
        let f = FunctionKey::new("a", "s", "f");
        let g = FunctionKey::new("a", "s", "g");
        let latest: Arc<str> = "LATEST".into();
        for i in 0..5 {
            queues.push(&latest, f.invocation(&format!("f{i}")));
        }
        queues.push(&latest, g.invocation("g0"));
        let targets = vec![
            PollTarget {
                function: f.clone(),
                qualifier: None,
            },
            PollTarget {
                function: g.clone(),
                qualifier: None,
            },
        ];
        let ids: Vec<String> = queues
            .pop(&targets, 4, 0)
            .iter()
            .map(|k| k.id.to_string())
            .collect();
        assert_eq!(ids, vec!["f0", "g0", "f1", "f2"]);
        let prod = PollTarget {
            function: f.clone(),
            qualifier: Some("prod".into()),
        };
        assert!(queues.pop(&[prod], 10, 0).is_empty(), "qualifier filter");
        assert_eq!(queues.pop(&targets, 10, 1).len(), 2);
        assert!(queues.pop(&targets, 10, 0).is_empty());
    }
}
