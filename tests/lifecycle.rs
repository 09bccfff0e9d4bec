//! Every lifecycle path end to end through the real WorkerService, asserting the exact status
//! sequence in `events`. The server's clock stands still until a test advances it past a
//! lease, a backoff (10-40 ms), a grace period or a max event age, so nothing here waits for
//! time to pass and a busy machine cannot make a lease run out early.

mod support;

use std::collections::HashMap;

use sai::pb;
use std::time::Duration;

use support::*;
use tonic::Code;

fn retries(n: i64) -> pb::AsyncInvokeConfig {
    pb::AsyncInvokeConfig {
        max_async_retry_attempts: Some(n),
        ..Default::default()
    }
}

fn terminal(i: &pb::StatefulAsyncInvocation) -> bool {
    i.end_time > 0
}

fn status_is(status: pb::InvocationStatus) -> impl Fn(&pb::StatefulAsyncInvocation) -> bool {
    move |i| status_of(i) == status
}

/// Longer than any backoff of `fast_engine`.
const PAST_BACKOFF: Duration = Duration::from_millis(50);
/// Longer than `fast_engine`'s leases and grace periods.
const PAST_LEASE: Duration = Duration::from_millis(301);

#[tokio::test]
async fn success_records_result_worker_and_timing() {
    let server = TestServer::start_with(fast_engine()).await;
    let (mut c, mut w) = (server.client().await, server.worker().await);
    invoke(&mut c, "default", FUNCTION, "job-1").await;
    let leases = poll(&mut w, "default", FUNCTION, 10, 1_000).await;
    assert_eq!(leases.len(), 1);
    let lease = &leases[0];
    assert_eq!(lease.attempt, 1);
    assert!(lease.lease_deadline > 0);
    let leased = lease.invocation.as_ref().expect("invocation");
    assert_eq!(
        leased.invocation_payload, r#"{"id":"job-1"}"#,
        "the worker gets the payload"
    );
    assert_eq!(status_of(leased), pb::InvocationStatus::Running);

    let done = complete(&mut w, "default", &lease.lease_token, success("result"))
        .await
        .expect("complete");
    assert_eq!(status_of(&done), pb::InvocationStatus::Succeeded);
    let got = get(&mut c, "default", FUNCTION, "job-1")
        .await
        .expect("get");
    assert_eq!(
        statuses(&got),
        ["ENQUEUED", "DEQUEUED", "RUNNING", "SUCCEEDED"]
    );
    assert_eq!(got.return_payload, "result");
    assert_eq!(got.instance_id, "test-worker");
    assert!(got.end_time >= got.started_time);
    assert!(got.duration_ms >= 0);
    assert!(!got.request_id.is_empty());
    assert_eq!(got.already_retried_times, 0);
    let detail: serde_json::Value =
        serde_json::from_str(&got.events[1].event_detail).expect("json");
    assert_eq!(detail["workerId"], "test-worker");
    assert_eq!(detail["attempt"], 1);

    // Nothing is left to poll.
    assert!(poll(&mut w, "default", FUNCTION, 10, 0).await.is_empty());
}

