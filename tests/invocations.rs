//! Every RPC of StatefulAsyncInvocationService round-trips through the generated client, with
//! the seeds' example values, and lists page correctly while new invocations keep arriving.

mod support;

use std::collections::{BTreeSet, HashMap, HashSet};

use sai::pb;
use support::*;
use tonic::Code;

const SEED_ID: &str = "e026ae92-61e5-472f-b32d-1c9e3c4e1234";

#[tokio::test]
async fn invoke_get_list_stop_round_trip_in_fc_shape() {
    let server = TestServer::start().await;
    let mut client = server.client().await;

    let mut request = tonic::Request::new(pb::InvokeFunctionRequest {
        service_name: SERVICE.into(),
        function_name: FUNCTION.into(),
        qualifier: String::new(),
        invocation_id: SEED_ID.into(),
        payload: r#"{"key":"value"}"#.into(),
    });
    request
        .metadata_mut()
        .insert("x-fc-trace-id", "trace-42".parse().expect("ascii"));
    let answer = client.invoke_function(request).await.expect("invoke");
    let header_request_id = answer
        .metadata()
        .get("x-fc-request-id")
        .expect("x-fc-request-id on every answer")
        .to_str()
        .expect("ascii")
        .to_string();
    assert_eq!(
        answer
            .metadata()
            .get("x-fc-trace-id")
            .map(|v| v.to_str().ok()),
        Some(Some("trace-42")),
        "trace id is echoed"
    );
    let invoked = answer.into_inner();
    assert_eq!(invoked.invocation_id, SEED_ID);
    assert_eq!(invoked.request_id, header_request_id);

    let got = get(&mut client, "default", FUNCTION, SEED_ID)
        .await
        .expect("get");
    assert_eq!(got.service_name, SERVICE);
    assert_eq!(got.function_name, FUNCTION);
    assert_eq!(got.qualifier, "LATEST");
    assert_eq!(got.invocation_id, SEED_ID);
    assert_eq!(status_of(&got), pb::InvocationStatus::Enqueued);
    assert_eq!(got.invocation_payload, r#"{"key":"value"}"#);
    assert_eq!(got.request_id, header_request_id);
    assert_eq!(got.end_time, 0);
    assert!(got.started_time > 1_600_000_000_000);
    assert_eq!(got.events.len(), 1);
    assert_eq!(got.events[0].event_id, 1);
    assert_eq!(got.events[0].status, pb::InvocationStatus::Enqueued as i32);
    assert_eq!(got.events[0].timestamp, got.started_time);
    let detail: serde_json::Value =
        serde_json::from_str(&got.events[0].event_detail).expect("event_detail is JSON");
    assert_eq!(detail["requestId"], header_request_id.as_str());

    // A generated id is a UUID v7 of the started time, and can be looked up although it may
    // start with a digit.
    let generated = invoke(&mut client, "default", FUNCTION, "").await;
    assert_eq!(generated.len(), 36);
    let found = get(&mut client, "default", FUNCTION, &generated)
        .await
        .expect("a generated id is found");
    assert_eq!(
        sai::model::id::started_time(&generated),
        Some(found.started_time)
    );

    let duplicate = client
        .invoke_function(pb::InvokeFunctionRequest {
            service_name: SERVICE.into(),
            function_name: FUNCTION.into(),
            invocation_id: SEED_ID.into(),
            ..Default::default()
        })
        .await
        .expect_err("duplicate id");
    assert_eq!(duplicate.code(), Code::AlreadyExists);
    assert!(duplicate
        .message()
        .contains("StatefulAsyncInvocationAlreadyExists"));
    assert_eq!(
        duplicate
            .metadata()
            .get("x-fc-error-code")
            .and_then(|v| v.to_str().ok()),
        Some("StatefulAsyncInvocationAlreadyExists")
    );

    // List: without payload by default, with it on request; events are never in lists.
    let listed = list_all(&mut client, "default", list_request(FUNCTION)).await;
    assert_eq!(listed.len(), 2);
    assert!(listed
        .iter()
        .all(|i| i.invocation_payload.is_empty() && i.events.is_empty()));
    let mut with_payload = list_request(FUNCTION);
    with_payload.include_payload = true;
    with_payload.invocation_id_prefix = "e026".into();
    let listed = list_all(&mut client, "default", with_payload).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].invocation_payload, r#"{"key":"value"}"#);

    // Stop a queued invocation: Stopped at once, with an end time and event 2.
    let stopped = stop(&mut client, "default", FUNCTION, SEED_ID)
        .await
        .expect("stop");
    assert_eq!(status_of(&stopped), pb::InvocationStatus::Stopped);
    let got = get(&mut client, "default", FUNCTION, SEED_ID)
        .await
        .expect("get");
    assert_eq!(got.events.len(), 2);
    assert_eq!(got.events[1].event_id, 2);
    assert_eq!(got.events[1].status, pb::InvocationStatus::Stopped as i32);
    assert!(got.end_time >= got.started_time);

    let again = stop(&mut client, "default", FUNCTION, SEED_ID)
        .await
        .expect_err("stop a terminal invocation");
    assert_eq!(again.code(), Code::FailedPrecondition);
    assert!(again
        .message()
        .contains("StatefulAsyncInvocationAlreadyCompleted"));

    let missing = get(&mut client, "default", FUNCTION, "nope")
        .await
        .expect_err("unknown id");
    assert_eq!(missing.code(), Code::NotFound);
    assert!(missing
        .message()
        .contains("StatefulAsyncInvocationNotFound"));

    // A qualifier given on Get must match the invocation's.
    let wrong_qualifier = client
        .get_stateful_async_invocation(pb::GetStatefulAsyncInvocationRequest {
            service_name: SERVICE.into(),
            function_name: FUNCTION.into(),
            qualifier: "prod".into(),
            invocation_id: SEED_ID.into(),
        })
        .await
        .expect_err("other qualifier");
    assert_eq!(wrong_qualifier.code(), Code::NotFound);
}

