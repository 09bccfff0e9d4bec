//! PostgreSQL made highly available under sai: replicas given both servers of a synchronous
//! pair (`target_session_attrs=read-write`) keep serving once the standby is promoted in the
//! middle of load, and nothing they acknowledged before, during or after the switch is lost.

mod support;

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use support::crash_load::*;
use support::postgres::PgServer;
use support::*;
use tokio::task::JoinSet;

const REPLICAS: usize = 2;
const CLIENTS: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_synchronous_standby_promoted_mid_load_loses_nothing_acknowledged() {
    let primary = Arc::new(
        tokio::task::spawn_blocking(PgServer::start)
            .await
            .expect("start PostgreSQL"),
    );
    primary.database("sai").await;
    let standby = {
        let primary = primary.clone();
        tokio::task::spawn_blocking(move || PgServer::standby_of(&primary))
            .await
            .expect("start the standby")
    };
    primary.require_synchronous_standby().await;
    let url = format!(
        "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/sai?target_session_attrs=read-write",
        primary.port, standby.port
    );
    let mut replicas = Vec::new();
    for _ in 0..REPLICAS {
        replicas.push(start_replica(&url, &["--lease-timeout", "2s"]).await);
    }
    let urls: Vec<String> = replicas.iter().map(SaiProcess::url).collect();

    let acked = Arc::new(Mutex::new(Acknowledged::default()));
    let mut load = JoinSet::new();
    for client_no in 0..CLIENTS {
        load.spawn(invoking_through_errors(
            urls[client_no % REPLICAS].clone(),
            format!("c{client_no}"),
            acked.clone(),
        ));
    }
    for url in &urls {
        let (url, acked) = (url.clone(), acked.clone());
        load.spawn(async move {
            // A worker's poll ends in an error while the database switches over.
            loop {
                working(url.clone(), acked.clone()).await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
    }

    // Load until well under way, then the primary dies and the standby takes over.
    let enough = |acked: &Acknowledged| acked.invoked.len() >= 200 && acked.completed.len() >= 100;
    wait_until(Duration::from_secs(60), || enough(&acked.lock())).await;
    let (invoked, completed) = {
        let acked = acked.lock();
        (acked.invoked.len(), acked.completed.len())
    };
    {
        let primary = primary.clone();
        tokio::task::spawn_blocking(move || primary.stop())
            .await
            .expect("stop the primary");
    }
    // The promoted standby serves from here on; it is kept until the end.
    let standby = tokio::task::spawn_blocking(move || {
        standby.promote();
        standby
    })
    .await
    .expect("promote the standby");
    wait_until(Duration::from_secs(60), || {
        let acked = acked.lock();
        acked.invoked.len() >= invoked + 200 && acked.completed.len() >= completed + 100
    })
    .await;
    // The load stops where it is: what it was told was acknowledged is recorded already.
    load.abort_all();
    while load.join_next().await.is_some() {}
    check_every_acknowledged_write(&urls, &acked).await;
    drop(standby);
}

async fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the load did not get that far in {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Workers finish what is open; then every acknowledged invocation is stored, and every
/// acknowledged completion with the outcome reported.
async fn check_every_acknowledged_write(urls: &[String], acked: &Arc<Mutex<Acknowledged>>) {
    let mut workers = JoinSet::new();
    for url in urls {
        let (url, acked) = (url.clone(), acked.clone());
        workers.spawn(async move {
            loop {
                working(url.clone(), acked.clone()).await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
    }
    let mut client = Client::connect(urls[0].clone()).await.expect("connect");
    let all = all_ended(&mut client, Duration::from_secs(60)).await;
    workers.abort_all();
    while workers.join_next().await.is_some() {}

    let acked = std::mem::take(&mut *acked.lock());
    let stored = every_acknowledged_stored(&acked, &all);
    for (id, outcome) in &acked.completed {
        let got = stored
            .get(id.as_str())
            .unwrap_or_else(|| panic!("completed {id} is lost"));
        assert_outcome(id, got, outcome);
    }
}