#[tokio::test]
async fn failure_then_success_on_retry_and_failures_until_failed() {
    let server = TestServer::start_with(fast_engine()).await;
    let (mut c, mut w) = (server.client().await, server.worker().await);
    configure(&mut c, "default", FUNCTION, retries(2)).await;

    invoke(&mut c, "default", FUNCTION, "flaky").await;
    let first = poll(&mut w, "default", FUNCTION, 1, 1_000).await.remove(0);
    complete(&mut w, "default", &first.lease_token, failure("boom"))
        .await
        .expect("fail");
    assert!(
        poll(&mut w, "default", FUNCTION, 1, 0).await.is_empty(),
        "not before its backoff"
    );
    server.advance(PAST_BACKOFF);
    let second = poll(&mut w, "default", FUNCTION, 1, 10_000).await.remove(0);
    assert_eq!(second.attempt, 2);
    complete(&mut w, "default", &second.lease_token, success("ok"))
        .await
        .expect("succeed");
    let got = get(&mut c, "default", FUNCTION, "flaky")
        .await
        .expect("get");
    assert_eq!(
        statuses(&got),
        [
            "ENQUEUED",
            "DEQUEUED",
            "RUNNING",
            "RETRYING",
            "ENQUEUED",
            "DEQUEUED",
            "RUNNING",
            "SUCCEEDED"
        ]
    );
    assert_eq!(got.already_retried_times, 1);
    assert_eq!(
        got.invocation_error_message, "boom",
        "the last failure is kept"
    );

    invoke(&mut c, "default", FUNCTION, "doomed").await;
    for attempt in 1..=3 {
        let lease = poll(&mut w, "default", FUNCTION, 1, 10_000).await.remove(0);
        assert_eq!(lease.attempt, attempt);
        complete(
            &mut w,
            "default",
            &lease.lease_token,
            failure(&format!("boom {attempt}")),
        )
        .await
        .expect("fail");
        server.advance(PAST_BACKOFF);
    }
    let got = wait_for(&mut c, "default", FUNCTION, "doomed", terminal).await;
    assert_eq!(
        statuses(&got),
        [
            "ENQUEUED", "DEQUEUED", "RUNNING", "RETRYING", "ENQUEUED", "DEQUEUED", "RUNNING",
            "RETRYING", "ENQUEUED", "DEQUEUED", "RUNNING", "FAILED"
        ]
    );
    assert_eq!(got.already_retried_times, 2);
    assert_eq!(got.invocation_error_message, "boom 3");

    // A permanent failure ends it at once, whatever retries are left.
    invoke(&mut c, "default", FUNCTION, "fatal").await;
    let lease = poll(&mut w, "default", FUNCTION, 1, 1_000).await.remove(0);
    complete(
        &mut w,
        "default",
        &lease.lease_token,
        permanent_failure("bad input"),
    )
    .await
    .expect("fail");
    let got = get(&mut c, "default", FUNCTION, "fatal")
        .await
        .expect("get");
    assert_eq!(
        statuses(&got),
        ["ENQUEUED", "DEQUEUED", "RUNNING", "FAILED"]
    );
}

#[tokio::test]
async fn a_lease_that_runs_out_is_a_failed_attempt_and_fences_the_old_worker() {
    let server = TestServer::start_with(fast_engine()).await;
    let (mut c, mut w) = (server.client().await, server.worker().await);
    configure(&mut c, "default", FUNCTION, retries(1)).await;
    invoke(&mut c, "default", FUNCTION, "job-1").await;

    let vanished = poll(&mut w, "default", FUNCTION, 1, 1_000).await.remove(0);
    // The worker vanishes; after the 300 ms lease the attempt fails and is retried.
    server.advance(PAST_LEASE);
    wait_for(
        &mut c,
        "default",
        FUNCTION,
        "job-1",
        status_is(pb::InvocationStatus::Retrying),
    )
    .await;
    server.advance(PAST_BACKOFF);
    let retried = poll(&mut w, "default", FUNCTION, 1, 10_000).await.remove(0);
    assert_eq!(retried.attempt, 2);
    let got = get(&mut c, "default", FUNCTION, "job-1")
        .await
        .expect("get");
    assert_eq!(
        statuses(&got),
        ["ENQUEUED", "DEQUEUED", "RUNNING", "RETRYING", "ENQUEUED", "DEQUEUED", "RUNNING"]
    );
    assert!(got.events[3].event_detail.contains("lease expired"));

    // The newer attempt's outcome stands; the stale token is refused and changes nothing.
    complete(&mut w, "default", &retried.lease_token, success("second"))
        .await
        .expect("complete attempt 2");
    let stale = complete(&mut w, "default", &vanished.lease_token, success("first"))
        .await
        .expect_err("stale token");
    assert_eq!(stale.code(), Code::FailedPrecondition);
    let heartbeat = w
        .heartbeat_invocation(pb::HeartbeatInvocationRequest {
            lease_token: vanished.lease_token.clone(),
        })
        .await
        .expect_err("stale heartbeat");
    assert_eq!(heartbeat.code(), Code::FailedPrecondition);
    let got = get(&mut c, "default", FUNCTION, "job-1")
        .await
        .expect("get");
    assert_eq!(got.return_payload, "second");
    assert_eq!(status_of(&got), pb::InvocationStatus::Succeeded);

    // Completions are idempotent per token: the same outcome again is OK and applied once;
    // another outcome is refused.
    let again = complete(&mut w, "default", &retried.lease_token, success("second"))
        .await
        .expect("repeat");
    assert_eq!(status_of(&again), pb::InvocationStatus::Succeeded);
    let other = complete(&mut w, "default", &retried.lease_token, failure("no"))
        .await
        .expect_err("different outcome");
    assert_eq!(other.code(), Code::FailedPrecondition);
    let got = get(&mut c, "default", FUNCTION, "job-1")
        .await
        .expect("get");
    assert_eq!(got.events.len(), 8, "applied once");

    // Foreign and forged tokens are unknown.
    let foreign = complete(&mut w, "someone-else", &retried.lease_token, success("x"))
        .await
        .expect_err("foreign");
    assert_eq!(foreign.code(), Code::NotFound);
    let forged = complete(
        &mut w,
        "default",
        "lt1.00000000000000000000000000000000",
        success("x"),
    )
    .await
    .expect_err("forged");
    assert_eq!(forged.code(), Code::NotFound);

    // With no retry left, a lease that runs out fails the invocation.
    configure(&mut c, "default", FUNCTION, retries(0)).await;
    invoke(&mut c, "default", FUNCTION, "job-2").await;
    poll(&mut w, "default", FUNCTION, 1, 1_000).await.remove(0);
    server.advance(PAST_LEASE);
    let got = wait_for(&mut c, "default", FUNCTION, "job-2", terminal).await;
    assert_eq!(
        statuses(&got),
        ["ENQUEUED", "DEQUEUED", "RUNNING", "FAILED"]
    );
    assert_eq!(got.invocation_error_message, "lease expired");
}

