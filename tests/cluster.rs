//! Several sai replicas on one real PostgreSQL (started by the test from the installed
//! binaries): any replica answers any call, an id is accepted once across replicas, leases
//! granted by one are heartbeated and completed through another, deadlines fire once in the
//! cluster, and watchers on one replica see every commit of the others.

mod support;

use std::time::Duration;

use sai::clock::ManualClock;
use sai::pb;
use sai::server::{PostgresConfig, ServerConfig, Storage};
use support::postgres::PgServer;
use support::*;

const ACCOUNT: &str = "acct";

/// A running cluster: one PostgreSQL, `replicas` sai servers on it sharing one clock.
struct Cluster {
    replicas: Vec<TestServer>,
    clock: ManualClock,
    pg: PgServer,
    url: String,
}

impl Cluster {
    async fn start(replicas: usize) -> Self {
        let pg = tokio::task::spawn_blocking(PgServer::start)
            .await
            .expect("start PostgreSQL");
        let url = pg.database("sai").await;
        let clock = ManualClock::starting_at(TEST_EPOCH_MS);
        let mut cluster = Cluster {
            replicas: Vec::new(),
            clock,
            pg,
            url,
        };
        for _ in 0..replicas {
            cluster.add_replica().await;
        }
        cluster
    }

    fn config(&self) -> ServerConfig {
        ServerConfig {
            storage: Storage::Postgres(PostgresConfig {
                url: self.url.clone(),
            }),
            ..fast_engine()
        }
    }

    async fn add_replica(&mut self) {
        let server = TestServer::start_on(self.config(), &self.clock).await;
        // Ready once it answers.
        let mut client = server.client().await;
        eventually("the replica serves", || {
            let mut client = client.clone();
            async move { get(&mut client, ACCOUNT, FUNCTION, "none").await.err() }
        })
        .await;
        let _ = &mut client;
        self.replicas.push(server);
    }

    fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }
}

