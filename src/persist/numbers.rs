//! Short numbers for functions. Records are keyed by their function's number rather than its
//! names (account, service, function): keys are tens of bytes shorter, on disk and in every
//! comparison the storage engine makes, and a scan of one function's records seeks on 4
//! bytes. A number is given to a function the first time a write names it; the write that
//! does carries the number's entry in `function_numbers`, and so does every later write
//! naming the function until one of them is durable.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;

use crate::model::FunctionKey;
use crate::store::Hashing;

/// Every function's number, both ways.
#[derive(Debug, Default)]
pub struct FunctionNumbers {
    inner: RwLock<Numbers>,
}

#[derive(Debug, Default)]
struct Numbers {
    by_function: HashMap<FunctionKey, Number, Hashing>,
    by_number: HashMap<u32, FunctionKey, Hashing>,
    next: u32,
}

#[derive(Debug, Clone)]
struct Number {
    number: u32,
    /// Whether a write carrying its entry is durable.
    durable: Arc<AtomicBool>,
}

/// A number a write gives or uses: whether the write must carry its entry.
pub struct Assigned {
    /// The function's number.
    pub number: u32,
    /// Set once a write carrying the entry is durable; `None` once it is.
    pub unwritten: Option<Arc<AtomicBool>>,
}

impl FunctionNumbers {
    /// The number of `function`, if it has one.
    pub fn number(&self, function: &FunctionKey) -> Option<u32> {
        self.inner
            .read()
            .by_function
            .get(function)
            .map(|n| n.number)
    }

    /// The function numbered `number`.
    pub fn function(&self, number: u32) -> Option<FunctionKey> {
        self.inner.read().by_number.get(&number).cloned()
    }

    /// The number of `function`, given it if it has none (only by the one writer of write
    /// sets: under the store's commit lock, or while loading).
    pub fn assign(&self, function: &FunctionKey) -> Assigned {
        let unwritten =
            |n: &Number| (!n.durable.load(Ordering::Acquire)).then(|| n.durable.clone());
        if let Some(known) = self.inner.read().by_function.get(function) {
            return Assigned {
                number: known.number,
                unwritten: unwritten(known),
            };
        }
        let mut numbers = self.inner.write();
        let number = numbers.next;
        numbers.next += 1;
        let entry = Number {
            number,
            durable: Arc::new(AtomicBool::new(false)),
        };
        let assigned = Assigned {
            number,
            unwritten: unwritten(&entry),
        };
        numbers.by_function.insert(function.clone(), entry);
        numbers.by_number.insert(number, function.clone());
        assigned
    }

    /// A number found on disk.
    pub fn restore(&self, function: FunctionKey, number: u32) {
        let mut numbers = self.inner.write();
        numbers.next = numbers.next.max(number.saturating_add(1));
        numbers.by_number.insert(number, function.clone());
        numbers.by_function.insert(
            function,
            Number {
                number,
                durable: Arc::new(AtomicBool::new(true)),
            },
        );
    }
}
