//! Ready queues: FIFO per (function, qualifier), popped fairly across the functions a poll
//! names. An invocation that leaves the queue any other way (stopped or expired while queued)
//! is taken out of it, so a queue holds only what is Enqueued. A push wakes only the pollers
//! waiting on its function.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::model::{FunctionKey, InvocationKey};
use crate::store::backend::PollTarget;
use crate::store::Hashing;

/// One queue: keys by the order they were pushed in.
type Queue = BTreeMap<u64, InvocationKey>;

/// The queues and the pollers waiting on them.
#[derive(Debug, Default)]
pub struct ReadyQueues {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Each function's queues, by qualifier.
    by_function: HashMap<FunctionKey, BTreeMap<Arc<str>, Queue>, Hashing>,
    /// Where each queued invocation is: its qualifier and its place in that queue.
    position: HashMap<InvocationKey, (Arc<str>, u64), Hashing>,
    next_seq: u64,
    /// The pollers waiting on each function, by poller.
    waiters: HashMap<FunctionKey, HashMap<u64, Arc<Notify>>, Hashing>,
    next_waiter: u64,
}

impl State {
    /// Drop a function's entry once none of its queues holds anything.
    fn forget_if_empty(&mut self, function: &FunctionKey) {
        if self
            .by_function
            .get(function)
            .is_some_and(|queues| queues.values().all(BTreeMap::is_empty))
        {
            self.by_function.remove(function);
        }
    }
}

impl ReadyQueues {
    /// Queue `key` (invoked under `qualifier`) and wake the pollers of its function. A key
    /// already queued keeps its place.
    pub fn push(&self, qualifier: &Arc<str>, key: InvocationKey) {
        let mut state = self.state.lock();
        if state.position.contains_key(&key) {
            return;
        }
        let seq = state.next_seq;
        state.next_seq += 1;
        state
            .by_function
            .entry(key.function.clone())
            .or_default()
            .entry(qualifier.clone())
            .or_default()
            .insert(seq, key.clone());
        if let Some(waiting) = state.waiters.get(&key.function) {
            // A stored permit: a poller between its look at the queue and its wait still wakes.
            waiting.values().for_each(|poller| poller.notify_one());
        }
        state.position.insert(key, (qualifier.clone(), seq));
    }

    /// Take `key` out of its queue if it is queued.
    pub fn remove(&self, key: &InvocationKey) {
        let mut state = self.state.lock();
        let Some((qualifier, seq)) = state.position.remove(key) else {
            return;
        };
        if let Some(queue) = state
            .by_function
            .get_mut(&key.function)
            .and_then(|queues| queues.get_mut(&qualifier))
        {
            queue.remove(&seq);
        }
        state.forget_if_empty(&key.function);
    }

    /// How many of `function`'s invocations are queued.
    pub fn depth(&self, function: &FunctionKey) -> usize {
        self.state
            .lock()
            .by_function
            .get(function)
            .map_or(0, |queues| queues.values().map(BTreeMap::len).sum())
    }

    /// How many invocations are queued.
    pub fn len(&self) -> usize {
        self.state.lock().position.len()
    }

    /// The `limit` functions with the most queued invocations: each with how many, and the
    /// one queued first.
    pub fn busiest(&self, limit: usize) -> Vec<(FunctionKey, usize, InvocationKey)> {
        let state = self.state.lock();
        let mut queues: Vec<(FunctionKey, usize, InvocationKey)> = state
            .by_function
            .iter()
            .filter_map(|(function, queues)| {
                let depth = queues.values().map(BTreeMap::len).sum();
                let oldest = queues
                    .values()
                    .filter_map(|queue| queue.first_key_value())
                    .min_by_key(|(seq, _)| **seq)
                    .map(|(_, key)| key.clone())?;
                Some((function.clone(), depth, oldest))
            })
            .collect();
        queues.sort_unstable_by_key(|queue| std::cmp::Reverse(queue.1));
        queues.truncate(limit);
        queues
    }

    /// Take up to `max` keys for `targets`, one per target in turn starting at `offset`, so
    /// that one busy function cannot starve the others; FIFO within each queue.
    pub fn pop(&self, targets: &[PollTarget], max: usize, offset: usize) -> Vec<InvocationKey> {
        let mut taken = Vec::new();
        if targets.is_empty() {
            return taken;
        }
        let mut state = self.state.lock();
        loop {
            let mut progressed = false;
            for i in 0..targets.len() {
                if taken.len() == max {
                    return taken;
                }
                let target = &targets[(offset + i) % targets.len()];
                let Some(by_qualifier) = state.by_function.get_mut(&target.function) else {
                    continue;
                };
                let queue = match &target.qualifier {
                    Some(q) => by_qualifier.get_mut(q),
                    None => by_qualifier.values_mut().find(|q| !q.is_empty()),
                };
                if let Some((_, key)) = queue.and_then(BTreeMap::pop_first) {
                    state.position.remove(&key);
                    taken.push(key);
                    progressed = true;
                }
                state.forget_if_empty(&target.function);
            }
            if !progressed {
                return taken;
            }
        }
    }

