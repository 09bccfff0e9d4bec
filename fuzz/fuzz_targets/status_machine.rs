//! Arbitrary sequences of changes applied to an invocation: `transition` and
//! `Invocation::apply` never panic, event ids stay 1, 2, 3, ... without gaps, a refused change
//! leaves the invocation exactly as it was, and nothing follows a terminal status.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sai::model::{transition, Change, FunctionKey, Invocation, Status, Trigger};

fn change(byte: u8, n: u32) -> Change {
    match byte % 10 {
        0 => Change::Dispatch {
            worker_id: "w".into(),
            attempt: n,
        },
        1 => Change::Start,
        2 => Change::Succeed {
            return_payload: "ok".into(),
            duration_ms: 1,
        },
        3 => Change::Fail {
            error: "e".into(),
            retry_at_ms: Some(5),
            duration_ms: 1,
        },
        4 => Change::Fail {
            error: "e".into(),
            retry_at_ms: None,
            duration_ms: 1,
        },
        5 => Change::Requeue,
        6 => Change::Stop,
        7 => Change::ConfirmStop { by: "worker" },
        8 => Change::Expire,
        _ => Change::Invalidate { reason: "r".into() },
    }
}

fuzz_target!(|data: &[u8]| {
    for pair in data.chunks(2) {
        if let [from, trigger] = pair {
            let from = Status::ALL[usize::from(*from) % Status::ALL.len()];
            let trigger = Trigger::ALL[usize::from(*trigger) % Trigger::ALL.len()];
            if let Ok(to) = transition(from, trigger) {
                assert!(
                    !from.is_terminal(),
                    "{from:?} is terminal but moved to {to:?}"
                );
            }
        }
    }
    let key = FunctionKey::new("a", "s", "f").invocation("i");
    let mut invocation = Invocation::accept(key, "LATEST", "{}".into(), "r", 0);
    for (at, byte) in data.iter().enumerate() {
        let before = invocation.clone();
        let attempt = invocation.attempts + 1;
        let applied = invocation.apply(&change(*byte, attempt), at as i64);
        match applied {
            Ok(_) => assert!(!before.status.is_terminal()),
            Err(_) => assert_eq!(invocation, before),
        }
        for (index, event) in invocation.events.iter().enumerate() {
            assert_eq!(event.event_id, index as u64 + 1);
        }
        assert_eq!(
            invocation.status,
            invocation
                .events
                .last()
                .map(|e| e.status)
                .unwrap_or(Status::Enqueued)
        );
    }
});
