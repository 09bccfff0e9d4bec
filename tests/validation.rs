//! Every input rule: a request that breaks it gets INVALID_ARGUMENT naming the field, and the
//! store is the same afterwards (compared, not assumed).

mod support;

use sai::pb;
use support::*;
use tokio_stream::StreamExt;
use tonic::{Code, Status};
use tonic_types::StatusExt;

/// Everything a caller of account "default" (and "other") can read.
#[derive(Debug, PartialEq)]
struct Snapshot {
    invocations: Vec<pb::StatefulAsyncInvocation>,
    configs: Vec<pb::AsyncInvokeConfig>,
    functions: Vec<pb::AsyncConfigMeta>,
}

async fn snapshot(client: &mut Client) -> Snapshot {
    let mut invocations = Vec::new();
    for function in [FUNCTION, "other-function"] {
        let mut request = list_request(function);
        request.include_payload = true;
        request.limit = 100;
        for listed in list_all(client, "default", request).await {
            invocations.push(
                get(client, "default", function, &listed.invocation_id)
                    .await
                    .expect("get listed"),
            );
        }
    }
    let configs = client
        .list_function_async_invoke_configs(pb::ListFunctionAsyncInvokeConfigsRequest {
            service_name: SERVICE.into(),
            function_name: FUNCTION.into(),
            limit: 100,
            next_token: String::new(),
        })
        .await
        .expect("configs")
        .into_inner()
        .configs;
    let functions = client
        .list_stateful_async_invocation_functions(pb::ListStatefulAsyncInvocationFunctionsRequest {
            limit: 100,
            next_token: String::new(),
        })
        .await
        .expect("functions")
        .into_inner()
        .data;
    Snapshot {
        invocations,
        configs,
        functions,
    }
}

fn invoke_request() -> pb::InvokeFunctionRequest {
    pb::InvokeFunctionRequest {
        service_name: SERVICE.into(),
        function_name: FUNCTION.into(),
        qualifier: String::new(),
        invocation_id: "fresh-id".into(),
        payload: "{}".into(),
    }
}

fn get_request() -> pb::GetStatefulAsyncInvocationRequest {
    pb::GetStatefulAsyncInvocationRequest {
        service_name: SERVICE.into(),
        function_name: FUNCTION.into(),
        qualifier: String::new(),
        invocation_id: "job-1".into(),
    }
}

fn put_request(config: pb::AsyncInvokeConfig) -> pb::PutFunctionAsyncInvokeConfigRequest {
    pb::PutFunctionAsyncInvokeConfigRequest {
        service_name: SERVICE.into(),
        function_name: FUNCTION.into(),
        qualifier: String::new(),
        config: Some(config),
    }
}

fn destination(arn: &str) -> Option<pb::DestinationConfig> {
    Some(pb::DestinationConfig {
        on_success: Some(pb::Destination {
            destination: arn.into(),
        }),
        on_failure: None,
    })
}

fn assert_invalid(case: &str, field: &str, result: Result<(), Status>) {
    let status = result.expect_err(case);
    assert_eq!(status.code(), Code::InvalidArgument, "{case}: {status:?}");
    assert!(
        status.message().contains(field),
        "{case}: message {:?} does not name {field}",
        status.message()
    );
    // The same field, and the rule, for clients that read google.rpc.BadRequest.
    let violations = status
        .get_details_bad_request()
        .unwrap_or_else(|| panic!("{case}: no BadRequest details in {status:?}"))
        .field_violations;
    assert_eq!(violations.len(), 1, "{case}: {violations:?}");
    assert_eq!(violations[0].field, field, "{case}");
    assert!(
        status.message().ends_with(&violations[0].description),
        "{case}: the rule {:?} is the message's end, {:?}",
        violations[0].description,
        status.message()
    );
}

