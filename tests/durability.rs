//! Durability with a data directory, against real servers in this process: what was
//! acknowledged comes back after a restart, unfinished work is picked up again, the
//! directory is locked and its format checked, a torn journal tail is dropped while other
//! corruption is refused, and retention purges old terminal records.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use sai::pb;
use sai::server::{self, ServerConfig};
use support::*;
use tokio_stream::StreamExt;

const ACCOUNT: &str = "default";

/// Everything a client can read about one function, to compare across a restart.
async fn snapshot(client: &mut Client, function: &str) -> Vec<pb::StatefulAsyncInvocation> {
    let mut request = list_request(function);
    request.include_payload = true;
    let mut all = Vec::new();
    for listed in list_all(client, ACCOUNT, request).await {
        all.push(
            get(client, ACCOUNT, function, &listed.invocation_id)
                .await
                .expect("listed invocation exists"),
        );
    }
    all
}

async fn functions(client: &mut Client) -> Vec<pb::AsyncConfigMeta> {
    client
        .list_stateful_async_invocation_functions(pb::ListStatefulAsyncInvocationFunctionsRequest {
            limit: 100,
            next_token: String::new(),
        })
        .await
        .expect("functions")
        .into_inner()
        .data
}

async fn config(client: &mut Client, function: &str) -> pb::AsyncInvokeConfig {
    client
        .get_function_async_invoke_config(pb::GetFunctionAsyncInvokeConfigRequest {
            service_name: SERVICE.into(),
            function_name: function.into(),
            qualifier: String::new(),
        })
        .await
        .expect("config")
        .into_inner()
}

async fn function_watch(client: &mut Client) -> tonic::Streaming<pb::WatchInvocationsResponse> {
    client
        .watch_invocations(pb::WatchInvocationsRequest {
            service_name: SERVICE.into(),
            function_name: String::new(),
            from_sequence: 0,
            from_oldest: false,
        })
        .await
        .expect("watch")
        .into_inner()
}

