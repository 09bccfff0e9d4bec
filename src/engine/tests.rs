//! The engine over an in-memory store on a manual clock: what it holds for an invocation is
//! released when the invocation ends, and deadlines that come due together are applied in
//! one commit.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::*;
use crate::clock::ManualClock;
use crate::model::FunctionKey;
use crate::store::WatchHistoryLimit;

struct Fixture {
    engine: Arc<Engine>,
    store: Arc<Store>,
    clock: ManualClock,
    function: FunctionKey,
}

impl Fixture {
    fn new() -> Self {
        Self::with_lease_timeout(Duration::from_secs(30))
    }

    fn with_lease_timeout(lease_timeout: Duration) -> Self {
        let clock = ManualClock::starting_at(1_900_000_000_000);
        let store = Store::new(WatchHistoryLimit::changes(1_000), CancellationToken::new());
        let config = EngineConfig {
            lease_timeout,
            stop_grace: Duration::from_secs(30),
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(1),
            ..EngineConfig::default()
        };
        let engine = Engine::start(
            store.clone(),
            config,
            clock.clock(),
            CancellationToken::new(),
        );
        Fixture {
            engine,
            store,
            clock,
            function: FunctionKey::new("acct", "svc", "fn"),
        }
    }

    async fn invoke(&self, id: &str) {
        self.engine
            .invoke(NewInvocation {
                function: self.function.clone(),
                id: Some(id.to_string()),
                qualifier: "LATEST".into(),
                payload: "{}".into(),
                request_id: format!("req-{id}"),
            })
            .await
            .expect("invoke");
    }

    async fn poll(&self, max: usize) -> Vec<Grant> {
        let target = PollTarget {
            function: self.function.clone(),
            qualifier: None,
        };
        self.engine
            .poll(vec![target], "w".into(), max, Duration::ZERO)
            .await
            .expect("poll")
    }

    async fn configure(&self, config: AsyncInvokeConfig) {
        let key = ConfigKey {
            function: self.function.clone(),
            qualifier: "LATEST".into(),
        };
        self.engine.put_config(key, config).await.expect("config");
    }

    fn status(&self, id: &str) -> Status {
        self.store
            .summary(&self.function.invocation(id))
            .expect("read")
            .expect("stored")
            .status
    }