#[tokio::test]
async fn every_rule_is_refused_with_its_field_and_changes_nothing() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    invoke(&mut c, "default", FUNCTION, "job-1").await;
    invoke(&mut c, "default", FUNCTION, "job-2").await;
    c.put_function_async_invoke_config(put_request(pb::AsyncInvokeConfig {
        max_async_retry_attempts: Some(1),
        ..Default::default()
    }))
    .await
    .expect("valid config");
    let before = snapshot(&mut c).await;
    assert_eq!(before.invocations.len(), 2);

    let long = "a".repeat(129);
    let too_big = "x".repeat(128 * 1024 + 1);

    // InvokeFunction.
    let invoke_cases: Vec<(&str, &str, pb::InvokeFunctionRequest)> = vec![
        (
            "empty service",
            "service_name",
            pb::InvokeFunctionRequest {
                service_name: String::new(),
                ..invoke_request()
            },
        ),
        (
            "service starts with digit",
            "service_name",
            pb::InvokeFunctionRequest {
                service_name: "1svc".into(),
                ..invoke_request()
            },
        ),
        (
            "service with dot",
            "service_name",
            pb::InvokeFunctionRequest {
                service_name: "a.b".into(),
                ..invoke_request()
            },
        ),
        (
            "service too long",
            "service_name",
            pb::InvokeFunctionRequest {
                service_name: long.clone(),
                ..invoke_request()
            },
        ),
        (
            "empty function",
            "function_name",
            pb::InvokeFunctionRequest {
                function_name: String::new(),
                ..invoke_request()
            },
        ),
        (
            "function with space",
            "function_name",
            pb::InvokeFunctionRequest {
                function_name: "my fn".into(),
                ..invoke_request()
            },
        ),
        (
            "qualifier with slash",
            "qualifier",
            pb::InvokeFunctionRequest {
                qualifier: "v/1".into(),
                ..invoke_request()
            },
        ),
        (
            "id starts with digit",
            "invocation_id",
            pb::InvokeFunctionRequest {
                invocation_id: "1abc".into(),
                ..invoke_request()
            },
        ),
        (
            "id starts with dash",
            "invocation_id",
            pb::InvokeFunctionRequest {
                invocation_id: "-abc".into(),
                ..invoke_request()
            },
        ),
        (
            "id with dot",
            "invocation_id",
            pb::InvokeFunctionRequest {
                invocation_id: "a.b".into(),
                ..invoke_request()
            },
        ),
        (
            "id non-ascii",
            "invocation_id",
            pb::InvokeFunctionRequest {
                invocation_id: "jöb".into(),
                ..invoke_request()
            },
        ),
        (
            "id too long",
            "invocation_id",
            pb::InvokeFunctionRequest {
                invocation_id: long.clone(),
                ..invoke_request()
            },
        ),
        (
            "payload too big",
            "payload",
            pb::InvokeFunctionRequest {
                payload: too_big.clone(),
                ..invoke_request()
            },
        ),
    ];
    for (case, field, request) in invoke_cases {
        assert_invalid(case, field, c.invoke_function(request).await.map(|_| ()));
    }
    let big = c
        .invoke_function(pb::InvokeFunctionRequest {
            payload: too_big.clone(),
            ..invoke_request()
        })
        .await
        .expect_err("payload too big");
    assert!(big.message().contains("EntityTooLarge"));

    // Get / Stop / Watch share the lookup rules.
    let lookup_cases: Vec<(&str, &str, pb::GetStatefulAsyncInvocationRequest)> = vec![
        (
            "empty id",
            "invocation_id",
            pb::GetStatefulAsyncInvocationRequest {
                invocation_id: String::new(),
                ..get_request()
            },
        ),
        (
            "id with slash",
            "invocation_id",
            pb::GetStatefulAsyncInvocationRequest {
                invocation_id: "a/b".into(),
                ..get_request()
            },
        ),
        (
            "id too long",
            "invocation_id",
            pb::GetStatefulAsyncInvocationRequest {
                invocation_id: long.clone(),
                ..get_request()
            },
        ),
        (
            "bad service",
            "service_name",
            pb::GetStatefulAsyncInvocationRequest {
                service_name: "-s".into(),
                ..get_request()
            },
        ),
        (
            "bad function",
            "function_name",
            pb::GetStatefulAsyncInvocationRequest {
                function_name: String::new(),
                ..get_request()
            },
        ),
        (
            "bad qualifier",
            "qualifier",
            pb::GetStatefulAsyncInvocationRequest {
                qualifier: "1.0".into(),
                ..get_request()
            },
        ),
    ];
    for (case, field, request) in lookup_cases {
        assert_invalid(
            case,
            field,
            c.get_stateful_async_invocation(request.clone())
                .await
                .map(|_| ()),
        );
        let stop = pb::StopStatefulAsyncInvocationRequest {
            service_name: request.service_name.clone(),
            function_name: request.function_name.clone(),
            qualifier: request.qualifier.clone(),
            invocation_id: request.invocation_id.clone(),
        };
        assert_invalid(
            case,
            field,
            c.stop_stateful_async_invocation(stop).await.map(|_| ()),
        );
        let watch = pb::WatchInvocationRequest {
            service_name: request.service_name,
            function_name: request.function_name,
            qualifier: request.qualifier,
            invocation_id: request.invocation_id,
            from_event_id: 0,
        };
        assert_invalid(case, field, c.watch_invocation(watch).await.map(|_| ()));
    }
    assert_invalid(
        "negative from_event_id",
        "from_event_id",
        c.watch_invocation(pb::WatchInvocationRequest {
            service_name: SERVICE.into(),
            function_name: FUNCTION.into(),
            qualifier: String::new(),
            invocation_id: "job-1".into(),
            from_event_id: -1,
        })
        .await
        .map(|_| ()),
    );
    assert_invalid(
        "function without service",
        "function_name",
        c.watch_invocations(pb::WatchInvocationsRequest {
            service_name: String::new(),
            function_name: FUNCTION.into(),
            from_sequence: 0,
            from_oldest: false,
        })
        .await
        .map(|_| ()),
    );
    assert_invalid(
        "bad watch service",
        "service_name",
        c.watch_invocations(pb::WatchInvocationsRequest {
            service_name: "bad name".into(),
            function_name: String::new(),
            from_sequence: 0,
            from_oldest: false,
        })
        .await
        .map(|_| ()),
    );

    // ListStatefulAsyncInvocations.
    let asc_token = {
        let page = c
            .list_stateful_async_invocations(pb::ListStatefulAsyncInvocationsRequest {
                limit: 1,
                sort_order_by_time: pb::SortOrder::Asc as i32,
                ..list_request(FUNCTION)
            })
            .await
            .expect("page")
            .into_inner();
        assert!(!page.next_token.is_empty());
        page.next_token
    };
    let list_cases: Vec<(&str, &str, pb::ListStatefulAsyncInvocationsRequest)> = vec![
        (
            "limit too big",
            "limit",
            pb::ListStatefulAsyncInvocationsRequest {
                limit: 101,
                ..list_request(FUNCTION)
            },
        ),
        (
            "negative limit",
            "limit",
            pb::ListStatefulAsyncInvocationsRequest {
                limit: -1,
                ..list_request(FUNCTION)
            },
        ),
        (
            "begin after end",
            "started_time_begin",
            pb::ListStatefulAsyncInvocationsRequest {
                started_time_begin: 10,
                started_time_end: 5,
                ..list_request(FUNCTION)
            },
        ),
        (
            "negative begin",
            "started_time_begin",
            pb::ListStatefulAsyncInvocationsRequest {
                started_time_begin: -1,
                ..list_request(FUNCTION)
            },
        ),
        (
            "negative end",
            "started_time_end",
            pb::ListStatefulAsyncInvocationsRequest {
                started_time_end: -5,
                ..list_request(FUNCTION)
            },
        ),
        (
            "unknown status",
            "status",
            pb::ListStatefulAsyncInvocationsRequest {
                status: 99,
                ..list_request(FUNCTION)
            },
        ),
        (
            "negative status",
            "status",
            pb::ListStatefulAsyncInvocationsRequest {
                status: -1,
                ..list_request(FUNCTION)
            },
        ),
        (
            "unknown sort order",
            "sort_order_by_time",
            pb::ListStatefulAsyncInvocationsRequest {
                sort_order_by_time: 7,
                ..list_request(FUNCTION)
            },
        ),
        (
            "prefix with dot",
            "invocation_id_prefix",
            pb::ListStatefulAsyncInvocationsRequest {
                invocation_id_prefix: "a.".into(),
                ..list_request(FUNCTION)
            },
        ),
        (
            "prefix too long",
            "invocation_id_prefix",
            pb::ListStatefulAsyncInvocationsRequest {
                invocation_id_prefix: long.clone(),
                ..list_request(FUNCTION)
            },
        ),
        (
            "garbage token",
            "next_token",
            pb::ListStatefulAsyncInvocationsRequest {
                next_token: "not a token!".into(),
                ..list_request(FUNCTION)
            },
        ),
        (
            "token of other order",
            "next_token",
            pb::ListStatefulAsyncInvocationsRequest {
                next_token: asc_token.clone(),
                sort_order_by_time: pb::SortOrder::Desc as i32,
                ..list_request(FUNCTION)
            },
        ),
        (
            "token of another list",
            "next_token",
            pb::ListStatefulAsyncInvocationsRequest {
                next_token: "Zm4xfGF8YnxM".into(),
                ..list_request(FUNCTION)
            },
        ),
        (
            "bad qualifier filter",
            "qualifier",
            pb::ListStatefulAsyncInvocationsRequest {
                qualifier: "-q".into(),
                ..list_request(FUNCTION)
            },
        ),
        (
            "bad service",
            "service_name",
            pb::ListStatefulAsyncInvocationsRequest {
                service_name: String::new(),
                ..list_request(FUNCTION)
            },
        ),
        (
            "token on an empty function",
            "next_token",
            pb::ListStatefulAsyncInvocationsRequest {
                next_token: "garbage".into(),
                ..list_request("empty-function")
            },
        ),
    ];
    for (case, field, request) in list_cases {
        assert_invalid(
            case,
            field,
            c.list_stateful_async_invocations(request).await.map(|_| ()),
        );
    }

    // Catalog lists.
    for limit in [101, -3] {
        assert_invalid(
            "functions limit",
            "limit",
            c.list_stateful_async_invocation_functions(
                pb::ListStatefulAsyncInvocationFunctionsRequest {
                    limit,
                    next_token: String::new(),
                },
            )
            .await
            .map(|_| ()),
        );
        assert_invalid(
            "configs limit",
            "limit",
            c.list_function_async_invoke_configs(pb::ListFunctionAsyncInvokeConfigsRequest {
                service_name: SERVICE.into(),
                function_name: FUNCTION.into(),
                limit,
                next_token: String::new(),
            })
            .await
            .map(|_| ()),
        );
    }
    assert_invalid(
        "functions token",
        "next_token",
        c.list_stateful_async_invocation_functions(
            pb::ListStatefulAsyncInvocationFunctionsRequest {
                limit: 0,
                next_token: asc_token.clone(),
            },
        )
        .await
        .map(|_| ()),
    );
    assert_invalid(
        "configs token",
        "next_token",
        c.list_function_async_invoke_configs(pb::ListFunctionAsyncInvokeConfigsRequest {
            service_name: SERVICE.into(),
            function_name: FUNCTION.into(),
            limit: 0,
            next_token: "%%%".into(),
        })
        .await
        .map(|_| ()),
    );

    // PutFunctionAsyncInvokeConfig.
    let config_cases: Vec<(&str, &str, pb::PutFunctionAsyncInvokeConfigRequest)> = vec![
        (
            "no config",
            "config",
            pb::PutFunctionAsyncInvokeConfigRequest {
                config: None,
                ..put_request(Default::default())
            },
        ),
        (
            "age zero",
            "config.max_async_event_age_in_seconds",
            put_request(pb::AsyncInvokeConfig {
                max_async_event_age_in_seconds: Some(0),
                ..Default::default()
            }),
        ),
        (
            "age too big",
            "config.max_async_event_age_in_seconds",
            put_request(pb::AsyncInvokeConfig {
                max_async_event_age_in_seconds: Some(604_801),
                ..Default::default()
            }),
        ),
        (
            "retries negative",
            "config.max_async_retry_attempts",
            put_request(pb::AsyncInvokeConfig {
                max_async_retry_attempts: Some(-1),
                ..Default::default()
            }),
        ),
        (
            "retries too many",
            "config.max_async_retry_attempts",
            put_request(pb::AsyncInvokeConfig {
                max_async_retry_attempts: Some(9),
                ..Default::default()
            }),
        ),
        (
            "mns arn",
            "config.destination_config.on_success.destination",
            put_request(pb::AsyncInvokeConfig {
                destination_config: destination("acs:mns:::/queues/q/messages"),
                ..Default::default()
            }),
        ),
        (
            "arn without function",
            "config.destination_config.on_success.destination",
            put_request(pb::AsyncInvokeConfig {
                destination_config: destination("acs:fc:::services/s"),
                ..Default::default()
            }),
        ),
        (
            "arn bad service",
            "config.destination_config.on_success.destination",
            put_request(pb::AsyncInvokeConfig {
                destination_config: destination("acs:fc:::services/1s/functions/f"),
                ..Default::default()
            }),
        ),
        (
            "arn of another account",
            "config.destination_config.on_success.destination",
            put_request(pb::AsyncInvokeConfig {
                destination_config: destination("acs:fc::someone-else:services/s/functions/f"),
                ..Default::default()
            }),
        ),
        (
            "failure arn",
            "config.destination_config.on_failure.destination",
            put_request(pb::AsyncInvokeConfig {
                destination_config: Some(pb::DestinationConfig {
                    on_success: None,
                    on_failure: Some(pb::Destination {
                        destination: "nonsense".into(),
                    }),
                }),
                ..Default::default()
            }),
        ),
        (
            "bad qualifier",
            "qualifier",
            pb::PutFunctionAsyncInvokeConfigRequest {
                qualifier: "a b".into(),
                ..put_request(Default::default())
            },
        ),
        (
            "bad function",
            "function_name",
            pb::PutFunctionAsyncInvokeConfigRequest {
                function_name: long.clone(),
                ..put_request(Default::default())
            },
        ),
    ];
    for (case, field, request) in config_cases {
        assert_invalid(
            case,
            field,
            c.put_function_async_invoke_config(request)
                .await
                .map(|_| ()),
        );
    }
    assert_invalid(
        "get config bad service",
        "service_name",
        c.get_function_async_invoke_config(pb::GetFunctionAsyncInvokeConfigRequest {
            service_name: "?".into(),
            function_name: FUNCTION.into(),
            qualifier: String::new(),
        })
        .await
        .map(|_| ()),
    );
    assert_invalid(
        "delete config bad qualifier",
        "qualifier",
        c.delete_function_async_invoke_config(pb::DeleteFunctionAsyncInvokeConfigRequest {
            service_name: SERVICE.into(),
            function_name: FUNCTION.into(),
            qualifier: "*".into(),
        })
        .await
        .map(|_| ()),
    );
    assert_invalid(
        "list configs bad function",
        "function_name",
        c.list_function_async_invoke_configs(pb::ListFunctionAsyncInvokeConfigsRequest {
            service_name: SERVICE.into(),
            function_name: "_x.y".into(),
            limit: 0,
            next_token: String::new(),
        })
        .await
        .map(|_| ()),
    );

    // The account header.
    for account in ["has space", "dot.ted", &long] {
        assert_invalid(
            "bad account",
            "x-fc-account-id",
            c.invoke_function(as_account(account, invoke_request()))
                .await
                .map(|_| ()),
        );
    }

    assert_eq!(
        snapshot(&mut c).await,
        before,
        "a refused request changed the store"
    );
}