#[tokio::test]
async fn configs_and_functions_round_trip() {
    let server = TestServer::start().await;
    let mut client = server.client().await;

    let missing = client
        .get_function_async_invoke_config(pb::GetFunctionAsyncInvokeConfigRequest {
            service_name: SERVICE.into(),
            function_name: FUNCTION.into(),
            qualifier: String::new(),
        })
        .await
        .expect_err("no config yet");
    assert_eq!(missing.code(), Code::NotFound);
    assert!(missing.message().contains("AsyncConfigNotExists"));

    let put = client
        .put_function_async_invoke_config(pb::PutFunctionAsyncInvokeConfigRequest {
            service_name: SERVICE.into(),
            function_name: FUNCTION.into(),
            qualifier: String::new(),
            config: Some(pb::AsyncInvokeConfig {
                max_async_event_age_in_seconds: Some(300),
                max_async_retry_attempts: Some(2),
                destination_config: Some(pb::DestinationConfig {
                    on_success: Some(pb::Destination {
                        destination:
                            "acs:fc:cn-shanghai::services/demo-service.LATEST/functions/on-ok"
                                .into(),
                    }),
                    on_failure: Some(pb::Destination {
                        destination: "acs:fc:::services/demo-service/functions/on-fail".into(),
                    }),
                }),
                stateful_invocation: Some(true),
                ..Default::default()
            }),
        })
        .await
        .expect("put config")
        .into_inner();
    assert_eq!(put.service, SERVICE);
    assert_eq!(put.function, FUNCTION);
    assert_eq!(put.qualifier, "LATEST");
    assert_eq!(put.max_async_event_age_in_seconds, Some(300));
    assert_eq!(put.max_async_retry_attempts, Some(2));
    assert_eq!(put.stateful_invocation, Some(true));
    assert!(put.created_time.ends_with('Z') && put.created_time.contains('T'));
    assert_eq!(put.created_time, put.last_modified_time);

    let got = client
        .get_function_async_invoke_config(pb::GetFunctionAsyncInvokeConfigRequest {
            service_name: SERVICE.into(),
            function_name: FUNCTION.into(),
            qualifier: "LATEST".into(),
        })
        .await
        .expect("get config")
        .into_inner();
    assert_eq!(got, put);

    // A second qualifier, with stateful invocation off: configured, but not a listed function.
    client
        .put_function_async_invoke_config(pb::PutFunctionAsyncInvokeConfigRequest {
            service_name: SERVICE.into(),
            function_name: FUNCTION.into(),
            qualifier: "prod".into(),
            config: Some(pb::AsyncInvokeConfig {
                stateful_invocation: Some(false),
                ..Default::default()
            }),
        })
        .await
        .expect("put prod config");
    let configs = client
        .list_function_async_invoke_configs(pb::ListFunctionAsyncInvokeConfigsRequest {
            service_name: SERVICE.into(),
            function_name: FUNCTION.into(),
            limit: 1,
            next_token: String::new(),
        })
        .await
        .expect("list configs")
        .into_inner();
    assert_eq!(configs.configs.len(), 1);
    assert_eq!(configs.configs[0].qualifier, "LATEST");
    assert!(!configs.next_token.is_empty());
    let rest = client
        .list_function_async_invoke_configs(pb::ListFunctionAsyncInvokeConfigsRequest {
            service_name: SERVICE.into(),
            function_name: FUNCTION.into(),
            limit: 1,
            next_token: configs.next_token,
        })
        .await
        .expect("list configs page 2")
        .into_inner();
    assert_eq!(rest.configs.len(), 1);
    assert_eq!(rest.configs[0].qualifier, "prod");
    assert!(rest.next_token.is_empty());

    // Functions: invoked or configured, unless stateful invocation is off.
    invoke(&mut client, "default", "other-function", "job-1").await;
    let functions = client
        .list_stateful_async_invocation_functions(pb::ListStatefulAsyncInvocationFunctionsRequest {
            limit: 0,
            next_token: String::new(),
        })
        .await
        .expect("list functions")
        .into_inner();
    let names: Vec<(String, String, String)> = functions
        .data
        .iter()
        .map(|f| {
            (
                f.service_name.clone(),
                f.function_name.clone(),
                f.qualifier.clone(),
            )
        })
        .collect();
    assert_eq!(
        names,
        vec![
            (SERVICE.into(), FUNCTION.into(), "LATEST".into()),
            (SERVICE.into(), "other-function".into(), "LATEST".into()),
        ]
    );
    assert!(functions.next_token.is_empty());

    // Put again keeps created_time; delete removes; a second delete is NOT_FOUND.
    server.advance(std::time::Duration::from_secs(1));
    let replaced = client
        .put_function_async_invoke_config(pb::PutFunctionAsyncInvokeConfigRequest {
            service_name: SERVICE.into(),
            function_name: FUNCTION.into(),
            qualifier: String::new(),
            config: Some(pb::AsyncInvokeConfig::default()),
        })
        .await
        .expect("replace config")
        .into_inner();
    assert_eq!(replaced.created_time, put.created_time);
    assert_ne!(replaced.last_modified_time, put.last_modified_time);
    assert_eq!(
        replaced.max_async_retry_attempts, None,
        "absent stays absent"
    );
    assert_eq!(replaced.destination_config, None);
    let delete = pb::DeleteFunctionAsyncInvokeConfigRequest {
        service_name: SERVICE.into(),
        function_name: FUNCTION.into(),
        qualifier: String::new(),
    };
    client
        .delete_function_async_invoke_config(delete.clone())
        .await
        .expect("delete");
    let gone = client
        .delete_function_async_invoke_config(delete)
        .await
        .expect_err("delete twice");
    assert_eq!(gone.code(), Code::NotFound);
}

