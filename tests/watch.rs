//! WatchInvocation and WatchInvocations: replay, live tail, resume without gap or duplicate,
//! many watchers, slow watchers catching up, and shutdown ending streams cleanly.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use sai::pb;
use support::*;
use tokio_stream::StreamExt;
use tonic::{Code, Streaming};

const PATIENCE: Duration = Duration::from_secs(30);

fn watch_request(id: &str, from_event_id: i64) -> pb::WatchInvocationRequest {
    pb::WatchInvocationRequest {
        service_name: SERVICE.into(),
        function_name: FUNCTION.into(),
        qualifier: String::new(),
        invocation_id: id.into(),
        from_event_id,
    }
}

async fn open(client: &mut Client, id: &str, from: i64) -> Streaming<pb::WatchInvocationResponse> {
    client
        .watch_invocation(watch_request(id, from))
        .await
        .expect("watch opens")
        .into_inner()
}

/// The next message, failing the test if none comes in time.
async fn next<T>(stream: &mut Streaming<T>) -> Option<Result<T, tonic::Status>> {
    tokio::time::timeout(PATIENCE, stream.next())
        .await
        .expect("the stream answered in time")
}

/// (event_id, status) of every message until the stream ends.
async fn drain(stream: &mut Streaming<pb::WatchInvocationResponse>) -> Vec<(i64, i32)> {
    let mut seen = Vec::new();
    while let Some(message) = next(stream).await {
        let event = message.expect("no error").event.expect("event");
        seen.push((event.event_id, event.status));
    }
    seen
}

const ENQUEUED: i32 = pb::InvocationStatus::Enqueued as i32;
const STOPPED: i32 = pb::InvocationStatus::Stopped as i32;

#[tokio::test]
async fn replays_history_then_streams_live_and_ends_after_the_terminal_event() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    invoke(&mut client, "default", FUNCTION, "job-1").await;

    let mut stream = open(&mut client, "job-1", 0).await;
    let first = next(&mut stream).await.expect("replayed").expect("ok");
    let event = first.event.expect("event");
    assert_eq!((event.event_id, event.status), (1, ENQUEUED));
    let state = first.invocation.expect("invocation");
    assert_eq!(state.invocation_id, "job-1");
    assert!(state.events.is_empty(), "watch messages omit events");

    stop(&mut client, "default", FUNCTION, "job-1")
        .await
        .expect("stop");
    let live = next(&mut stream).await.expect("live event").expect("ok");
    assert_eq!(live.event.expect("event").status, STOPPED);
    assert_eq!(live.invocation.expect("state after").status, STOPPED);
    assert!(
        next(&mut stream).await.is_none(),
        "ends after the terminal event"
    );
}

#[tokio::test]
async fn a_watcher_resuming_after_event_k_gets_exactly_k_plus_one_onwards() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    invoke(&mut client, "default", FUNCTION, "job-1").await;

    let mut first = open(&mut client, "job-1", 0).await;
    let k = next(&mut first)
        .await
        .expect("event 1")
        .expect("ok")
        .event
        .expect("event")
        .event_id;
    drop(first); // disconnect after event k
    stop(&mut client, "default", FUNCTION, "job-1")
        .await
        .expect("stop");

    let mut resumed = open(&mut client, "job-1", k).await;
    assert_eq!(drain(&mut resumed).await, vec![(2, STOPPED)]);
    let mut from_zero = open(&mut client, "job-1", 0).await;
    assert_eq!(
        drain(&mut from_zero).await,
        vec![(1, ENQUEUED), (2, STOPPED)]
    );
    for past_the_end in [2, 3, 1_000] {
        let mut nothing_left = open(&mut client, "job-1", past_the_end).await;
        assert_eq!(
            drain(&mut nothing_left).await,
            vec![],
            "from {past_the_end}"
        );
    }

    let missing = client
        .watch_invocation(watch_request("no-such-job", 0))
        .await
        .expect_err("unknown invocation");
    assert_eq!(missing.code(), Code::NotFound);
}