#[tokio::test]
async fn a_finished_lease_answers_repeats_as_long_as_its_invocation_is_kept() {
    let mut config = fast_engine();
    config.retention = Duration::from_secs(3600);
    // Attempt 2 runs through the whole test.
    config.engine.lease_timeout = Duration::from_secs(7200);
    let server = TestServer::start_with(config).await;
    let (mut c, mut w) = (server.client().await, server.worker().await);
    configure(&mut c, "default", FUNCTION, retries(1)).await;
    for id in ["first", "second"] {
        invoke(&mut c, "default", FUNCTION, id).await;
    }
    let leases = poll(&mut w, "default", FUNCTION, 2, 1_000).await;
    assert_eq!(leases.len(), 2);
    let (first, second) = (&leases[0].lease_token, &leases[1].lease_token);
    complete(&mut w, "default", first, success("done"))
        .await
        .expect("complete");
    complete(&mut w, "default", second, failure("flaky"))
        .await
        .expect("fail");
    server.advance(PAST_BACKOFF);
    let retry = poll(&mut w, "default", FUNCTION, 1, 10_000).await.remove(0);
    assert_eq!(retry.attempt, 2);
    // Long after, and while a newer attempt runs, each repeat is answered as the first was,
    // and nothing is applied twice.
    server.advance(Duration::from_secs(1800));
    let again = complete(&mut w, "default", first, success("done"))
        .await
        .expect("a repeat of a success");
    assert_eq!(status_of(&again), pb::InvocationStatus::Succeeded);
    let again = complete(&mut w, "default", second, failure("flaky"))
        .await
        .expect("a repeat of a failure that was retried");
    assert_eq!(
        status_of(&again),
        pb::InvocationStatus::Running,
        "attempt 2 runs"
    );
    let other = complete(
        &mut w,
        "default",
        first,
        permanent_failure("changed my mind"),
    )
    .await
    .expect_err("another outcome on a used token");
    assert_eq!(other.code(), Code::FailedPrecondition);
    for id in ["first", "second"] {
        let got = get(&mut c, "default", FUNCTION, id).await.expect("get");
        let dequeued = statuses(&got).iter().filter(|s| **s == "DEQUEUED").count();
        assert_eq!(dequeued, if id == "first" { 1 } else { 2 }, "{id}");
    }
    // Once the record is purged, the token no longer names anything.
    complete(&mut w, "default", &retry.lease_token, success("done"))
        .await
        .expect("complete the retry");
    server.advance(Duration::from_secs(3600 + 400));
    let forgotten = eventually("the records are purged", || {
        let (mut w, token) = (w.clone(), first.clone());
        async move {
            complete(&mut w, "default", &token, success("done"))
                .await
                .err()
        }
    })
    .await;
    assert_eq!(forgotten.code(), Code::FailedPrecondition);
    assert!(
        forgotten.message().contains("no longer exists"),
        "{}",
        forgotten.message()
    );
}