/// What a list page must hold: the ids that existed at the first call and match, in order.
struct Expectation {
    request: pb::ListStatefulAsyncInvocationsRequest,
    matches: Box<dyn Fn(&pb::StatefulAsyncInvocation) -> bool>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_of_seven_never_repeat_or_skip_while_inserts_continue() {
    let server = TestServer::start().await;
    let mut client = server.client().await;

    for i in 0..1_000 {
        let id = if i % 3 == 0 {
            format!("odd-{i:04}")
        } else {
            format!("job-{i:04}")
        };
        invoke(&mut client, "default", FUNCTION, &id).await;
        if i % 5 == 0 {
            stop(&mut client, "default", FUNCTION, &id)
                .await
                .expect("stop");
        }
    }
    let everything = {
        let mut request = list_request(FUNCTION);
        request.limit = 100;
        list_all(&mut client, "default", request).await
    };
    assert_eq!(everything.len(), 1_000);
    let by_id: HashMap<String, pb::StatefulAsyncInvocation> = everything
        .into_iter()
        .map(|i| (i.invocation_id.clone(), i))
        .collect();
    let begin = by_id["job-0200"].started_time;
    let end = by_id["job-0700"].started_time;

    // Keep inserting into the same function while the paging runs (bounded, so that an
    // ascending list can reach its end).
    let inserter = {
        let mut client = server.client().await;
        tokio::spawn(async move {
            for n in 0..3_000 {
                invoke(&mut client, "default", FUNCTION, &format!("late-{n:06}")).await;
                tokio::time::sleep(std::time::Duration::from_micros(200)).await;
            }
        })
    };

    let status_stopped = pb::InvocationStatus::Stopped as i32;
    let mut expectations = Vec::new();
    for order in [
        pb::SortOrder::Asc,
        pb::SortOrder::Desc,
        pb::SortOrder::Unspecified,
    ] {
        let base = pb::ListStatefulAsyncInvocationsRequest {
            limit: 7,
            sort_order_by_time: order as i32,
            ..list_request(FUNCTION)
        };
        expectations.push(Expectation {
            request: base.clone(),
            matches: Box::new(|_| true),
        });
        expectations.push(Expectation {
            request: pb::ListStatefulAsyncInvocationsRequest {
                invocation_id_prefix: "job-01".into(),
                ..base.clone()
            },
            matches: Box::new(|i| i.invocation_id.starts_with("job-01")),
        });
        expectations.push(Expectation {
            request: pb::ListStatefulAsyncInvocationsRequest {
                status: status_stopped,
                ..base.clone()
            },
            matches: Box::new(move |i| i.status == status_stopped),
        });
        expectations.push(Expectation {
            request: pb::ListStatefulAsyncInvocationsRequest {
                started_time_begin: begin,
                started_time_end: end,
                invocation_id_prefix: "job-".into(),
                ..base.clone()
            },
            matches: Box::new(move |i| {
                i.started_time >= begin
                    && i.started_time <= end
                    && i.invocation_id.starts_with("job-")
            }),
        });
    }

    for expectation in expectations {
        let order = expectation.request.sort_order_by_time;
        let pages = list_all(&mut client, "default", expectation.request.clone()).await;
        let ids: Vec<&str> = pages.iter().map(|i| i.invocation_id.as_str()).collect();
        let unique: HashSet<&str> = ids.iter().copied().collect();
        assert_eq!(unique.len(), ids.len(), "a page repeated a record");
        for invocation in &pages {
            assert!(
                (expectation.matches)(invocation),
                "{} does not match the filter",
                invocation.invocation_id
            );
        }
        let expected: BTreeSet<&str> = by_id
            .values()
            .filter(|i| (expectation.matches)(i))
            .map(|i| i.invocation_id.as_str())
            .collect();
        let missing: Vec<&&str> = expected.iter().filter(|id| !unique.contains(*id)).collect();
        assert!(missing.is_empty(), "skipped records: {missing:?}");
        let keys: Vec<(i64, &str)> = pages
            .iter()
            .map(|i| (i.started_time, i.invocation_id.as_str()))
            .collect();
        let mut sorted = keys.clone();
        sorted.sort();
        if order != pb::SortOrder::Asc as i32 {
            sorted.reverse();
        }
        assert_eq!(keys, sorted, "order {order}");
    }
    inserter.abort();
}

fn batch_entry(function: &str, id: &str) -> pb::InvokeFunctionRequest {
    pb::InvokeFunctionRequest {
        service_name: SERVICE.into(),
        function_name: function.into(),
        qualifier: String::new(),
        invocation_id: id.into(),
        payload: format!("{{\"batch\":\"{id}\"}}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invoke_functions_answers_every_entry_and_stores_the_accepted_durably() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start_with(on_disk(dir.path())).await;
    let mut client = server.client().await;
    invoke(&mut client, "default", FUNCTION, "taken").await;

    let answer = client
        .invoke_functions(pb::InvokeFunctionsRequest {
            invocations: vec![
                batch_entry(FUNCTION, "b-1"),
                batch_entry("not a name!", "b-2"),
                batch_entry(FUNCTION, "taken"),
                batch_entry(FUNCTION, "b-1"),
                batch_entry(FUNCTION, ""),
            ],
        })
        .await
        .expect("a batch with bad entries is still answered")
        .into_inner();
    let codes: Vec<Code> = answer.results.iter().map(|r| Code::from(r.code)).collect();
    assert_eq!(
        codes,
        [
            Code::Ok,
            Code::InvalidArgument,
            Code::AlreadyExists,
            Code::AlreadyExists,
            Code::Ok
        ]
    );
    assert!(
        answer.results[1].message.contains("function_name"),
        "{}",
        answer.results[1].message
    );
    assert_eq!(answer.results[0].invocation_id, "b-1");
    let generated = answer.results[4].invocation_id.clone();
    assert!(!generated.is_empty());
    assert!(!answer.request_id.is_empty());

    for id in ["b-1", generated.as_str()] {
        let stored = get(&mut client, "default", FUNCTION, id)
            .await
            .expect("accepted entries are stored");
        assert_eq!(status_of(&stored), pb::InvocationStatus::Enqueued);
        assert_eq!(stored.request_id, answer.request_id);
        assert_eq!(stored.events.len(), 1);
    }
    // The entry that lost to an earlier one of the same call left the first untouched.
    let first = get(&mut client, "default", FUNCTION, "b-1")
        .await
        .expect("b-1");
    assert_eq!(first.invocation_payload, "{\"batch\":\"b-1\"}");
    // Accepted entries are queued like any other.
    let mut worker = server.worker().await;
    let leased: HashSet<String> = poll(&mut worker, "default", FUNCTION, 10, 500)
        .await
        .into_iter()
        .filter_map(|lease| lease.invocation.map(|i| i.invocation_id))
        .collect();
    assert_eq!(
        leased,
        HashSet::from(["taken".to_string(), "b-1".to_string(), generated.clone()])
    );
    server.stop().await.expect("clean stop");

    let server = TestServer::start_with(on_disk(dir.path())).await;
    let mut client = server.client().await;
    for id in ["b-1", generated.as_str()] {
        get(&mut client, "default", FUNCTION, id)
            .await
            .expect("accepted entries survive a restart");
    }
    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn invoke_functions_refuses_an_empty_or_oversized_batch_and_stores_nothing() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    for count in [0, 101] {
        let refused = client
            .invoke_functions(pb::InvokeFunctionsRequest {
                invocations: (0..count)
                    .map(|i| batch_entry(FUNCTION, &format!("over-{i}")))
                    .collect(),
            })
            .await
            .expect_err("refused");
        assert_eq!(refused.code(), Code::InvalidArgument);
        assert!(
            refused.message().contains("invocations") && refused.message().contains("1 to 100"),
            "{}",
            refused.message()
        );
    }
    let listed = list_all(&mut client, "default", list_request(FUNCTION)).await;
    assert!(listed.is_empty(), "nothing was stored: {listed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invoke_function_stream_answers_each_message_in_order_and_stores_the_accepted_durably() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start_with(on_disk(dir.path())).await;
    let mut client = server.client().await;
    let (send, outgoing) = tokio::sync::mpsc::channel(512);
    let answer = client
        .invoke_function_stream(tokio_stream::wrappers::ReceiverStream::new(outgoing))
        .await
        .expect("stream opened");
    let request_id = answer
        .metadata()
        .get("x-fc-request-id")
        .and_then(|v| v.to_str().ok())
        .expect("request id header")
        .to_string();
    let mut results = answer.into_inner();

    // A quiet stream answers a message without waiting for more.
    send.send(batch_entry(FUNCTION, "s-0")).await.expect("send");
    let first = results.message().await.expect("ok").expect("a result");
    assert_eq!(
        (Code::from(first.code), first.invocation_id.as_str()),
        (Code::Ok, "s-0")
    );

    // A busy one: 249 more sent at once, answered in order, with per-message errors.
    let mut expected = vec![(Code::Ok, "s-0".to_string())];
    for i in 1..250 {
        let entry = match i {
            3 => batch_entry("not a name!", "s-3"),
            120 => batch_entry(FUNCTION, "s-0"),
            _ => batch_entry(FUNCTION, &format!("s-{i}")),
        };
        // Each result names the id its message asked for, accepted or not.
        expected.push(match i {
            3 => (Code::InvalidArgument, "s-3".to_string()),
            120 => (Code::AlreadyExists, "s-0".to_string()),
            _ => (Code::Ok, format!("s-{i}")),
        });
        send.send(entry).await.expect("send");
    }
    drop(send);
    let mut answered = vec![(Code::from(first.code), first.invocation_id)];
    while let Some(result) = results.message().await.expect("no stream error") {
        if result.code == Code::InvalidArgument as i32 {
            assert!(
                result.message.contains("function_name"),
                "{}",
                result.message
            );
            assert_eq!(result.error_code, "InvalidArgument");
        }
        if result.code == Code::AlreadyExists as i32 {
            assert_eq!(result.error_code, "StatefulAsyncInvocationAlreadyExists");
        }
        if result.code == 0 {
            assert_eq!(result.error_code, "");
        }
        answered.push((Code::from(result.code), result.invocation_id));
    }
    assert_eq!(
        answered, expected,
        "one result per message, in the order sent"
    );

    let stored = list_all(&mut client, "default", list_request(FUNCTION)).await;
    assert_eq!(stored.len(), 248);
    assert!(stored.iter().all(|i| i.request_id == request_id));
    server.stop().await.expect("clean stop");

    let server = TestServer::start_with(on_disk(dir.path())).await;
    let mut client = server.client().await;
    let stored = list_all(&mut client, "default", list_request(FUNCTION)).await;
    assert_eq!(stored.len(), 248, "accepted messages survive a restart");
    let mut worker = server.worker().await;
    let leased = poll(&mut worker, "default", FUNCTION, 32, 500).await;
    assert_eq!(
        leased.len(),
        32,
        "accepted messages are queued like any other"
    );
    server.stop().await.expect("clean stop");
}

/// An open InvokeFunctionStream whose first message, `first_id`, has been answered as
/// accepted: the sender for more messages and the results still to come.
async fn stream_with_one_accepted(
    client: &mut Client,
    first_id: &str,
) -> (
    tokio::sync::mpsc::Sender<pb::InvokeFunctionRequest>,
    tonic::Streaming<pb::InvokeFunctionResult>,
) {
    let (send, outgoing) = tokio::sync::mpsc::channel(8);
    let mut results = client
        .invoke_function_stream(tokio_stream::wrappers::ReceiverStream::new(outgoing))
        .await
        .expect("stream opened")
        .into_inner();
    send.send(batch_entry(FUNCTION, first_id))
        .await
        .expect("send");
    let accepted = results.message().await.expect("ok").expect("a result");
    assert_eq!(
        (Code::from(accepted.code), accepted.invocation_id.as_str()),
        (Code::Ok, first_id)
    );
    (send, results)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_an_open_invoke_stream_after_answering_what_it_accepted() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let (send, mut results) = stream_with_one_accepted(&mut client, "before-stop").await;

    // The producer keeps its side open; stopping must not wait for it.
    let stopped = tokio::time::timeout(std::time::Duration::from_secs(10), server.stop()).await;
    assert!(matches!(stopped, Ok(Ok(()))), "serve returned: {stopped:?}");
    let ended = results
        .message()
        .await
        .expect_err("the stream ends with a status");
    assert_eq!(ended.code(), Code::Unavailable, "{ended:?}");
    drop(send);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_stream_message_ends_the_stream_after_the_earlier_results() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let (send, mut results) = stream_with_one_accepted(&mut client, "fits").await;

    // Past the server's 2 MiB message limit: the message cannot even be read.
    let mut oversized = batch_entry(FUNCTION, "too-big");
    oversized.payload = "x".repeat(3 * 1024 * 1024);
    send.send(oversized).await.expect("send");
    // The server may already have ended the call, and tonic dropped the request stream with
    // it: then this send is refused, which is as good as this message being ignored.
    let _ = send.send(batch_entry(FUNCTION, "after")).await;
    let ended = results
        .message()
        .await
        .expect_err("the stream ends with the error");
    // gRPC's code for a size limit, with the code sai gives an oversized payload.
    assert_eq!(ended.code(), Code::ResourceExhausted, "{ended:?}");
    assert_eq!(
        ended
            .metadata()
            .get("x-fc-error-code")
            .and_then(|v| v.to_str().ok()),
        Some("EntityTooLarge")
    );
    drop(send);

    let stored: Vec<String> = list_all(&mut client, "default", list_request(FUNCTION))
        .await
        .into_iter()
        .map(|i| i.invocation_id)
        .collect();
    assert_eq!(
        stored,
        ["fits"],
        "nothing after the broken message was accepted"
    );
}