    /// Register a poller of `targets`: it is woken when any of their functions gets work,
    /// until the returned guard is dropped.
    pub fn wait_on(self: &Arc<Self>, targets: &[PollTarget]) -> Waiter {
        let wake = Arc::new(Notify::new());
        let mut state = self.state.lock();
        let id = state.next_waiter;
        state.next_waiter += 1;
        let mut functions: Vec<FunctionKey> = targets.iter().map(|t| t.function.clone()).collect();
        functions.sort();
        functions.dedup();
        for function in &functions {
            state
                .waiters
                .entry(function.clone())
                .or_default()
                .insert(id, wake.clone());
        }
        Waiter {
            queues: self.clone(),
            id,
            functions,
            wake,
        }
    }

    /// How many functions have pollers waiting on them.
    #[cfg(test)]
    fn waited_functions(&self) -> usize {
        self.state.lock().waiters.len()
    }
}

/// A registered poller; dropping it unregisters it.
pub struct Waiter {
    queues: Arc<ReadyQueues>,
    id: u64,
    functions: Vec<FunctionKey>,
    wake: Arc<Notify>,
}

impl Waiter {
    /// Resolves once one of the poller's functions got work since the last wake-up.
    pub async fn woken(&self) {
        self.wake.notified().await
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        let mut state = self.queues.state.lock();
        for function in &self.functions {
            if let Some(waiting) = state.waiters.get_mut(function) {
                waiting.remove(&self.id);
                if waiting.is_empty() {
                    state.waiters.remove(function);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(function: &FunctionKey) -> PollTarget {
        PollTarget {
            function: function.clone(),
            qualifier: None,
        }
    }

    #[test]
    fn busiest_names_the_deepest_queues_and_what_waited_longest_in_each() {
        let queues = ReadyQueues::default();
        let (latest, v2): (Arc<str>, Arc<str>) = ("LATEST".into(), "v2".into());
        let functions: Vec<FunctionKey> = ["f", "g", "h"]
            .iter()
            .map(|name| FunctionKey::new("a", "s", name))
            .collect();
        queues.push(&v2, functions[1].invocation("g-first"));
        for (depth, function) in [3, 2, 1].into_iter().zip(&functions) {
            for i in 0..depth {
                queues.push(
                    &latest,
                    function.invocation(&format!("{}{i}", function.function)),
                );
            }
        }
        let busiest = queues.busiest(2);
        let seen: Vec<(&str, usize, &str)> = busiest
            .iter()
            .map(|(f, depth, oldest)| (&*f.function, *depth, &*oldest.id))
            .collect();
        // g's first arrival sits in another qualifier's queue; it is still g's oldest.
        assert!(
            seen == [("f", 3, "f0"), ("g", 3, "g-first")]
                || seen == [("g", 3, "g-first"), ("f", 3, "f0")],
            "{seen:?}"
        );
        assert_eq!(queues.busiest(10).len(), 3);
    }

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
        let targets = vec![target(&f), target(&g)];
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
        assert_eq!(queues.len(), 0);
    }

    #[test]
    fn a_removed_invocation_leaves_its_queue_and_nothing_is_kept_for_it() {
        let queues = ReadyQueues::default();
        let f = FunctionKey::new("a", "s", "f");
        let latest: Arc<str> = "LATEST".into();
        for i in 0..3 {
            queues.push(&latest, f.invocation(&format!("f{i}")));
        }
        queues.push(&latest, f.invocation("f1"));
        assert_eq!(queues.len(), 3, "a key already queued keeps its place");
        queues.remove(&f.invocation("f1"));
        queues.remove(&f.invocation("never-queued"));
        let ids: Vec<String> = queues
            .pop(&[target(&f)], 10, 0)
            .iter()
            .map(|k| k.id.to_string())
            .collect();
        assert_eq!(ids, vec!["f0", "f2"]);
        queues.push(&latest, f.invocation("last"));
        queues.remove(&f.invocation("last"));
        let state = queues.state.lock();
        assert!(state.by_function.is_empty() && state.position.is_empty());
    }

    #[tokio::test]
    async fn a_push_wakes_the_pollers_of_its_function_only() {
        let queues = Arc::new(ReadyQueues::default());
        let f = FunctionKey::new("a", "s", "f");
        let g = FunctionKey::new("a", "s", "g");
        let on_f = queues.wait_on(&[target(&f)]);
        let on_g = queues.wait_on(&[target(&g), target(&g)]);
        queues.push(&"LATEST".into(), f.invocation("x"));
        tokio::time::timeout(std::time::Duration::from_secs(10), on_f.woken())
            .await
            .expect("the poller of f is woken");
        let g_woken = futures_util::FutureExt::now_or_never(on_g.woken());
        assert!(g_woken.is_none(), "the poller of g sleeps on");
        drop((on_f, on_g));
        assert_eq!(queues.waited_functions(), 0, "released with the pollers");
    }
}