#[tokio::test]
async fn an_unknown_resume_point_is_out_of_range_and_a_stream_is_not_silently_cut() {
    let server = TestServer::start_with(sai::server::ServerConfig {
        watch_history: sai::server::WatchHistoryLimit::changes(10),
        ..Default::default()
    })
    .await;
    let mut c = server.client().await;
    for i in 0..30 {
        invoke(&mut c, "default", FUNCTION, &format!("job-{i}")).await;
    }
    let answer = c
        .watch_invocations(pb::WatchInvocationsRequest {
            service_name: SERVICE.into(),
            function_name: FUNCTION.into(),
            from_sequence: 5,
            from_oldest: false,
        })
        .await;
    let status = match answer {
        Err(status) => status,
        Ok(stream) => match stream.into_inner().next().await {
            Some(Err(status)) => status,
            other => panic!("expected OUT_OF_RANGE, got {other:?}"),
        },
    };
    assert_eq!(status.code(), Code::OutOfRange);
    assert!(status.message().contains("oldest"), "{}", status.message());
    assert!(
        status.message().contains("20"),
        "names the oldest kept: {}",
        status.message()
    );
}

#[tokio::test]
async fn large_payloads_shorten_the_kept_history_to_its_bytes_and_older_resumes_are_refused() {
    let server = TestServer::start_with(sai::server::ServerConfig {
        watch_history: sai::server::WatchHistoryLimit {
            changes: 100_000,
            bytes: 1 << 20,
        },
        ..Default::default()
    })
    .await;
    let mut c = server.client().await;
    let payload = "x".repeat(100 * 1024);
    for i in 0..30 {
        c.invoke_function(pb::InvokeFunctionRequest {
            service_name: SERVICE.into(),
            function_name: FUNCTION.into(),
            invocation_id: format!("big-{i:02}"),
            payload: payload.clone(),
            ..Default::default()
        })
        .await
        .expect("invoke");
    }
    let resume_after = |sequence: u64| pb::WatchInvocationsRequest {
        service_name: SERVICE.into(),
        function_name: FUNCTION.into(),
        from_sequence: sequence,
        from_oldest: false,
    };
    // 1 MiB holds at most ten 100 KiB snapshots: changes 1-20 are gone.
    let status = match c.watch_invocations(resume_after(19)).await {
        Err(status) => status,
        Ok(stream) => match stream.into_inner().next().await {
            Some(Err(status)) => status,
            other => panic!("expected OUT_OF_RANGE, got {other:?}"),
        },
    };
    assert_eq!(status.code(), Code::OutOfRange, "{}", status.message());
    assert!(
        status.message().contains("20"),
        "names the oldest kept: {}",
        status.message()
    );
    // The newest changes are still resumable.
    let mut stream = c
        .watch_invocations(resume_after(29))
        .await
        .expect("29 is resumable")
        .into_inner();
    let change = stream
        .next()
        .await
        .expect("the 30th change")
        .expect("not an error");
    assert_eq!(change.sequence, 30);
    let invocation = change.invocation.expect("a snapshot");
    assert_eq!(invocation.invocation_id, "big-29");
}

