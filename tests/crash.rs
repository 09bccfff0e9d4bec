//! Crash safety of the real binary: `sai serve` with a data directory is killed with SIGKILL
//! at random moments while clients invoke and workers complete, then restarted on the same
//! directory, twenty times over. Whatever an RPC acknowledged must still be there.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rand::Rng;
use sai::pb;
use support::crash_load::*;
use support::*;
use tokio::task::JoinSet;

const CYCLES: usize = 20;
const CLIENTS: usize = 6;
const WORKERS: usize = 2;

async fn start(dir: &Path) -> SaiProcess {
    start_with(dir, &[]).await
}

/// `sai serve` on `dir`. Retries come back at once (no backoff), so that nothing in the test
/// waits on the server's timers; a lease lasts 1 s.
async fn start_with(dir: &Path, extra_args: &[&str]) -> SaiProcess {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sai"));
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .args([
            "--lease-timeout",
            "1s",
            "--retry-backoff-initial",
            "0s",
            "--retry-backoff-max",
            "0s",
        ])
        .args(extra_args)
        .env("RUST_LOG", "error")
        .stderr(Stdio::inherit());
    tokio::task::spawn_blocking(move || SaiProcess::start(&mut command))
        .await
        .expect("start sai serve")
}

async fn client(url: &str) -> Client {
    Client::connect(url.to_string()).await.expect("connect")
}

/// After a restart, by listing: every acknowledged invocation exists, and every acknowledged
/// completion is terminal with its outcome. Returns (invocations, completions) checked.
async fn check_listed(url: &str, acked: &Acknowledged) -> (usize, usize) {
    let mut client = client(url).await;
    let stored: BTreeMap<String, pb::StatefulAsyncInvocation> =
        list_all(&mut client, "default", list_request(FUNCTION))
            .await
            .into_iter()
            .map(|i| (i.invocation_id.clone(), i))
            .collect();
    for id in &acked.invoked {
        assert!(
            stored.contains_key(id),
            "acknowledged invocation {id} is lost"
        );
    }
    for (id, outcome) in &acked.completed {
        let got = stored
            .get(id)
            .unwrap_or_else(|| panic!("completed invocation {id} is lost"));
        assert_outcome(id, got, outcome);
    }
    (acked.invoked.len(), acked.completed.len())
}

