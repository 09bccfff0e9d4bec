//! Crash safety of a cluster: three `sai serve --store postgres://...` processes on one real
//! PostgreSQL (started by the test), with clients invoking and workers completing through
//! all of them and a watcher following the account, while one replica at a time is killed
//! with SIGKILL and started again, twenty times over. Whatever any replica acknowledged must
//! be there; leases the dead replica granted run out and are offered again by the others;
//! every deadline fires once; the watcher resumes on another replica with no gap and no
//! repeat.

mod support;

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rand::Rng;
use sai::pb;
use support::crash_load::*;
use support::postgres::PgServer;
use support::*;
use tokio::task::JoinSet;

const KILLS: usize = 20;
const REPLICAS: usize = 3;
const CLIENTS: usize = 4;
const WORKERS: usize = 2;

/// Short leases and no backoff, so that what the kills interrupt comes round again soon.
const REPLICA_FLAGS: &[&str] = &[
    "--lease-timeout",
    "1s",
    "--retry-backoff-initial",
    "0s",
    "--retry-backoff-max",
    "0s",
];

/// Follow the account's changes through `urls` in turn, resuming after the last sequence
/// received whenever a replica goes away; every sequence received, in order.
async fn watching(urls: Arc<Mutex<Vec<String>>>, seen: Arc<Mutex<Vec<u64>>>) {
    loop {
        let url = {
            let urls = urls.lock();
            urls[rand::rng().random_range(0..urls.len())].clone()
        };
        let Ok(mut client) = Client::connect(url).await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let from = seen.lock().last().copied().unwrap_or(0);
        let stream = client
            .watch_invocations(pb::WatchInvocationsRequest {
                from_sequence: from,
                from_oldest: from == 0,
                ..Default::default()
            })
            .await;
        let Ok(stream) = stream else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let mut stream = stream.into_inner();
        while let Ok(Some(change)) = stream.message().await {
            seen.lock().push(change.sequence);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_loses_nothing_acknowledged_across_twenty_replica_kills() {
    let pg = tokio::task::spawn_blocking(PgServer::start)
        .await
        .expect("start PostgreSQL");
    let url = pg.database("sai").await;
    let mut replicas = Vec::new();
    for _ in 0..REPLICAS {
        replicas.push(start_replica(&url, REPLICA_FLAGS).await);
    }
    let urls = Arc::new(Mutex::new(
        replicas.iter().map(SaiProcess::url).collect::<Vec<_>>(),
    ));
    let acked = Arc::new(Mutex::new(Acknowledged::default()));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let watcher = tokio::spawn(watching(urls.clone(), seen.clone()));

    for kill in 0..KILLS {
        let mut load = JoinSet::new();
        for client_no in 0..CLIENTS {
            let url = urls.lock()[client_no % REPLICAS].clone();
            load.spawn(invoking(
                url,
                format!("k{kill}-c{client_no}"),
                acked.clone(),
            ));
        }
        for worker_no in 0..WORKERS {
            let url = urls.lock()[(worker_no + 1) % REPLICAS].clone();
            load.spawn(working(url, acked.clone()));
        }
        let run_for = rand::rng().random_range(200..700);
        tokio::time::sleep(Duration::from_millis(run_for)).await;
        let victim = rand::rng().random_range(0..REPLICAS);
        replicas[victim].child.kill().expect("SIGKILL a replica");
        replicas[victim].child.wait().expect("reap it");
        load.abort_all();
        while load.join_next().await.is_some() {}
        replicas[victim] = start_replica(&url, REPLICA_FLAGS).await;
        urls.lock()[victim] = replicas[victim].url();
    }

    // Workers on the surviving replicas finish what is left, including attempts whose
    // worker or replica died (their leases run out and are offered again).
    let mut workers = JoinSet::new();
    for n in 0..REPLICAS {
        let (url, acked) = (urls.lock()[n].clone(), acked.clone());
        workers.spawn(async move {
            loop {
                working(url.clone(), acked.clone()).await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
    }
    let first = urls.lock()[0].clone();
    let mut client = Client::connect(first).await.expect("connect");
    let all = all_ended(&mut client, Duration::from_secs(120)).await;
    workers.abort_all();

    let acked = std::mem::take(&mut *acked.lock());
    let stored = every_acknowledged_stored(&acked, &all);
    let mut events_checked = 0;
    for id in stored.keys() {
        let got = get(&mut client, "default", FUNCTION, id)
            .await
            .expect("get");
        let statuses = statuses(&got);
        for (at, event) in got.events.iter().enumerate() {
            assert_eq!(event.event_id, at as i64 + 1, "{id}: event ids have a gap");
        }
        // Each attempt began with one dispatch and ended once: a deadline that fired twice
        // would end an attempt twice.
        let dispatches = statuses.iter().filter(|s| **s == "DEQUEUED").count();
        let ends = statuses
            .iter()
            .filter(|s| matches!(**s, "RETRYING" | "SUCCEEDED" | "FAILED"))
            .count();
        assert_eq!(dispatches, ends, "{id}: {statuses:?}");
        events_checked += got.events.len();
        if let Some(outcome) = acked.completed.get(*id) {
            match outcome {
                Ok(payload) if status_of(&got) == pb::InvocationStatus::Succeeded => {
                    assert_eq!(&got.return_payload, payload, "{id}");
                }
                Err(message) if status_of(&got) == pb::InvocationStatus::Failed => {
                    assert_eq!(&got.invocation_error_message, message, "{id}");
                }
                _ => panic!("{id}: acknowledged {outcome:?}, stored {statuses:?}"),
            }
        }
    }
    assert!(
        acked.invoked.len() > KILLS * 10 && acked.completed.len() > KILLS,
        "too little load to mean anything: {} invocations, {} completions",
        acked.invoked.len(),
        acked.completed.len()
    );

    // The watcher saw every change of the account once, in order, across its resumes.
    let caught_up = tokio::time::Instant::now() + Duration::from_secs(60);
    while seen.lock().len() < events_checked {
        assert!(
            tokio::time::Instant::now() < caught_up,
            "the watcher saw {} of {events_checked} changes",
            seen.lock().len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let total_events = events_checked;
    watcher.abort();
    let seen = seen.lock().clone();
    assert_eq!(
        seen,
        (1..=total_events as u64).collect::<Vec<u64>>(),
        "a gap or a repeat in the watched sequence"
    );
    println!(
        "cluster crash test: {KILLS} replica kills; {} acknowledged invocations and {} \
         acknowledged completions intact; {events_checked} events gap-free; the watcher saw \
         {total_events} changes in order across its resumes",
        acked.invoked.len(),
        acked.completed.len()
    );
    drop(pg);
}