#[tokio::test]
async fn worker_requests_break_rules_with_their_field_named_and_change_nothing() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let mut w = server.worker().await;
    invoke(&mut c, "default", FUNCTION, "job-1").await;
    let before = snapshot(&mut c).await;

    let target = pb::FunctionRef {
        service_name: SERVICE.into(),
        function_name: FUNCTION.into(),
        qualifier: String::new(),
    };
    let poll = pb::PollInvocationsRequest {
        functions: vec![target.clone()],
        worker_id: "w1".into(),
        max_invocations: 1,
        wait_time_ms: 0,
    };
    let poll_cases: Vec<(&str, &str, pb::PollInvocationsRequest)> = vec![
        (
            "no functions",
            "functions",
            pb::PollInvocationsRequest {
                functions: vec![],
                ..poll.clone()
            },
        ),
        (
            "too many functions",
            "functions",
            pb::PollInvocationsRequest {
                functions: vec![target.clone(); 101],
                ..poll.clone()
            },
        ),
        (
            "bad function",
            "functions[1].function_name",
            pb::PollInvocationsRequest {
                functions: vec![
                    target.clone(),
                    pb::FunctionRef {
                        function_name: "9".into(),
                        ..target.clone()
                    },
                ],
                ..poll.clone()
            },
        ),
        (
            "bad qualifier",
            "functions[0].qualifier",
            pb::PollInvocationsRequest {
                functions: vec![pb::FunctionRef {
                    qualifier: "a b".into(),
                    ..target.clone()
                }],
                ..poll.clone()
            },
        ),
        (
            "empty worker",
            "worker_id",
            pb::PollInvocationsRequest {
                worker_id: String::new(),
                ..poll.clone()
            },
        ),
        (
            "control char worker",
            "worker_id",
            pb::PollInvocationsRequest {
                worker_id: "w\n1".into(),
                ..poll.clone()
            },
        ),
        (
            "too many invocations",
            "max_invocations",
            pb::PollInvocationsRequest {
                max_invocations: 101,
                ..poll.clone()
            },
        ),
        (
            "negative invocations",
            "max_invocations",
            pb::PollInvocationsRequest {
                max_invocations: -1,
                ..poll.clone()
            },
        ),
        (
            "wait too long",
            "wait_time_ms",
            pb::PollInvocationsRequest {
                wait_time_ms: 30_001,
                ..poll.clone()
            },
        ),
        (
            "negative wait",
            "wait_time_ms",
            pb::PollInvocationsRequest {
                wait_time_ms: -1,
                ..poll.clone()
            },
        ),
    ];
    for (case, field, request) in poll_cases {
        assert_invalid(case, field, w.poll_invocations(request).await.map(|_| ()));
    }
    assert_invalid(
        "empty token",
        "lease_token",
        w.heartbeat_invocation(pb::HeartbeatInvocationRequest {
            lease_token: String::new(),
        })
        .await
        .map(|_| ()),
    );
    let complete_cases: Vec<(&str, &str, pb::CompleteInvocationRequest)> = vec![
        (
            "no outcome",
            "outcome",
            pb::CompleteInvocationRequest {
                lease_token: "lt1.x".into(),
                outcome: None,
            },
        ),
        (
            "empty token",
            "lease_token",
            pb::CompleteInvocationRequest {
                lease_token: String::new(),
                outcome: Some(success("x")),
            },
        ),
        (
            "huge token",
            "lease_token",
            pb::CompleteInvocationRequest {
                lease_token: "t".repeat(300),
                outcome: Some(success("x")),
            },
        ),
        (
            "return payload too big",
            "success.return_payload",
            pb::CompleteInvocationRequest {
                lease_token: "lt1.x".into(),
                outcome: Some(success(&"x".repeat(1024 * 1024 + 1))),
            },
        ),
        (
            "error too big",
            "failure.error_message",
            pb::CompleteInvocationRequest {
                lease_token: "lt1.x".into(),
                outcome: Some(failure(&"e".repeat(64 * 1024 + 1))),
            },
        ),
    ];
    for (case, field, request) in complete_cases {
        assert_invalid(
            case,
            field,
            w.complete_invocation(request).await.map(|_| ()),
        );
    }
    assert_eq!(
        snapshot(&mut c).await,
        before,
        "a refused worker request changed the store"
    );
}