#[tokio::test]
async fn resuming_past_the_last_event_of_an_open_invocation_is_out_of_range() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    invoke(&mut client, "default", FUNCTION, "job-1").await;

    // It has one event: waiting after event 5 would skip events 2 to 5 and never end.
    let ahead = client
        .watch_invocation(watch_request("job-1", 5))
        .await
        .expect_err("a resume point it has not reached");
    assert_eq!(ahead.code(), Code::OutOfRange, "{ahead:?}");
    assert!(
        ahead.message().contains("ResumePointAhead")
            && ahead.message().contains("from_event_id 5")
            && ahead.message().contains("last event, 1"),
        "{}",
        ahead.message()
    );

    // Resuming at its last event waits for the next, and ends after the terminal one.
    let mut at_the_end = open(&mut client, "job-1", 1).await;
    stop(&mut client, "default", FUNCTION, "job-1")
        .await
        .expect("stop");
    assert_eq!(drain(&mut at_the_end).await, vec![(2, STOPPED)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_watchers_all_receive_every_event() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    invoke(&mut client, "default", FUNCTION, "popular").await;

    let mut connections = Vec::new();
    for _ in 0..10 {
        connections.push(server.client().await);
    }
    let mut streams = Vec::new();
    for i in 0..1_000 {
        let mut stream = open(&mut connections[i % 10], "popular", 0).await;
        let first = next(&mut stream).await.expect("replayed").expect("ok");
        assert_eq!(first.event.expect("event").event_id, 1);
        streams.push(stream);
    }
    stop(&mut client, "default", FUNCTION, "popular")
        .await
        .expect("stop");
    let watchers: Vec<_> = streams
        .into_iter()
        .map(|mut stream| tokio::spawn(async move { drain(&mut stream).await }))
        .collect();
    for watcher in watchers {
        assert_eq!(watcher.await.expect("watcher"), vec![(2, STOPPED)]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_watch_sees_every_change_of_thousands_of_invocations_in_order() {
    // Fewer on a PostgreSQL cluster, where every call is a networked, synced transaction;
    // still far more changes than the fan-out holds, so the watcher catches up from the table.
    let invocations = if on_postgres() { 3_000 } else { 10_000 };
    const CLIENTS: usize = 8;
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let mut stream = client
        .watch_invocations(pb::WatchInvocationsRequest {
            service_name: SERVICE.into(),
            function_name: FUNCTION.into(),
            from_sequence: 0,
            from_oldest: false,
        })
        .await
        .expect("watch opens")
        .into_inner();

    // Invoke and stop every invocation while the watcher does not read at all, so that it
    // falls far behind the live broadcast and has to catch up from stored history.
    let mut writers = Vec::new();
    for w in 0..CLIENTS {
        let mut c = server.client().await;
        writers.push(tokio::spawn(async move {
            for i in (w..invocations).step_by(CLIENTS) {
                let id = format!("job-{i:05}");
                invoke(&mut c, "default", FUNCTION, &id).await;
                if i % 1_000 == 0 {
                    // Noise from another function: out of the watch's scope.
                    invoke(&mut c, "default", "other-function", &id).await;
                }
                stop(&mut c, "default", FUNCTION, &id).await.expect("stop");
            }
        }));
    }
    for writer in writers {
        writer.await.expect("writer");
    }

    let mut per_invocation: HashMap<String, Vec<(i64, i32)>> = HashMap::new();
    let mut last_sequence = 0u64;
    let mut sequences = Vec::new();
    for _ in 0..invocations * 2 {
        let change = next(&mut stream)
            .await
            .expect("a change")
            .expect("no gap error");
        assert!(change.sequence > last_sequence, "sequence goes up");
        last_sequence = change.sequence;
        sequences.push(change.sequence);
        let invocation = change.invocation.expect("invocation");
        assert_eq!(invocation.function_name, FUNCTION, "in scope only");
        let event = change.event.expect("event");
        per_invocation
            .entry(invocation.invocation_id)
            .or_default()
            .push((event.event_id, event.status));
    }
    assert_eq!(per_invocation.len(), invocations);
    for (id, events) in &per_invocation {
        assert_eq!(events, &vec![(1, ENQUEUED), (2, STOPPED)], "{id}");
    }

    // Resuming from a sequence in the middle replays exactly what followed it.
    let resume_after = sequences[invocations];
    let mut resumed = client
        .watch_invocations(pb::WatchInvocationsRequest {
            service_name: SERVICE.into(),
            function_name: FUNCTION.into(),
            from_sequence: resume_after,
            from_oldest: false,
        })
        .await
        .expect("resume")
        .into_inner();
    for expected in &sequences[invocations + 1..] {
        let change = next(&mut resumed).await.expect("a change").expect("ok");
        assert_eq!(change.sequence, *expected);
    }

    // An account-wide watch covers every function of the account.
    let mut account_wide = client
        .watch_invocations(pb::WatchInvocationsRequest {
            service_name: String::new(),
            function_name: String::new(),
            from_sequence: 0,
            from_oldest: false,
        })
        .await
        .expect("account watch")
        .into_inner();
    invoke(&mut client, "default", "third-function", "late").await;
    let change = next(&mut account_wide).await.expect("change").expect("ok");
    assert_eq!(
        change.invocation.expect("inv").function_name,
        "third-function"
    );
}

#[tokio::test]
async fn shutdown_ends_open_watch_streams_cleanly() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    invoke(&mut client, "default", FUNCTION, "job-1").await;
    let mut invocation_stream = open(&mut client, "job-1", 1).await;
    let mut changes = client
        .watch_invocations(pb::WatchInvocationsRequest {
            service_name: SERVICE.into(),
            function_name: String::new(),
            from_sequence: 0,
            from_oldest: false,
        })
        .await
        .expect("watch opens")
        .into_inner();

    let stopped = tokio::time::timeout(PATIENCE, server.stop()).await;
    assert!(matches!(stopped, Ok(Ok(()))), "serve returned: {stopped:?}");
    let ended = next(&mut invocation_stream).await.expect("a final status");
    assert_eq!(ended.expect_err("unavailable").code(), Code::Unavailable);
    assert!(next(&mut invocation_stream).await.is_none());
    let ended = next(&mut changes).await.expect("a final status");
    assert_eq!(ended.expect_err("unavailable").code(), Code::Unavailable);
}