    /// Wait until the engine's timer task has taken `id` to `status`.
    async fn reaches(&self, id: &str, status: Status) {
        for _ in 0..10_000 {
            if self.status(id) == status {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("{id} is {:?}, not {status:?}", self.status(id));
    }
}

fn failure() -> Outcome {
    Outcome::Failure {
        error_message: "boom".into(),
        permanent: false,
    }
}

#[tokio::test]
async fn a_lease_timeout_past_the_clock_range_ends_at_its_last_millisecond() {
    let f = Fixture::with_lease_timeout(Duration::MAX);
    f.invoke("long").await;
    let leases = f.poll(1).await;
    assert_eq!(leases[0].deadline_ms, i64::MAX);
    let (stop_requested, deadline_ms) = f
        .engine
        .heartbeat("acct", &leases[0].token)
        .await
        .expect("heartbeat");
    assert!(!stop_requested);
    assert_eq!(deadline_ms, i64::MAX);
    assert_eq!(f.status("long"), Status::Running);
}

#[tokio::test]
async fn what_the_engine_holds_for_an_invocation_is_released_when_it_ends() {
    let f = Fixture::new();
    f.configure(AsyncInvokeConfig {
        max_async_retry_attempts: Some(1),
        ..AsyncInvokeConfig::default()
    })
    .await;
    for id in [
        "ok",
        "retried",
        "stopped-queued",
        "stopped-held",
        "lease-lost",
    ] {
        f.invoke(id).await;
    }
    let open = f.engine.working_set();
    assert_eq!(open.pending_timers, 5, "one deadline per open invocation");
    assert_eq!(open.queued, 5);

    f.engine
        .stop(f.function.invocation("stopped-queued"))
        .await
        .expect("stop");
    let leases = f.poll(10).await;
    assert_eq!(leases.len(), 4, "the stopped one left its queue");
    let lease = |id: &str| {
        leases
            .iter()
            .find(|g| &*g.invocation.key.id == id)
            .expect("leased")
            .token
            .clone()
    };
    // Heartbeats move the one deadline rather than adding another.
    for _ in 0..50 {
        f.engine
            .heartbeat("acct", &lease("ok"))
            .await
            .expect("heartbeat");
    }
    assert_eq!(f.engine.working_set().pending_timers, 4);
    let success = Outcome::Success {
        return_payload: "done".into(),
    };
    f.engine
        .complete("acct", &lease("ok"), success)
        .await
        .expect("complete");
    f.engine
        .complete("acct", &lease("retried"), failure())
        .await
        .expect("fail");
    f.engine
        .stop(f.function.invocation("stopped-held"))
        .await
        .expect("stop");

    // The backoff (1 s) ends, the lease (30 s) runs out, the grace period (30 s) ends.
    f.clock.advance(Duration::from_secs(1));
    f.reaches("retried", Status::Enqueued).await;
    let retry = f.poll(1).await.remove(0);
    f.engine
        .complete("acct", &retry.token, failure())
        .await
        .expect("fail for good");
    f.clock.advance(Duration::from_secs(30));
    f.reaches("lease-lost", Status::Retrying).await;
    f.reaches("stopped-held", Status::Stopped).await;
    f.clock.advance(Duration::from_secs(1));
    f.reaches("lease-lost", Status::Enqueued).await;
    f.engine
        .stop(f.function.invocation("lease-lost"))
        .await
        .expect("stop");

    for (id, status) in [
        ("ok", Status::Succeeded),
        ("retried", Status::Failed),
        ("stopped-queued", Status::Stopped),
        ("stopped-held", Status::Stopped),
        ("lease-lost", Status::Stopped),
    ] {
        assert_eq!(f.status(id), status, "{id}");
    }
    assert_eq!(f.engine.working_set(), WorkingSet::default());
    // A repeat of a finished attempt's completion is answered from its record.
    let again = f
        .engine
        .complete(
            "acct",
            &lease("ok"),
            Outcome::Success {
                return_payload: "done".into(),
            },
        )
        .await
        .expect("a repeat of the same outcome");
    assert_eq!(again.status, Status::Succeeded);
    assert_eq!(f.engine.working_set(), WorkingSet::default());
}

#[tokio::test]
async fn deadlines_that_come_due_together_are_applied_in_one_commit() {
    let f = Fixture::new();
    f.configure(AsyncInvokeConfig {
        max_async_event_age_in_seconds: Some(60),
        ..AsyncInvokeConfig::default()
    })
    .await;
    for i in 0..200 {
        f.invoke(&format!("i{i}")).await;
    }
    let before = f.store.commits();
    f.clock.advance(Duration::from_secs(60));
    f.reaches("i199", Status::Expired).await;
    for i in 0..200 {
        assert_eq!(f.status(&format!("i{i}")), Status::Expired);
    }
    assert_eq!(f.store.commits() - before, 1);
    assert_eq!(f.engine.working_set(), WorkingSet::default());
}

#[tokio::test]
async fn a_deadline_moved_by_a_longer_max_age_is_armed_again_not_applied() {
    let f = Fixture::new();
    f.configure(AsyncInvokeConfig {
        max_async_event_age_in_seconds: Some(10),
        ..AsyncInvokeConfig::default()
    })
    .await;
    f.invoke("patient").await;
    f.configure(AsyncInvokeConfig {
        max_async_event_age_in_seconds: Some(100),
        ..AsyncInvokeConfig::default()
    })
    .await;
    f.clock.advance(Duration::from_secs(10));
    for _ in 0..1_000 {
        tokio::task::yield_now().await;
    }
    assert_eq!(f.status("patient"), Status::Enqueued);
    assert_eq!(f.engine.working_set().pending_timers, 1);
    f.clock.advance(Duration::from_secs(90));
    f.reaches("patient", Status::Expired).await;
}