#[tokio::test]
async fn heartbeats_keep_a_lease_alive() {
    let server = TestServer::start_with(fast_engine()).await;
    let (mut c, mut w) = (server.client().await, server.worker().await);
    invoke(&mut c, "default", FUNCTION, "long").await;
    let lease = poll(&mut w, "default", FUNCTION, 1, 1_000).await.remove(0);
    let mut deadline = lease.lease_deadline;
    for _ in 0..6 {
        server.advance(Duration::from_millis(150));
        let beat = w
            .heartbeat_invocation(pb::HeartbeatInvocationRequest {
                lease_token: lease.lease_token.clone(),
            })
            .await
            .expect("heartbeat")
            .into_inner();
        assert!(!beat.stop_requested);
        assert_eq!(
            beat.lease_deadline,
            deadline + 150,
            "300 ms from the heartbeat"
        );
        deadline = beat.lease_deadline;
    }
    // 900 ms in, three lease lengths, and still the same attempt.
    complete(&mut w, "default", &lease.lease_token, success("done"))
        .await
        .expect("complete after heartbeats");
}

#[tokio::test]
async fn expires_with_no_worker_and_delivers_the_on_failure_record() {
    let server = TestServer::start_with(fast_engine()).await;
    let (mut c, mut w) = (server.client().await, server.worker().await);
    configure(
        &mut c,
        "default",
        FUNCTION,
        pb::AsyncInvokeConfig {
            max_async_event_age_in_seconds: Some(1),
            destination_config: Some(pb::DestinationConfig {
                on_success: None,
                on_failure: Some(pb::Destination {
                    destination: "acs:fc:::services/demo-service/functions/dead-letters".into(),
                }),
            }),
            ..Default::default()
        },
    )
    .await;
    invoke(&mut c, "default", FUNCTION, "too-late").await;
    server.advance(Duration::from_millis(999));
    let before = get(&mut c, "default", FUNCTION, "too-late")
        .await
        .expect("get");
    assert_eq!(statuses(&before), ["ENQUEUED"], "not yet at its max age");
    server.advance(Duration::from_millis(1));
    let got = wait_for(&mut c, "default", FUNCTION, "too-late", terminal).await;
    assert_eq!(statuses(&got), ["ENQUEUED", "EXPIRED"]);
    assert_eq!(
        got.destination_status,
        pb::DestinationStatus::Succeeded as i32
    );
    assert!(got.events[1].event_detail.contains("destinationStatus"));

    let record = poll(&mut w, "default", "dead-letters", 1, 1_000)
        .await
        .remove(0);
    let payload: serde_json::Value =
        serde_json::from_str(&record.invocation.expect("invocation").invocation_payload)
            .expect("record JSON");
    assert_eq!(payload["requestContext"]["condition"], "Expired");
    assert_eq!(payload["requestContext"]["invocationId"], "too-late");
    assert_eq!(payload["requestPayload"], r#"{"id":"too-late"}"#);
}

#[tokio::test]
async fn stop_while_running_is_honoured_by_the_worker_or_forced_after_grace() {
    let server = TestServer::start_with(fast_engine()).await;
    let (mut c, mut w) = (server.client().await, server.worker().await);

    invoke(&mut c, "default", FUNCTION, "polite").await;
    let lease = poll(&mut w, "default", FUNCTION, 1, 1_000).await.remove(0);
    let stopping = stop(&mut c, "default", FUNCTION, "polite")
        .await
        .expect("stop");
    assert_eq!(status_of(&stopping), pb::InvocationStatus::Stopping);
    let again = stop(&mut c, "default", FUNCTION, "polite")
        .await
        .expect("stop again");
    assert_eq!(status_of(&again), pb::InvocationStatus::Stopping, "a no-op");
    let beat = w
        .heartbeat_invocation(pb::HeartbeatInvocationRequest {
            lease_token: lease.lease_token.clone(),
        })
        .await
        .expect("heartbeat")
        .into_inner();
    assert!(beat.stop_requested);
    complete(
        &mut w,
        "default",
        &lease.lease_token,
        pb::complete_invocation_request::Outcome::Stopped(pb::CompleteStopped {}),
    )
    .await
    .expect("report stopped");
    let got = get(&mut c, "default", FUNCTION, "polite")
        .await
        .expect("get");
    assert_eq!(
        statuses(&got),
        ["ENQUEUED", "DEQUEUED", "RUNNING", "STOPPING", "STOPPED"]
    );
    assert!(got.events[4].event_detail.contains("worker"));

    // A stubborn worker keeps its lease alive but ignores the stop request.
    invoke(&mut c, "default", FUNCTION, "stubborn").await;
    let lease = poll(&mut w, "default", FUNCTION, 1, 1_000).await.remove(0);
    stop(&mut c, "default", FUNCTION, "stubborn")
        .await
        .expect("stop");
    // 270 ms of the 300 ms grace period, the lease kept alive all along.
    for _ in 0..3 {
        server.advance(Duration::from_millis(90));
        let beat = w
            .heartbeat_invocation(pb::HeartbeatInvocationRequest {
                lease_token: lease.lease_token.clone(),
            })
            .await
            .expect("the lease is kept alive")
            .into_inner();
        assert!(beat.stop_requested);
    }
    let held = get(&mut c, "default", FUNCTION, "stubborn")
        .await
        .expect("get");
    assert_eq!(status_of(&held), pb::InvocationStatus::Stopping);
    server.advance(Duration::from_millis(30));
    let got = wait_for(&mut c, "default", FUNCTION, "stubborn", terminal).await;
    assert_eq!(
        statuses(&got),
        ["ENQUEUED", "DEQUEUED", "RUNNING", "STOPPING", "STOPPED"]
    );
    assert!(got.events[4].event_detail.contains("grace period"));
    let late = complete(&mut w, "default", &lease.lease_token, success("too late"))
        .await
        .expect_err("fenced after the grace period");
    assert_eq!(late.code(), Code::FailedPrecondition);
    assert_eq!(
        get(&mut c, "default", FUNCTION, "stubborn")
            .await
            .expect("get")
            .return_payload,
        ""
    );
}

#[tokio::test]
async fn invalid_is_terminal_without_retry() {
    let server = TestServer::start_with(fast_engine()).await;
    let (mut c, mut w) = (server.client().await, server.worker().await);
    invoke(&mut c, "default", FUNCTION, "unrunnable").await;
    let lease = poll(&mut w, "default", FUNCTION, 1, 1_000).await.remove(0);
    complete(
        &mut w,
        "default",
        &lease.lease_token,
        pb::complete_invocation_request::Outcome::Invalid(pb::CompleteInvalid {
            reason: "no handler for demo-function".into(),
        }),
    )
    .await
    .expect("invalid");
    let got = get(&mut c, "default", FUNCTION, "unrunnable")
        .await
        .expect("get");
    assert_eq!(
        statuses(&got),
        ["ENQUEUED", "DEQUEUED", "RUNNING", "INVALID"]
    );
    assert_eq!(got.invocation_error_message, "no handler for demo-function");
    assert!(
        poll(&mut w, "default", FUNCTION, 1, 200).await.is_empty(),
        "no retry"
    );
}

#[tokio::test]
async fn destinations_receive_the_result_record() {
    let server = TestServer::start_with(fast_engine()).await;
    let (mut c, mut w) = (server.client().await, server.worker().await);
    configure(
        &mut c,
        "default",
        FUNCTION,
        pb::AsyncInvokeConfig {
            max_async_retry_attempts: Some(0),
            destination_config: Some(pb::DestinationConfig {
                on_success: Some(pb::Destination {
                    destination:
                        "acs:fc:cn-hangzhou:default:services/demo-service.LATEST/functions/on-ok"
                            .into(),
                }),
                on_failure: Some(pb::Destination {
                    destination: "acs:fc:::services/demo-service/functions/on-fail".into(),
                }),
            }),
            ..Default::default()
        },
    )
    .await;
    invoke(&mut c, "default", FUNCTION, "good").await;
    invoke(&mut c, "default", FUNCTION, "bad").await;
    let leases = poll(&mut w, "default", FUNCTION, 2, 1_000).await;
    let by_id: HashMap<String, String> = leases
        .iter()
        .map(|l| {
            (
                l.invocation.as_ref().expect("inv").invocation_id.clone(),
                l.lease_token.clone(),
            )
        })
        .collect();
    complete(
        &mut w,
        "default",
        &by_id["good"],
        success(r#"{"total":42}"#),
    )
    .await
    .expect("succeed");
    complete(&mut w, "default", &by_id["bad"], failure("card declined"))
        .await
        .expect("fail");

    for (id, sink, condition) in [("good", "on-ok", "Succeeded"), ("bad", "on-fail", "Failed")] {
        let got = get(&mut c, "default", FUNCTION, id).await.expect("get");
        assert_eq!(
            got.destination_status,
            pb::DestinationStatus::Succeeded as i32,
            "{id}"
        );
        let record = poll(&mut w, "default", sink, 1, 1_000).await.remove(0);
        let payload: serde_json::Value =
            serde_json::from_str(&record.invocation.expect("invocation").invocation_payload)
                .expect("record JSON");
        assert_eq!(payload["requestContext"]["condition"], condition);
        assert_eq!(payload["requestContext"]["invocationId"], id);
        assert_eq!(payload["requestContext"]["approximateInvokeCount"], 1);
        assert_eq!(payload["requestPayload"], format!(r#"{{"id":"{id}"}}"#));
        if id == "good" {
            assert_eq!(payload["responsePayload"], r#"{"total":42}"#);
        } else {
            assert_eq!(payload["responseContext"]["functionError"], "card declined");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_invocations_through_eight_workers_succeed_exactly_once() {
    // Fewer on a PostgreSQL cluster, where every call is a networked, synced transaction.
    let invocations = if on_postgres() { 2_000 } else { 10_000 };
    const WORKERS: usize = 8;
    let server = TestServer::start().await;
    let mut c = server.client().await;

    let mut workers = Vec::new();
    for _ in 0..WORKERS {
        let mut w = server.worker().await;
        workers.push(tokio::spawn(async move {
            let mut completed: Vec<String> = Vec::new();
            let mut idle_polls = 0;
            while idle_polls < 3 {
                let leases = poll(&mut w, "default", FUNCTION, 16, 500).await;
                if leases.is_empty() {
                    idle_polls += 1;
                    continue;
                }
                idle_polls = 0;
                for lease in leases {
                    let id = lease.invocation.expect("inv").invocation_id;
                    complete(&mut w, "default", &lease.lease_token, success(&id))
                        .await
                        .expect("complete");
                    completed.push(id);
                }
            }
            completed
        }));
    }
    let mut producers = Vec::new();
    for p in 0..4 {
        let mut c = server.client().await;
        producers.push(tokio::spawn(async move {
            for i in (p..invocations).step_by(4) {
                invoke(&mut c, "default", FUNCTION, &format!("job-{i:05}")).await;
            }
        }));
    }
    for producer in producers {
        producer.await.expect("producer");
    }
    let mut counts: HashMap<String, usize> = HashMap::new();
    for worker in workers {
        for id in worker.await.expect("worker") {
            *counts.entry(id).or_default() += 1;
        }
    }
    assert_eq!(counts.len(), invocations, "every invocation ran");
    assert!(counts.values().all(|&n| n == 1), "none ran twice");
    let mut succeeded = list_request(FUNCTION);
    succeeded.status = pb::InvocationStatus::Succeeded as i32;
    succeeded.limit = 100;
    assert_eq!(
        list_all(&mut c, "default", succeeded).await.len(),
        invocations
    );
}

#[tokio::test]
async fn a_retry_that_would_run_past_the_max_event_age_expires() {
    let mut config = fast_engine();
    config.engine.backoff_initial = Duration::from_secs(4);
    config.engine.backoff_max = Duration::from_secs(4);
    let server = TestServer::start_with(config).await;
    let (mut c, mut w) = (server.client().await, server.worker().await);
    configure(
        &mut c,
        "default",
        FUNCTION,
        pb::AsyncInvokeConfig {
            max_async_event_age_in_seconds: Some(1),
            max_async_retry_attempts: Some(3),
            ..Default::default()
        },
    )
    .await;
    invoke(&mut c, "default", FUNCTION, "slow-retry").await;
    let lease = poll(&mut w, "default", FUNCTION, 1, 1_000).await.remove(0);
    complete(&mut w, "default", &lease.lease_token, failure("flaky"))
        .await
        .expect("fail");
    server.advance(Duration::from_secs(1));
    let got = wait_for(&mut c, "default", FUNCTION, "slow-retry", terminal).await;
    assert_eq!(
        statuses(&got),
        ["ENQUEUED", "DEQUEUED", "RUNNING", "RETRYING", "EXPIRED"]
    );
    assert!(poll(&mut w, "default", FUNCTION, 1, 0).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn complete_invocations_applies_each_entry_as_complete_invocation_would() {
    let server = TestServer::start_with(fast_engine()).await;
    let mut client = server.client().await;
    let mut worker = server.worker().await;
    for id in ["b1", "b2", "b3"] {
        invoke(&mut client, "default", FUNCTION, id).await;
    }
    let leases = poll(&mut worker, "default", FUNCTION, 3, 1_000).await;
    assert_eq!(leases.len(), 3);
    let entry = |lease: &pb::InvocationLease, outcome| pb::CompleteInvocationRequest {
        lease_token: lease.lease_token.clone(),
        outcome: Some(outcome),
    };
    let results = worker
        .complete_invocations(pb::CompleteInvocationsRequest {
            completions: vec![
                entry(&leases[0], success("one")),
                entry(&leases[1], permanent_failure("two")),
                pb::CompleteInvocationRequest {
                    lease_token: String::new(),
                    outcome: Some(success("x")),
                },
                // The same token again with another outcome: refused, the first stands.
                entry(&leases[0], permanent_failure("changed my mind")),
                pb::CompleteInvocationRequest {
                    lease_token: leases[2].lease_token.clone(),
                    outcome: None,
                },
            ],
        })
        .await
        .expect("the batch is answered")
        .into_inner()
        .results;
    let codes: Vec<tonic::Code> = results.iter().map(|r| tonic::Code::from(r.code)).collect();
    assert_eq!(codes[0], tonic::Code::Ok);
    assert_eq!(codes[1], tonic::Code::Ok);
    assert_eq!(codes[2], tonic::Code::InvalidArgument);
    assert!(
        results[2].message.contains("lease_token"),
        "{}",
        results[2].message
    );
    assert_eq!(codes[4], tonic::Code::InvalidArgument);
    assert!(
        results[4].message.contains("outcome"),
        "{}",
        results[4].message
    );
    let first = results[0]
        .invocation
        .as_ref()
        .expect("applied entries carry the invocation");
    assert_eq!(status_of(first), pb::InvocationStatus::Succeeded);
    // Entries of one lease apply in request order: the conflicting repeat is refused.
    assert_eq!(codes[3], tonic::Code::FailedPrecondition);
    let one = get(&mut client, "default", FUNCTION, &first.invocation_id)
        .await
        .expect("get");
    assert_eq!(one.return_payload, "one");
    let two = get(
        &mut client,
        "default",
        FUNCTION,
        &leases[1].invocation.as_ref().expect("inv").invocation_id,
    )
    .await
    .expect("get");
    assert_eq!(status_of(&two), pb::InvocationStatus::Failed);
    // The third lease is untouched by its bad entry and can still be completed.
    complete(
        &mut worker,
        "default",
        &leases[2].lease_token,
        success("three"),
    )
    .await
    .expect("still held");

    // Entries of attempts that already ended, in a later batch: the same outcome is answered
    // as a repeat, another one refused, each decided against the invocation as it is then.
    let again: Vec<tonic::Code> = worker
        .complete_invocations(pb::CompleteInvocationsRequest {
            completions: vec![
                entry(&leases[1], permanent_failure("two")),
                entry(&leases[2], success("not three")),
            ],
        })
        .await
        .expect("the batch is answered")
        .into_inner()
        .results
        .iter()
        .map(|r| tonic::Code::from(r.code))
        .collect();
    assert_eq!(again, [tonic::Code::Ok, tonic::Code::FailedPrecondition]);

    for count in [0, 101] {
        let refused = worker
            .complete_invocations(pb::CompleteInvocationsRequest {
                completions: vec![entry(&leases[2], success("x")); count],
            })
            .await
            .expect_err("out of range");
        assert_eq!(refused.code(), tonic::Code::InvalidArgument);
        assert!(
            refused.message().contains("completions"),
            "{}",
            refused.message()
        );
    }
}
