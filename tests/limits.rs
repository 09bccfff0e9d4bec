//! Limits that protect the service: each one, when hit, answers its code with a message
//! naming the flag, and changes nothing.

mod support;

use std::time::Duration;

use sai::api::EdgeLimits;
use sai::pb;
use sai::server::{ServerConfig, ServerLimits};
use support::*;
use tonic::Code;

fn limited(limits: ServerLimits) -> ServerConfig {
    ServerConfig {
        limits,
        ..fast_engine()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_with_too_many_unfinished_invocations_refuses_more_and_stores_nothing() {
    let server = TestServer::start_with(limited(ServerLimits {
        max_open_per_function: 3,
        ..Default::default()
    }))
    .await;
    let mut client = server.client().await;
    for id in ["o1", "o2", "o3"] {
        invoke(&mut client, "default", FUNCTION, id).await;
    }
    let refused = client
        .invoke_function(pb::InvokeFunctionRequest {
            service_name: SERVICE.into(),
            function_name: FUNCTION.into(),
            invocation_id: "o4".into(),
            ..Default::default()
        })
        .await
        .expect_err("over the limit");
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert!(
        refused.message().contains("--max-open-per-function"),
        "{}",
        refused.message()
    );
    assert_eq!(
        get(&mut client, "default", FUNCTION, "o4")
            .await
            .expect_err("not stored")
            .code(),
        Code::NotFound
    );
    assert_eq!(
        list_all(&mut client, "default", list_request(FUNCTION))
            .await
            .len(),
        3
    );
    // Other functions and other accounts have their own room.
    invoke(&mut client, "default", "other-function", "elsewhere").await;
    invoke(&mut client, "another-account", FUNCTION, "theirs").await;
    // Once one finishes, there is room again.
    stop(&mut client, "default", FUNCTION, "o1")
        .await
        .expect("stop");
    invoke(&mut client, "default", FUNCTION, "o4").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_over_the_size_limit_is_refused_unread() {
    let server = TestServer::start_with(limited(ServerLimits {
        max_request_bytes: 16 * 1024,
        ..Default::default()
    }))
    .await;
    let mut client = server.client().await;
    let refused = client
        .invoke_function(pb::InvokeFunctionRequest {
            service_name: SERVICE.into(),
            function_name: FUNCTION.into(),
            invocation_id: "big".into(),
            payload: "x".repeat(32 * 1024),
            ..Default::default()
        })
        .await
        .expect_err("too big");
    assert!(
        matches!(refused.code(), Code::OutOfRange | Code::ResourceExhausted),
        "{refused:?}"
    );
    assert!(
        refused.message().contains("too large"),
        "{}",
        refused.message()
    );
    assert_eq!(
        get(&mut client, "default", FUNCTION, "big")
            .await
            .expect_err("not stored")
            .code(),
        Code::NotFound
    );
    invoke(&mut client, "default", FUNCTION, "small").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_streams_per_account_are_limited_and_given_back_when_a_stream_ends() {
    let server = TestServer::start_with(limited(ServerLimits {
        edge: EdgeLimits {
            watches_per_account: 2,
            ..Default::default()
        },
        ..Default::default()
    }))
    .await;
    let mut client = server.client().await;
    invoke(&mut client, "default", FUNCTION, "watched").await;
    let watch = |account: &'static str| {
        as_account(
            account,
            pb::WatchInvocationsRequest {
                service_name: SERVICE.into(),
                function_name: FUNCTION.into(),
                from_sequence: 0,
            },
        )
    };
    let first = client
        .watch_invocations(watch("default"))
        .await
        .expect("1 of 2");
    let _second = client
        .watch_invocations(watch("default"))
        .await
        .expect("2 of 2");
    let refused = client
        .watch_invocations(watch("default"))
        .await
        .expect_err("3 of 2");
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert!(
        refused.message().contains("--max-watches-per-account"),
        "{}",
        refused.message()
    );
    let single = client
        .watch_invocation(pb::WatchInvocationRequest {
            service_name: SERVICE.into(),
            function_name: FUNCTION.into(),
            qualifier: String::new(),
            invocation_id: "watched".into(),
            from_event_id: 0,
        })
        .await
        .expect_err("the single-invocation watch counts too");
    assert_eq!(single.code(), Code::ResourceExhausted);
    client
        .watch_invocations(watch("another-account"))
        .await
        .expect("another account has its own");
    drop(first);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while client.watch_invocations(watch("default")).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slot never came back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_polls_per_account_are_limited() {
    let server = TestServer::start_with(limited(ServerLimits {
        edge: EdgeLimits {
            polls_per_account: 1,
            ..Default::default()
        },
        ..Default::default()
    }))
    .await;
    let mut waiting = server.worker().await;
    let long_poll =
        tokio::spawn(async move { poll(&mut waiting, "default", FUNCTION, 1, 1_500).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut worker = server.worker().await;
    let refused = worker
        .poll_invocations(pb::PollInvocationsRequest {
            functions: vec![pb::FunctionRef {
                service_name: SERVICE.into(),
                function_name: FUNCTION.into(),
                qualifier: String::new(),
            }],
            worker_id: "second".into(),
            max_invocations: 1,
            wait_time_ms: 0,
        })
        .await
        .expect_err("one poll at a time");
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert!(
        refused.message().contains("--max-polls-per-account"),
        "{}",
        refused.message()
    );
    // Another account polls freely; once the long poll returns, so does this one.
    poll(&mut worker, "another-account", FUNCTION, 1, 0).await;
    long_poll.await.expect("long poll");
    poll(&mut worker, "default", FUNCTION, 1, 0).await;
}