async fn next_sequence(stream: &mut tonic::Streaming<pb::WatchInvocationsResponse>) -> u64 {
    tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("a change in time")
        .expect("stream open")
        .expect("change")
        .sequence
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_acknowledged_comes_back_after_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start_with(on_disk(dir.path())).await;
    let mut client = server.client().await;
    let mut worker = server.worker().await;
    configure(
        &mut client,
        ACCOUNT,
        FUNCTION,
        pb::AsyncInvokeConfig {
            max_async_retry_attempts: Some(0),
            ..Default::default()
        },
    )
    .await;
    let mut watch = function_watch(&mut client).await;
    let mut last_sequence = 0;
    for i in 0..30 {
        invoke(&mut client, ACCOUNT, FUNCTION, &format!("job-{i:02}")).await;
        last_sequence = next_sequence(&mut watch).await;
    }
    invoke(&mut client, ACCOUNT, "other-function", "elsewhere").await;
    // Run some to each end: success, final failure, stop.
    let leases = poll(&mut worker, ACCOUNT, FUNCTION, 3, 1_000).await;
    assert_eq!(leases.len(), 3);
    complete(
        &mut worker,
        ACCOUNT,
        &leases[0].lease_token,
        success("done"),
    )
    .await
    .expect("success");
    complete(
        &mut worker,
        ACCOUNT,
        &leases[1].lease_token,
        permanent_failure("bad"),
    )
    .await
    .expect("failure");
    stop(&mut client, ACCOUNT, FUNCTION, "job-29")
        .await
        .expect("stop");
    let before = snapshot(&mut client, FUNCTION).await;
    let other_before = snapshot(&mut client, "other-function").await;
    let functions_before = functions(&mut client).await;
    let config_before = config(&mut client, FUNCTION).await;
    while let Ok(Some(Ok(change))) =
        tokio::time::timeout(Duration::from_millis(200), watch.next()).await
    {
        last_sequence = change.sequence;
    }
    drop(watch);
    server.stop().await.expect("clean stop");

    let server = TestServer::start_with(on_disk(dir.path())).await;
    let mut client = server.client().await;
    let after = snapshot(&mut client, FUNCTION).await;
    // The third lease's attempt was running: after the restart it counts as failed
    // (no retries configured), so only that record differs, by its new Failed event.
    assert_eq!(before.len(), 30);
    assert_eq!(after.len(), 30);
    for (b, a) in before.iter().zip(&after) {
        if b.invocation_id == leases[2].invocation.as_ref().expect("inv").invocation_id {
            assert_eq!(a.events[..b.events.len()], b.events[..]);
            assert_eq!(statuses(a).last(), Some(&"FAILED"));
            assert!(
                a.invocation_error_message.contains("restarted"),
                "{}",
                a.invocation_error_message
            );
        } else {
            assert_eq!(a, b);
        }
    }
    assert_eq!(snapshot(&mut client, "other-function").await, other_before);
    assert_eq!(functions(&mut client).await, functions_before);
    assert_eq!(config(&mut client, FUNCTION).await, config_before);

    // Watch sequence numbers continue after the restart instead of starting over.
    let mut watch = function_watch(&mut client).await;
    invoke(&mut client, ACCOUNT, FUNCTION, "after-restart").await;
    let next = next_sequence(&mut watch).await;
    assert!(next > last_sequence, "{next} must follow {last_sequence}");
    // A taken id is still taken.
    let duplicate = client
        .invoke_function(pb::InvokeFunctionRequest {
            service_name: SERVICE.into(),
            function_name: FUNCTION.into(),
            invocation_id: "job-00".into(),
            ..Default::default()
        })
        .await
        .expect_err("id taken before the restart");
    assert_eq!(duplicate.code(), tonic::Code::AlreadyExists);
    server.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_attempt_at_restart_fails_and_is_retried_and_its_old_lease_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start_with(on_disk(dir.path())).await;
    let mut client = server.client().await;
    let mut worker = server.worker().await;
    invoke(&mut client, ACCOUNT, FUNCTION, "interrupted").await;
    let lease = poll(&mut worker, ACCOUNT, FUNCTION, 1, 1_000)
        .await
        .remove(0);
    let clock = server.clock.clone();
    server.stop().await.expect("clean stop");

    let server = TestServer::start_on(on_disk(dir.path()), &clock).await;
    let mut client = server.client().await;
    let mut worker = server.worker().await;
    let refused = complete(&mut worker, ACCOUNT, &lease.lease_token, success("late"))
        .await
        .expect_err("the lease died with the old process");
    assert_eq!(refused.code(), tonic::Code::NotFound);
    wait_for(&mut client, ACCOUNT, FUNCTION, "interrupted", |i| {
        status_of(i) == pb::InvocationStatus::Retrying
    })
    .await;
    server.advance(Duration::from_millis(50));
    let again = poll(&mut worker, ACCOUNT, FUNCTION, 1, 10_000).await;
    assert_eq!(again.len(), 1, "the retry is queued again");
    assert_eq!(again[0].attempt, 2);
    complete(&mut worker, ACCOUNT, &again[0].lease_token, success("ok"))
        .await
        .expect("complete");
    let done = get(&mut client, ACCOUNT, FUNCTION, "interrupted")
        .await
        .expect("get");
    assert_eq!(
        statuses(&done),
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
    server.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_backoff_and_stop_grace_are_rearmed_from_stored_deadlines() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = on_disk(dir.path());
    config.engine.backoff_initial = Duration::from_secs(2);
    config.engine.backoff_max = Duration::from_secs(2);
    config.engine.stop_grace = Duration::from_secs(2);
    // Longer than the test: the stopped attempt ends by its grace period, not its lease.
    config.engine.lease_timeout = Duration::from_secs(60);
    let server = TestServer::start_with(config.clone()).await;
    let mut client = server.client().await;
    let mut worker = server.worker().await;
    invoke(&mut client, ACCOUNT, FUNCTION, "retrying").await;
    invoke(&mut client, ACCOUNT, FUNCTION, "stopping").await;
    let leases = poll(&mut worker, ACCOUNT, FUNCTION, 2, 1_000).await;
    assert_eq!(leases.len(), 2);
    complete(
        &mut worker,
        ACCOUNT,
        &leases[0].lease_token,
        failure("flaky"),
    )
    .await
    .expect("fail");
    let stopping = stop(&mut client, ACCOUNT, FUNCTION, "stopping")
        .await
        .expect("stop");
    assert_eq!(status_of(&stopping), pb::InvocationStatus::Stopping);
    // The backoff ends 1-2 s after the failure, the grace period 2 s after the stop: neither
    // has come by the restart.
    server.advance(Duration::from_millis(999));
    let clock = server.clock.clone();
    server.stop().await.expect("clean stop");

    let server = TestServer::start_on(config, &clock).await;
    let mut client = server.client().await;
    let mut worker = server.worker().await;
    assert_eq!(
        status_of(
            &get(&mut client, ACCOUNT, FUNCTION, "retrying")
                .await
                .expect("get")
        ),
        pb::InvocationStatus::Retrying
    );
    assert!(poll(&mut worker, ACCOUNT, FUNCTION, 1, 0).await.is_empty());
    // 2 s after the failure and the stop, both deadlines have come: they were re-armed at
    // their stored times, not a whole backoff or grace period after the restart.
    server.advance(Duration::from_millis(1_001));
    let retried = poll(&mut worker, ACCOUNT, FUNCTION, 1, 10_000).await;
    assert_eq!(retried.len(), 1);
    assert_eq!(
        retried[0].invocation.as_ref().expect("inv").invocation_id,
        "retrying"
    );
    assert_eq!(retried[0].attempt, 2);
    // The stop's grace period ends it Stopped, without any worker.
    let stopped = wait_for(&mut client, ACCOUNT, FUNCTION, "stopping", |i| {
        status_of(i) == pb::InvocationStatus::Stopped
    })
    .await;
    let detail = &stopped.events.last().expect("event").event_detail;
    assert!(detail.contains("grace period"), "{detail}");
    server.stop().await.expect("clean stop");
}

async fn serve_once(mut config: ServerConfig) -> Result<(), server::ServerError> {
    config.clock = sai::clock::ManualClock::starting_at(TEST_EPOCH_MS).clock();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    tokio::time::timeout(
        Duration::from_secs(10),
        server::serve(listener, config, std::future::ready(())),
    )
    .await
    .expect("serve returns")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_server_on_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = TestServer::start_with(on_disk(dir.path())).await;
    let mut client = first.client().await;
    invoke(&mut client, ACCOUNT, FUNCTION, "held").await;
    let refused = serve_once(on_disk(dir.path()))
        .await
        .expect_err("the directory is locked");
    assert!(refused.to_string().contains("in use"), "{refused}");
    first.stop().await.expect("clean stop");
    serve_once(on_disk(dir.path()))
        .await
        .expect("free once the first stopped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_format_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("FORMAT"), "sai-data-format 7\n").expect("write");
    let refused = serve_once(on_disk(dir.path()))
        .await
        .expect_err("newer format");
    assert!(refused.to_string().contains("format 7"), "{refused}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("FORMAT")).expect("read"),
        "sai-data-format 7\n"
    );
}

/// Copy the directory tree at `from` into `to`.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read fixture") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// When the format-1 fixture was written: the time of its last event (2026-11-22).
const FORMAT_1_WRITTEN_MS: i64 = 1_795_335_866_582;
/// When the format-2 fixture was written: the time of its last event (2026-11-22).
const FORMAT_2_WRITTEN_MS: i64 = 1_795_356_236_818;
/// When the format-3 fixture was written: the time of its last event (2026-12-01).
const FORMAT_3_WRITTEN_MS: i64 = 1_796_097_640_161;
const DAY: Duration = Duration::from_secs(24 * 3600);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_format_1_directory_is_moved_to_the_current_format_and_nothing_is_lost() {
    // Written by the format-1 build (every payload kept apart from its record).
    older_format_is_moved("format-1", FORMAT_1_WRITTEN_MS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_format_2_directory_is_moved_to_the_current_format_and_nothing_is_lost() {
    // Written by the format-2 build (records keyed by function and id).
    older_format_is_moved("format-2", FORMAT_2_WRITTEN_MS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_format_3_directory_is_moved_to_the_current_format_and_nothing_is_lost() {
    // Written by the format-3 build (records keyed by record number, every invocation
    // loaded into memory on start).
    older_format_is_moved("format-3", FORMAT_3_WRITTEN_MS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn older_formats_opened_days_later_expire_their_queue_and_purge_past_retention() {
    for (name, written_ms) in [
        ("format-1", FORMAT_1_WRITTEN_MS),
        ("format-2", FORMAT_2_WRITTEN_MS),
        ("format-3", FORMAT_3_WRITTEN_MS),
    ] {
        // Past the default max event age (1 day), within the default retention (7 days).
        older_format_opened_later(name, written_ms, 2).await;
        // Past both.
        older_format_opened_later(name, written_ms, 8).await;
    }
}

/// A copy of the fixture `name` in a new temporary directory.
fn fixture(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_tree(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name),
        dir.path(),
    );
    dir
}

/// What each fixture holds: two small payloads, one of them stopped, and one of 3,011 bytes.
fn fixture_records() -> [(&'static str, pb::InvocationStatus, String); 3] {
    use pb::InvocationStatus as Status;
    let large = format!("{{\"big\":\"{}\"}}", "y".repeat(3000));
    [
        ("small-1", Status::Enqueued, "{\"n\":1}".to_string()),
        ("small-2", Status::Stopped, "{\"n\":2}".to_string()),
        ("large-1", Status::Enqueued, large),
    ]
}

fn check_record(found: &pb::StatefulAsyncInvocation, status: pb::InvocationStatus, payload: &str) {
    assert_eq!(status_of(found), status, "{}", found.invocation_id);
    assert_eq!(found.invocation_payload, payload, "{}", found.invocation_id);
}

/// Open a copy of the fixture `name` on the day it was written, and check that its
/// invocations are served, move to the current layout, take changes, and come back after a
/// restart with new invocations beside them.
async fn older_format_is_moved(name: &str, written_ms: i64) {
    use pb::InvocationStatus as Status;
    let dir = fixture(name);
    let expected = fixture_records();
    let clock = sai::clock::ManualClock::starting_at(written_ms + 1_000);

    let server = TestServer::start_on(on_disk(dir.path()), &clock).await;
    let mut client = server.client().await;
    for (id, status, payload) in &expected {
        let found = get(&mut client, ACCOUNT, FUNCTION, id).await.expect("get");
        check_record(&found, *status, payload);
    }
    assert_eq!(
        std::fs::read_to_string(dir.path().join("FORMAT")).expect("read"),
        format!("sai-data-format {}\n", sai::internals::FORMAT_VERSION)
    );
    // A moved record takes changes; a new one is stored beside the moved ones.
    invoke(&mut client, ACCOUNT, FUNCTION, "new-1").await;
    stop(&mut client, ACCOUNT, FUNCTION, "small-1")
        .await
        .expect("stop a moved record");
    stop(&mut client, ACCOUNT, FUNCTION, "large-1")
        .await
        .expect("stop a moved record with its payload apart");
    server.stop().await.expect("clean stop");

    // Everything was moved on the first open: nothing is left in the old layout. A start
    // loads what is open (new-1); the three that ended stay on disk.
    let persist = sai::internals::Persist::open(dir.path(), sai::server::Durability::Sync)
        .expect("open the directory");
    let summary = persist.load(|_| {}).expect("load");
    assert_eq!((summary.invocations, summary.migrated), (1, 0));
    drop(persist);

    let server = TestServer::start_on(on_disk(dir.path()), &clock).await;
    let mut client = server.client().await;
    for (id, status, payload) in &expected {
        let status = if *id == "small-2" {
            *status
        } else {
            Status::Stopped
        };
        let found = get(&mut client, ACCOUNT, FUNCTION, id).await.expect("get");
        check_record(&found, status, payload);
    }
    let new = get(&mut client, ACCOUNT, FUNCTION, "new-1")
        .await
        .expect("get");
    check_record(&new, Status::Enqueued, "{\"id\":\"new-1\"}");
    server.stop().await.expect("clean stop");
}

/// Open a copy of the fixture `name` `days` after it was written, with the default max event
/// age (1 day) and retention (7 days): its queued invocations expire as soon as it is open,
/// its stopped one is purged if it ended more than 7 days before, and nothing else changes.
async fn older_format_opened_later(name: &str, written_ms: i64, days: u32) {
    use pb::InvocationStatus as Status;
    let dir = fixture(name);
    let opened_ms = written_ms + i64::try_from((DAY * days).as_millis()).expect("fits");
    let clock = sai::clock::ManualClock::starting_at(opened_ms);
    let config = ServerConfig {
        storage: sai::server::Storage::disk(dir.path(), sai::server::Durability::Sync),
        ..ServerConfig::default()
    };
    let server = TestServer::start_on(config, &clock).await;
    let mut client = server.client().await;
    let context = format!("{name} opened {days} days later");
    for (id, status, payload) in fixture_records() {
        if status == Status::Stopped && days > 7 {
            let purged = eventually(&format!("{context}: {id} is purged"), || {
                let mut client = client.clone();
                async move { get(&mut client, ACCOUNT, FUNCTION, id).await.err() }
            })
            .await;
            assert_eq!(purged.code(), tonic::Code::NotFound, "{context}");
            continue;
        }
        let found = wait_for(&mut client, ACCOUNT, FUNCTION, id, |i| i.end_time > 0).await;
        if status == Status::Stopped {
            check_record(&found, Status::Stopped, &payload);
            assert_eq!(statuses(&found), ["ENQUEUED", "STOPPED"], "{context}");
            continue;
        }
        check_record(&found, Status::Expired, &payload);
        assert_eq!(statuses(&found), ["ENQUEUED", "EXPIRED"], "{context}: {id}");
        assert_eq!(
            found.end_time, opened_ms,
            "{context}: {id} expired on opening"
        );
        assert!(found.started_time <= written_ms, "{context}: {id}");
    }
    let mut request = list_request(FUNCTION);
    request.include_payload = true;
    let listed: Vec<String> = list_all(&mut client, ACCOUNT, request)
        .await
        .into_iter()
        .map(|i| i.invocation_id)
        .collect();
    let mut kept = vec!["large-1", "small-1"];
    if days <= 7 {
        kept.push("small-2");
    }
    let mut listed_sorted = listed.clone();
    listed_sorted.sort();
    assert_eq!(listed_sorted, kept, "{context}: nothing else was removed");
    assert_eq!(
        functions(&mut client)
            .await
            .iter()
            .map(|f| f.function_name.as_str())
            .collect::<Vec<_>>(),
        [FUNCTION],
        "{context}: the function is still listed"
    );
    server.stop().await.expect("clean stop");
}

/// The journal files of a data directory, largest first.
fn journals(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.join("store")];
    while let Some(at) = pending.pop() {
        for entry in std::fs::read_dir(&at).expect("read dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "jnl") {
                found.push(path);
            }
        }
    }
    found.sort_by_key(|p| std::cmp::Reverse(std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)));
    found
}

async fn ids_present(client: &mut Client, count: usize) -> Vec<bool> {
    let mut present = Vec::new();
    for i in 0..count {
        present.push(
            get(client, ACCOUNT, FUNCTION, &format!("rec-{i:03}"))
                .await
                .is_ok(),
        );
    }
    present
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_tail_is_dropped_but_corruption_in_the_middle_is_refused() {
    const COUNT: usize = 200;
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start_with(on_disk(dir.path())).await;
    let mut client = server.client().await;
    for i in 0..COUNT {
        invoke(&mut client, ACCOUNT, FUNCTION, &format!("rec-{i:03}")).await;
    }
    server.stop().await.expect("clean stop");
    let journal = journals(dir.path()).remove(0);
    let pristine = std::fs::read(&journal).expect("read journal");
    // The journal file is preallocated with zeros; the records end at its last non-zero byte.
    let end = pristine
        .iter()
        .rposition(|b| *b != 0)
        .expect("journal has records")
        + 1;

    // A torn tail (a crash mid-write): the last record is dropped, the rest recovered.
    let torn = &pristine[..end - 7];
    std::fs::write(&journal, torn).expect("tear");
    let server = TestServer::start_with(on_disk(dir.path())).await;
    let mut client = server.client().await;
    let present = ids_present(&mut client, COUNT).await;
    let kept = present.iter().take_while(|p| **p).count();
    assert!(
        present[kept..].iter().all(|p| !p),
        "recovery keeps a prefix of the writes"
    );
    assert_eq!(kept, COUNT - 1, "only the torn last write is lost");
    server.stop().await.expect("clean stop");

    // Damage in the middle is reported, not skipped over.
    let mut damaged = pristine.clone();
    let middle = end / 2;
    for byte in &mut damaged[middle..middle + 16] {
        *byte ^= 0x5a;
    }
    std::fs::write(&journal, &damaged).expect("damage");
    let refused = serve_once(on_disk(dir.path()))
        .await
        .expect_err("mid-journal corruption must be refused");
    assert!(refused.to_string().contains("corrupt"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_purges_old_terminal_invocations_from_memory_and_disk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = on_disk(dir.path());
    config.retention = Duration::from_secs(1);
    let server = TestServer::start_with(config.clone()).await;
    let mut client = server.client().await;
    invoke(&mut client, ACCOUNT, FUNCTION, "short-lived").await;
    invoke(&mut client, ACCOUNT, FUNCTION, "still-queued").await;
    stop(&mut client, ACCOUNT, FUNCTION, "short-lived")
        .await
        .expect("stop");
    // Purged once it ended longer ago than the retention, not before.
    server.advance(Duration::from_secs(1));
    get(&mut client, ACCOUNT, FUNCTION, "short-lived")
        .await
        .expect("kept for its whole retention");
    // Retention runs every tenth of the retention.
    server.advance(Duration::from_millis(100));
    eventually("the stopped invocation is purged", || {
        let mut client = client.clone();
        async move {
            get(&mut client, ACCOUNT, FUNCTION, "short-lived")
                .await
                .err()
        }
    })
    .await;
    // Only terminal invocations go; the queued one stays.
    get(&mut client, ACCOUNT, FUNCTION, "still-queued")
        .await
        .expect("a queued invocation is never purged");
    let clock = server.clock.clone();
    server.stop().await.expect("clean stop");

    config.retention = Duration::from_secs(3600);
    let server = TestServer::start_on(config, &clock).await;
    let mut client = server.client().await;
    let missing = get(&mut client, ACCOUNT, FUNCTION, "short-lived")
        .await
        .expect_err("purged from disk too");
    assert_eq!(missing.code(), tonic::Code::NotFound);
    // Its id is free again.
    invoke(&mut client, ACCOUNT, FUNCTION, "short-lived").await;
    server.stop().await.expect("clean stop");
}

/// More invocations queued before the cutoff than retention examines in one batch, in a
/// function it scans before another's ended one: that one is purged in the same pass, with
/// the clock standing still after it came due.
async fn purge_past_a_backlog(mut config: ServerConfig) {
    config.retention = Duration::from_secs(1);
    let server = TestServer::start_with(config).await;
    let mut client = server.client().await;
    let entries: Vec<pb::InvokeFunctionRequest> = (0..1_001)
        .map(|n| pb::InvokeFunctionRequest {
            service_name: SERVICE.into(),
            function_name: "a-backlog".into(),
            invocation_id: format!("queued-{n}"),
            ..Default::default()
        })
        .collect();
    for batch in entries.chunks(100) {
        let results = client
            .invoke_functions(pb::InvokeFunctionsRequest {
                invocations: batch.to_vec(),
            })
            .await
            .expect("invoke a batch")
            .into_inner()
            .results;
        assert!(results.iter().all(|r| r.code == 0), "{results:?}");
    }
    invoke(&mut client, ACCOUNT, "b-done", "done").await;
    stop(&mut client, ACCOUNT, "b-done", "done")
        .await
        .expect("stop");
    server.advance(Duration::from_millis(1_100));
    eventually("the ended one behind the backlog is purged", || {
        let mut client = client.clone();
        async move { get(&mut client, ACCOUNT, "b-done", "done").await.err() }
    })
    .await;
    get(&mut client, ACCOUNT, "a-backlog", "queued-1000")
        .await
        .expect("queued invocations are never purged");
    server.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_gets_past_a_backlog_it_cannot_purge_yet_in_memory() {
    purge_past_a_backlog(ServerConfig::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_gets_past_a_backlog_it_cannot_purge_yet_on_disk() {
    let dir = tempfile::tempdir().expect("tempdir");
    purge_past_a_backlog(on_disk(dir.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_tokens_are_signed_bound_to_their_list_and_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start_with(on_disk(dir.path())).await;
    let mut client = server.client().await;
    for i in 0..5 {
        invoke(&mut client, ACCOUNT, FUNCTION, &format!("p{i}")).await;
        invoke(&mut client, "other-account", FUNCTION, &format!("p{i}")).await;
    }
    let mut first_page = list_request(FUNCTION);
    first_page.limit = 2;
    let token = client
        .list_stateful_async_invocations(as_account(ACCOUNT, first_page.clone()))
        .await
        .expect("page 1")
        .into_inner()
        .next_token;
    assert!(!token.is_empty());
    let with_token = |token: &str, function: &str| {
        let mut request = list_request(function);
        request.limit = 2;
        request.next_token = token.to_string();
        request
    };
    // Another account, another function, or an altered token: refused, naming the field.
    for (account, request) in [
        ("other-account", with_token(&token, FUNCTION)),
        (ACCOUNT, with_token(&token, "other-function")),
        (ACCOUNT, with_token(&format!("{token}A"), FUNCTION)),
        (
            ACCOUNT,
            with_token(&token.replacen(|_| true, "B", 1), FUNCTION),
        ),
    ] {
        let refused = client
            .list_stateful_async_invocations(as_account(account, request))
            .await
            .expect_err("not this list's token");
        assert_eq!(refused.code(), tonic::Code::InvalidArgument);
        assert!(
            refused.message().contains("next_token"),
            "{}",
            refused.message()
        );
    }
    let before = client
        .list_stateful_async_invocations(as_account(ACCOUNT, with_token(&token, FUNCTION)))
        .await
        .expect("page 2")
        .into_inner();
    server.stop().await.expect("clean stop");

    // The key is kept in the data directory: the same token still works after a restart.
    let server = TestServer::start_with(on_disk(dir.path())).await;
    let mut client = server.client().await;
    let after = client
        .list_stateful_async_invocations(as_account(ACCOUNT, with_token(&token, FUNCTION)))
        .await
        .expect("page 2 after the restart")
        .into_inner();
    assert_eq!(after, before);
    server.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_invocation_read_from_disk_answers_as_it_did_from_memory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = sai::clock::ManualClock::starting_at(TEST_EPOCH_MS);
    let server = TestServer::start_on(on_disk(dir.path()), &clock).await;
    let (mut client, mut worker) = (server.client().await, server.worker().await);
    configure(
        &mut client,
        ACCOUNT,
        FUNCTION,
        pb::AsyncInvokeConfig {
            max_async_retry_attempts: Some(1),
            destination_config: Some(pb::DestinationConfig {
                on_success: Some(pb::Destination {
                    destination: "acs:fc:::services/demo-service/functions/audit".into(),
                }),
                on_failure: None,
            }),
            ..Default::default()
        },
    )
    .await;
    // One fails, is retried and succeeds (a destination record follows); one is stopped
    // while it runs; one carries a payload large enough to be stored apart.
    for id in ["retried", "stopped"] {
        invoke(&mut client, ACCOUNT, FUNCTION, id).await;
    }
    let large = "z".repeat(5_000);
    client
        .invoke_function(pb::InvokeFunctionRequest {
            service_name: SERVICE.into(),
            function_name: FUNCTION.into(),
            invocation_id: "large".into(),
            payload: large.clone(),
            ..Default::default()
        })
        .await
        .expect("invoke large");
    let leases = poll(&mut worker, ACCOUNT, FUNCTION, 3, 1_000).await;
    let lease = |id: &str| {
        leases
            .iter()
            .find(|l| l.invocation.as_ref().expect("inv").invocation_id == id)
            .expect("leased")
            .lease_token
            .clone()
    };
    complete(&mut worker, ACCOUNT, &lease("retried"), failure("flaky"))
        .await
        .expect("fail");
    stop(&mut client, ACCOUNT, FUNCTION, "stopped")
        .await
        .expect("stop");
    complete(
        &mut worker,
        ACCOUNT,
        &lease("stopped"),
        pb::complete_invocation_request::Outcome::Stopped(pb::CompleteStopped {}),
    )
    .await
    .expect("stopped");
    complete(&mut worker, ACCOUNT, &lease("large"), success("big done"))
        .await
        .expect("succeed");
    server.advance(Duration::from_millis(50));
    let retry = poll(&mut worker, ACCOUNT, FUNCTION, 1, 10_000)
        .await
        .remove(0);
    clock.advance(Duration::from_millis(7));
    complete(
        &mut worker,
        ACCOUNT,
        &retry.lease_token,
        success("second time"),
    )
    .await
    .expect("succeed");

    // The destination records end too, so that a restart reads them from the disk.
    for record in list_all(&mut client, ACCOUNT, list_request("audit")).await {
        stop(&mut client, ACCOUNT, "audit", &record.invocation_id)
            .await
            .expect("stop a destination record");
    }

    let ids = ["retried", "stopped", "large"];
    let read_all = |client: Client| async move {
        let mut client = client;
        let mut gets = Vec::new();
        for id in ids {
            gets.push(get(&mut client, ACCOUNT, FUNCTION, id).await.expect("get"));
        }
        let mut lists = Vec::new();
        for order in [pb::SortOrder::Asc, pb::SortOrder::Desc] {
            for include_payload in [false, true] {
                let mut request = list_request(FUNCTION);
                request.sort_order_by_time = order as i32;
                request.include_payload = include_payload;
                request.limit = 2;
                lists.push(list_all(&mut client, ACCOUNT, request).await);
            }
        }
        let audit = list_all(&mut client, ACCOUNT, list_request("audit")).await;
        // Destination records have generated ids, which a get finds from the id alone.
        for record in &audit {
            gets.push(
                get(&mut client, ACCOUNT, "audit", &record.invocation_id)
                    .await
                    .expect("get a destination record"),
            );
        }
        let mut watched = Vec::new();
        for id in ids {
            let request = pb::WatchInvocationRequest {
                service_name: SERVICE.into(),
                function_name: FUNCTION.into(),
                invocation_id: id.into(),
                ..Default::default()
            };
            let mut stream = client
                .watch_invocation(as_account(ACCOUNT, request))
                .await
                .expect("watch")
                .into_inner();
            let mut events = Vec::new();
            // A finished invocation's stream ends after its terminal event.
            while let Some(event) = stream.message().await.expect("watch event") {
                events.push(event);
            }
            watched.push(events);
        }
        (gets, lists, audit, watched)
    };
    let from_memory = read_all(client.clone()).await;
    assert_eq!(
        statuses(&from_memory.0[0]),
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
    assert_eq!(from_memory.0[2].invocation_payload, large);
    assert_eq!(from_memory.2.len(), 2, "two destination records");
    for record in &from_memory.2 {
        assert_eq!(
            sai::model::id::started_time(&record.invocation_id),
            Some(record.started_time),
            "a generated id carries its started time"
        );
    }
    let got_ids: Vec<_> = from_memory.0[3..]
        .iter()
        .map(|g| &g.invocation_id)
        .collect();
    let listed_ids: Vec<_> = from_memory.2.iter().map(|l| &l.invocation_id).collect();
    assert_eq!(got_ids, listed_ids, "gets of generated ids");
    assert!(from_memory.0[3..]
        .iter()
        .all(|g| g.status == pb::InvocationStatus::Stopped as i32));
    assert_eq!(
        from_memory.3[0].len(),
        8,
        "every event of the retried one is watched"
    );
    server.stop().await.expect("clean stop");

    // No cache: every finished record is read from the data directory.
    let mut config = on_disk(dir.path());
    config.cache_bytes = 0;
    let server = TestServer::start_on(config, &clock).await;
    let from_disk = read_all(server.client().await).await;
    assert_eq!(from_disk.0, from_memory.0, "get");
    assert_eq!(from_disk.1, from_memory.1, "list");
    assert_eq!(from_disk.2, from_memory.2, "the destination's list");
    assert_eq!(from_disk.3, from_memory.3, "watch");
    server.stop().await.expect("clean stop");
}