fn terminal(invocation: &pb::StatefulAsyncInvocation) -> bool {
    matches!(
        status_of(invocation),
        pb::InvocationStatus::Succeeded
            | pb::InvocationStatus::Failed
            | pb::InvocationStatus::Stopped
            | pb::InvocationStatus::Expired
            | pb::InvocationStatus::Invalid
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_replica_answers_any_call_of_one_lifecycle() {
    let cluster = Cluster::start(3).await;
    let [a, b, c] = [0, 1, 2].map(|i| &cluster.replicas[i]);
    let mut on_a = a.client().await;
    let mut on_b = b.client().await;
    let mut on_c = c.client().await;

    invoke(&mut on_a, ACCOUNT, FUNCTION, "job-1").await;
    // Read your writes on every other replica.
    for client in [&mut on_b, &mut on_c] {
        let seen = get(client, ACCOUNT, FUNCTION, "job-1").await.expect("get");
        assert_eq!(status_of(&seen), pb::InvocationStatus::Enqueued);
    }

    let mut worker_c = c.worker().await;
    let leases = poll(&mut worker_c, ACCOUNT, FUNCTION, 10, 5_000).await;
    assert_eq!(leases.len(), 1);
    let token = leases[0].lease_token.clone();

    let mut worker_b = b.worker().await;
    let beat = worker_b
        .heartbeat_invocation(as_account(
            ACCOUNT,
            pb::HeartbeatInvocationRequest {
                lease_token: token.clone(),
            },
        ))
        .await
        .expect("a lease granted by one replica is heartbeated through another")
        .into_inner();
    assert!(!beat.stop_requested);

    let mut worker_a = a.worker().await;
    let done = complete(&mut worker_a, ACCOUNT, &token, success("ok"))
        .await
        .expect("completed through a third replica");
    assert_eq!(status_of(&done), pb::InvocationStatus::Succeeded);
    // A repeat through another replica is answered as the first was.
    let again = complete(&mut worker_b, ACCOUNT, &token, success("ok"))
        .await
        .expect("a repeat is answered");
    assert_eq!(status_of(&again), pb::InvocationStatus::Succeeded);

    let seen = get(&mut on_c, ACCOUNT, FUNCTION, "job-1")
        .await
        .expect("get");
    assert_eq!(
        statuses(&seen),
        ["ENQUEUED", "DEQUEUED", "RUNNING", "SUCCEEDED"]
    );
    assert_eq!(seen.return_payload, "ok");
    let listed = list_all(&mut on_b, ACCOUNT, list_request(FUNCTION)).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].invocation_id, "job-1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_invoked_on_every_replica_at_once_is_accepted_exactly_once() {
    let cluster = Cluster::start(3).await;
    for round in 0..20 {
        let id = format!("same-{round}");
        let mut calls = Vec::new();
        for replica in &cluster.replicas {
            let mut client = replica.client().await;
            let id = id.clone();
            calls.push(tokio::spawn(async move {
                client
                    .invoke_function(as_account(
                        ACCOUNT,
                        pb::InvokeFunctionRequest {
                            service_name: SERVICE.into(),
                            function_name: FUNCTION.into(),
                            qualifier: String::new(),
                            invocation_id: id,
                            payload: "{}".into(),
                        },
                    ))
                    .await
            }));
        }
        let mut accepted = 0;
        for call in calls {
            match call.await.expect("call") {
                Ok(_) => accepted += 1,
                Err(status) => assert_eq!(status.code(), tonic::Code::AlreadyExists, "{status}"),
            }
        }
        assert_eq!(accepted, 1, "round {round}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_that_runs_out_fails_its_attempt_once_and_another_replica_runs_the_retry() {
    let cluster = Cluster::start(3).await;
    let mut on_a = cluster.replicas[0].client().await;
    configure(
        &mut on_a,
        ACCOUNT,
        FUNCTION,
        pb::AsyncInvokeConfig {
            max_async_retry_attempts: Some(1),
            ..Default::default()
        },
    )
    .await;
    invoke(&mut on_a, ACCOUNT, FUNCTION, "lost").await;
    let mut worker_b = cluster.replicas[1].worker().await;
    let first = poll(&mut worker_b, ACCOUNT, FUNCTION, 1, 5_000).await;
    assert_eq!(first.len(), 1);

    // Past the lease: whichever replica's deadline scan takes it fails the attempt, once.
    cluster.advance(Duration::from_secs(1));
    let mut on_c = cluster.replicas[2].client().await;
    wait_for(&mut on_c, ACCOUNT, FUNCTION, "lost", |i| {
        status_of(i) == pb::InvocationStatus::Retrying
    })
    .await;
    // Past the backoff: requeued once, and the retry goes to a worker on another replica.
    cluster.advance(Duration::from_secs(1));
    wait_for(&mut on_c, ACCOUNT, FUNCTION, "lost", |i| {
        status_of(i) == pb::InvocationStatus::Enqueued
    })
    .await;
    let mut worker_c = cluster.replicas[2].worker().await;
    let retry = poll(&mut worker_c, ACCOUNT, FUNCTION, 1, 5_000).await;
    assert_eq!(retry.len(), 1);
    assert_eq!(retry[0].attempt, 2);
    // The first worker is fenced off.
    let stale = complete(
        &mut worker_b,
        ACCOUNT,
        &first[0].lease_token,
        success("late"),
    )
    .await;
    assert_eq!(
        stale.expect_err("fenced").code(),
        tonic::Code::FailedPrecondition
    );
    complete(&mut worker_c, ACCOUNT, &retry[0].lease_token, success("ok"))
        .await
        .expect("complete the retry");
    let done = get(&mut on_a, ACCOUNT, FUNCTION, "lost")
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
        ],
        "each deadline fired exactly once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_on_one_replica_sees_every_commit_of_the_others_and_resumes_on_a_third() {
    let cluster = Cluster::start(3).await;
    let mut on_b = cluster.replicas[1].client().await;
    let mut changes = on_b
        .watch_invocations(as_account(
            ACCOUNT,
            pb::WatchInvocationsRequest {
                service_name: SERVICE.into(),
                function_name: FUNCTION.into(),
                ..Default::default()
            },
        ))
        .await
        .expect("watch")
        .into_inner();
    let mut on_a = cluster.replicas[0].client().await;
    for i in 0..10 {
        invoke(&mut on_a, ACCOUNT, FUNCTION, &format!("w{i}")).await;
    }
    let mut sequences = Vec::new();
    for _ in 0..5 {
        let change = tokio::time::timeout(Duration::from_secs(30), changes.message())
            .await
            .expect("a change arrives")
            .expect("stream")
            .expect("open");
        sequences.push(change.sequence);
    }
    drop(changes);
    // Resume on another replica after the last change received.
    let mut on_c = cluster.replicas[2].client().await;
    let mut resumed = on_c
        .watch_invocations(as_account(
            ACCOUNT,
            pb::WatchInvocationsRequest {
                service_name: SERVICE.into(),
                function_name: FUNCTION.into(),
                from_sequence: *sequences.last().expect("five"),
                ..Default::default()
            },
        ))
        .await
        .expect("resume")
        .into_inner();
    let mut ids = Vec::new();
    for _ in 0..5 {
        let change = tokio::time::timeout(Duration::from_secs(30), resumed.message())
            .await
            .expect("a change arrives")
            .expect("stream")
            .expect("open");
        sequences.push(change.sequence);
        ids.push(change.invocation.expect("invocation").invocation_id);
    }
    assert_eq!(
        sequences,
        (1..=10).collect::<Vec<u64>>(),
        "no gap, no repeat"
    );
    assert_eq!(ids, ["w5", "w6", "w7", "w8", "w9"]);

    // One invocation's watch on B follows a lifecycle driven through A and C.
    let mut events = on_b
        .watch_invocation(as_account(
            ACCOUNT,
            pb::WatchInvocationRequest {
                service_name: SERVICE.into(),
                function_name: FUNCTION.into(),
                qualifier: String::new(),
                invocation_id: "w0".into(),
                from_event_id: 0,
            },
        ))
        .await
        .expect("watch one")
        .into_inner();
    let mut worker_c = cluster.replicas[2].worker().await;
    let leases = poll(&mut worker_c, ACCOUNT, FUNCTION, 1, 5_000).await;
    assert_eq!(
        leases[0]
            .invocation
            .as_ref()
            .expect("invocation")
            .invocation_id,
        "w0"
    );
    let mut worker_a = cluster.replicas[0].worker().await;
    complete(
        &mut worker_a,
        ACCOUNT,
        &leases[0].lease_token,
        success("done"),
    )
    .await
    .expect("complete");
    let mut seen = Vec::new();
    while let Some(event) = tokio::time::timeout(Duration::from_secs(30), events.message())
        .await
        .expect("an event arrives")
        .expect("stream")
    {
        let invocation = event.invocation.expect("invocation");
        seen.push(event.event.expect("event").event_id);
        if terminal(&invocation) {
            break;
        }
    }
    assert_eq!(seen, [1, 2, 3, 4]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_migrated_by_a_newer_sai_is_refused_with_a_clear_message() {
    let cluster = Cluster::start(1).await;
    let (client, connection) = tokio_postgres::connect(&cluster.url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    client
        .execute(
            "UPDATE sai_meta SET value = '999' WHERE key = 'schema_version'",
            &[],
        )
        .await
        .expect("pretend a newer sai migrated it");
    let server = TestServer::start_on(cluster.config(), &cluster.clock).await;
    let err = server.stop().await.expect_err("refused");
    let message = err.to_string();
    assert!(
        message.contains("schema is version 999") && message.contains("newer than this sai"),
        "{message}"
    );
    let _ = &cluster.pg;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_going_away_is_unavailable_at_once_and_the_replicas_recover_when_it_returns() {
    let cluster = Cluster::start(2).await;
    let mut on_a = cluster.replicas[0].client().await;
    let mut on_b = cluster.replicas[1].client().await;
    for i in 0..10 {
        invoke(&mut on_a, ACCOUNT, FUNCTION, &format!("before-{i}")).await;
    }

    let pg = &cluster.pg;
    tokio::task::block_in_place(|| pg.stop());
    for client in [&mut on_a, &mut on_b] {
        // Answered, not hung: a bound far above any pool or connect timeout.
        let answer = tokio::time::timeout(
            Duration::from_secs(60),
            client.invoke_function(as_account(
                ACCOUNT,
                pb::InvokeFunctionRequest {
                    service_name: SERVICE.into(),
                    function_name: FUNCTION.into(),
                    qualifier: String::new(),
                    invocation_id: "during".into(),
                    payload: "{}".into(),
                },
            )),
        )
        .await
        .expect("answered while PostgreSQL is down");
        let status = answer.expect_err("nothing can be stored");
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status}");
        assert!(status.message().contains("PostgreSQL"), "{status}");
        let read = get(client, ACCOUNT, FUNCTION, "before-0").await;
        assert_eq!(
            read.expect_err("nothing can be read").code(),
            tonic::Code::Unavailable
        );
    }

    tokio::task::block_in_place(|| pg.start_again());
    // Each replica takes calls again by itself.
    for client in [&mut on_a, &mut on_b] {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            match get(client, ACCOUNT, FUNCTION, "before-0").await {
                Ok(found) => {
                    assert_eq!(status_of(&found), pb::InvocationStatus::Enqueued);
                    break;
                }
                Err(status) => {
                    assert_eq!(status.code(), tonic::Code::Unavailable, "{status}");
                    assert!(tokio::time::Instant::now() < deadline, "not back: {status}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
    invoke(&mut on_b, ACCOUNT, FUNCTION, "after").await;
    let listed = list_all(&mut on_a, ACCOUNT, list_request(FUNCTION)).await;
    assert_eq!(
        listed.len(),
        11,
        "everything acknowledged before the outage, and after"
    );
    let mut worker = cluster.replicas[0].worker().await;
    let mut done = 0;
    while done < 11 {
        for lease in poll(&mut worker, ACCOUNT, FUNCTION, 16, 5_000).await {
            complete(&mut worker, ACCOUNT, &lease.lease_token, success("ok"))
                .await
                .expect("complete");
            done += 1;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_functions_of_an_account_page_the_same_through_every_replica() {
    let cluster = Cluster::start(3).await;
    let mut clients = Vec::new();
    for replica in &cluster.replicas {
        clients.push(replica.client().await);
    }
    let names: Vec<String> = (0..7).map(|n| format!("f{n}")).collect();
    for (n, name) in names.iter().enumerate() {
        invoke(&mut clients[n % 3], ACCOUNT, name, "job-1").await;
    }
    // Pages of 2, each asked of the next replica with the token another one gave.
    let mut listed = Vec::new();
    let mut next_token = String::new();
    for page in 0.. {
        let answer = clients[page % 3]
            .list_stateful_async_invocation_functions(as_account(
                ACCOUNT,
                pb::ListStatefulAsyncInvocationFunctionsRequest {
                    limit: 2,
                    next_token: next_token.clone(),
                },
            ))
            .await
            .expect("list functions")
            .into_inner();
        assert!(answer.data.len() <= 2, "page {page}: {:?}", answer.data);
        listed.extend(answer.data.into_iter().map(|f| f.function_name));
        next_token = answer.next_token;
        if next_token.is_empty() {
            break;
        }
        assert!(page < 10, "paging does not end: {listed:?}");
    }
    assert_eq!(listed, names);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_change_feed_is_trimmed_to_the_watch_history_however_much_a_pass_finds() {
    let cluster = Cluster::start(0).await;
    let mut config = cluster.config();
    config.watch_history = sai::server::WatchHistoryLimit::changes(10);
    let server = TestServer::start_on(config, &cluster.clock).await;
    let mut client = server.client().await;
    // 2,500 accepts, a change each: more past the kept ten than two batches of retention trim
    // (the pass at start may have run before or after some of them).
    for batch in 0..25 {
        let invocations = (0..100)
            .map(|n| pb::InvokeFunctionRequest {
                service_name: SERVICE.into(),
                function_name: FUNCTION.into(),
                invocation_id: format!("feed-{batch}-{n}"),
                ..Default::default()
            })
            .collect();
        let results = client
            .invoke_functions(as_account(
                ACCOUNT,
                pb::InvokeFunctionsRequest { invocations },
            ))
            .await
            .expect("invoke a batch")
            .into_inner()
            .results;
        assert!(results.iter().all(|r| r.code == 0), "{results:?}");
    }
    let (database, connection) = tokio_postgres::connect(&cluster.url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    let kept = || async {
        let row = database
            .query_one("SELECT count(*) FROM sai_change", &[])
            .await
            .expect("count the feed");
        row.get::<_, i64>(0)
    };
    // The next pass of retention (every minute at the default retention) trims it all.
    cluster.advance(Duration::from_secs(61));
    eventually("the feed is trimmed to the ten kept", || async {
        (kept().await == 10).then_some(())
    })
    .await;
    // A resume before them is refused, naming the oldest resumable; one among them replays.
    let resume_after = |sequence: u64| {
        as_account(
            ACCOUNT,
            pb::WatchInvocationsRequest {
                service_name: SERVICE.into(),
                function_name: FUNCTION.into(),
                from_sequence: sequence,
                from_oldest: false,
            },
        )
    };
    let refused = match client.watch_invocations(resume_after(5)).await {
        Err(status) => status,
        Ok(stream) => match stream.into_inner().message().await {
            Err(status) => status,
            other => panic!("expected OUT_OF_RANGE, got {other:?}"),
        },
    };
    assert_eq!(refused.code(), tonic::Code::OutOfRange, "{refused:?}");
    assert!(refused.message().contains("2490"), "{}", refused.message());
    let mut replay = client
        .watch_invocations(resume_after(2490))
        .await
        .expect("the kept ten are resumable")
        .into_inner();
    let first = replay
        .message()
        .await
        .expect("not an error")
        .expect("a change");
    assert_eq!(first.sequence, 2491);
    server.stop().await.expect("clean stop");
}

/// Every replica runs retention on the same tables, one batch at a time in the cluster: while
/// another holds the lock, a replica's batch purges nothing and says it was held back, rather
/// than deleting the same oldest rows and waiting on the other's row locks to find them gone.
/// Once nothing due is left, a replica waiting its turn says retention has caught up, whichever
/// replica did the work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_batch_of_retention_runs_at_a_time_in_the_cluster() {
    use sai::internals::{Backend, Engine, Postgres, PurgeStop, Purged, RETENTION_LOCK};

    let cluster = Cluster::start(1).await;
    let mut client = cluster.replicas[0].client().await;
    let ids = ["ended-0", "ended-1", "ended-2"];
    for id in ids {
        invoke(&mut client, ACCOUNT, FUNCTION, id).await;
        stop(&mut client, ACCOUNT, FUNCTION, id)
            .await
            .expect("stopped while queued");
    }
    // Another replica's batches, called here rather than on its schedule.
    let shutdown = tokio_util::sync::CancellationToken::new();
    let replica = Postgres::connect(
        &PostgresConfig {
            url: cluster.url.clone(),
        },
        Engine::schedule(&fast_engine().engine),
        cluster.clock.clock(),
        100,
        shutdown.clone(),
    )
    .await
    .expect("connect a replica");
    let (database, connection) = tokio_postgres::connect(&cluster.url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    // Retention's lock, held and let go as another replica at work would.
    let hold_lock = |held: bool| {
        let statement = if held {
            "SELECT pg_advisory_lock($1)"
        } else {
            "SELECT pg_advisory_unlock($1)"
        };
        let database = &database;
        async move {
            database
                .execute(statement, &[&RETENTION_LOCK])
                .await
                .expect("take or let go of retention's lock");
        }
    };
    // They all ended at the clock's start.
    let cutoff_ms = cluster.clock.now_ms() + 60_000;
    let batch = || async {
        replica
            .purge_ended_before(cutoff_ms, 1_000)
            .await
            .expect("a batch")
    };

    hold_lock(true).await;
    let held = batch().await;
    assert_eq!(
        held,
        Purged {
            invocations: 0,
            stopped: PurgeStop::HeldBack
        }
    );
    for id in ids {
        get(&mut client, ACCOUNT, FUNCTION, id)
            .await
            .expect("nothing purged while another batch runs");
    }

    hold_lock(false).await;
    let done = batch().await;
    assert_eq!(
        done,
        Purged {
            invocations: 3,
            stopped: PurgeStop::CaughtUp
        }
    );
    for id in ids {
        let gone = get(&mut client, ACCOUNT, FUNCTION, id)
            .await
            .expect_err("purged");
        assert_eq!(gone.code(), tonic::Code::NotFound, "{gone:?}");
    }

    hold_lock(true).await;
    let waiting = batch().await;
    assert_eq!(
        waiting,
        Purged {
            invocations: 0,
            stopped: PurgeStop::CaughtUp
        },
        "nothing due is left, whoever holds the lock"
    );
    hold_lock(false).await;
    shutdown.cancel();
}