/// Every acknowledged invocation, fetched with its events: event ids run 1, 2, 3, ... with
/// no gap. Returns how many were checked.
async fn check_events(url: &str, acked: &Acknowledged) -> usize {
    let ids: Vec<String> = acked.invoked.iter().cloned().collect();
    let mut checks = JoinSet::new();
    for chunk in ids.chunks(ids.len().div_ceil(8).max(1)) {
        let (chunk, url) = (chunk.to_vec(), url.to_string());
        checks.spawn(async move {
            let mut client = client(&url).await;
            for id in &chunk {
                let got = get(&mut client, "default", FUNCTION, id)
                    .await
                    .unwrap_or_else(|e| panic!("acknowledged invocation {id} is lost: {e}"));
                for (at, event) in got.events.iter().enumerate() {
                    assert_eq!(event.event_id, at as i64 + 1, "{id}: event ids have a gap");
                }
            }
            chunk.len()
        });
    }
    let mut checked = 0;
    while let Some(done) = checks.join_next().await {
        checked += done.expect("check task");
    }
    checked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_acknowledged_is_lost_across_twenty_kill_9_restarts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let acked = Arc::new(Mutex::new(Acknowledged::default()));
    let mut server = start(dir.path()).await;
    let mut checked = (0, 0);
    for cycle in 0..CYCLES {
        let mut load = JoinSet::new();
        for client_no in 0..CLIENTS {
            load.spawn(invoking(
                server.url(),
                format!("c{cycle}-k{client_no}"),
                acked.clone(),
            ));
        }
        for _ in 0..WORKERS {
            load.spawn(working(server.url(), acked.clone()));
        }
        let run_for = rand::rng().random_range(150..600);
        tokio::time::sleep(Duration::from_millis(run_for)).await;
        server.child.kill().expect("SIGKILL sai");
        server.child.wait().expect("reap sai");
        // Whatever was in flight at the kill got an error; stop the load.
        load.abort_all();
        while load.join_next().await.is_some() {}

        server = start(dir.path()).await;
        let snapshot = {
            let acked = acked.lock();
            Acknowledged {
                invoked: acked.invoked.clone(),
                completed: acked.completed.clone(),
            }
        };
        let (invocations, completions) = check_listed(&server.url(), &snapshot).await;
        checked.0 += invocations;
        checked.1 += completions;
    }

    // After the last restart, everything not yet terminal reaches a terminal state.
    let mut workers = JoinSet::new();
    for _ in 0..WORKERS {
        workers.spawn(working(server.url(), acked.clone()));
    }
    let mut client = client(&server.url()).await;
    let mut changes = client
        .watch_invocations(pb::WatchInvocationsRequest {
            service_name: SERVICE.into(),
            function_name: FUNCTION.into(),
            from_sequence: 0,
            from_oldest: false,
        })
        .await
        .expect("watch the function")
        .into_inner();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let total = loop {
        let all = list_all(&mut client, "default", list_request(FUNCTION)).await;
        let open = all
            .iter()
            .filter(|i| {
                !matches!(
                    status_of(i),
                    pb::InvocationStatus::Succeeded | pb::InvocationStatus::Failed
                )
            })
            .count();
        if open == 0 {
            break all.len();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{open} invocations still not terminal"
        );
        // Look again after the next change (or a while without one: a change committed
        // before the watch began is not on it).
        let _ = tokio::time::timeout(Duration::from_secs(1), changes.message()).await;
    };
    workers.abort_all();
    let final_check = {
        let acked = acked.lock();
        Acknowledged {
            invoked: acked.invoked.clone(),
            completed: acked.completed.clone(),
        }
    };
    let (invocations, completions) = check_listed(&server.url(), &final_check).await;
    let with_events = check_events(&server.url(), &final_check).await;
    assert_eq!(with_events, invocations);
    assert!(total >= invocations);
    assert!(
        invocations > CYCLES * 10 && completions > CYCLES,
        "too little load to mean anything: {invocations} invocations, {completions} completions"
    );
    println!(
        "crash test: {CYCLES} SIGKILL/restart cycles; {invocations} acknowledged invocations \
         and {completions} acknowledged completions all intact (checked {} and {} times over \
         the restarts), event ids gap-free in all {with_events}; {total} stored invocations \
         all reached a terminal state after the last restart",
        checked.0, checked.1
    );
    let _ = server.child.kill();
    let _ = server.child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffered_mode_keeps_what_it_acknowledged_through_kill_9() {
    // Buffered mode answers once the OS has a change: a kill -9 right after the answers,
    // before any periodic sync, must lose none of them.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut acknowledged = Vec::new();
    for cycle in 0..5 {
        let mut server = start_with(dir.path(), &["--durability", "buffered"]).await;
        let mut rpc = client(&server.url()).await;
        for i in 0..5 {
            let id = format!("buffered-{cycle}-{i}");
            invoke(&mut rpc, "default", FUNCTION, &id).await;
            acknowledged.push(id);
        }
        server.child.kill().expect("SIGKILL sai");
        server.child.wait().expect("reap sai");

        let mut server = start_with(dir.path(), &["--durability", "buffered"]).await;
        let mut rpc = client(&server.url()).await;
        for id in &acknowledged {
            assert!(
                get(&mut rpc, "default", FUNCTION, id).await.is_ok(),
                "{id} was acknowledged before the kill and is gone after it"
            );
        }
        server.child.kill().expect("SIGKILL sai");
        server.child.wait().expect("reap sai");
    }
}
