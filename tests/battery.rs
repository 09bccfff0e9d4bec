//! The bad-input battery: hundreds of malformed requests across every RPC, typed (bad names,
//! ids, numbers, enums, tokens, sizes, metadata) and raw (truncated and garbage gRPC frames
//! sent over HTTP/2 by hand). Every one gets a gRPC error (never OK, never UNKNOWN or
//! INTERNAL), the server keeps serving, and nothing stored changes.

mod support;

use bytes::Bytes;
use sai::pb;
use support::*;
use tonic::{Code, Status};

type Outcome = Result<(), Status>;

/// Everything the two accounts can read, to compare before and after.
async fn snapshot(client: &mut Client) -> Vec<String> {
    let mut seen = Vec::new();
    for account in ["default", "other"] {
        for function in [FUNCTION, "other-function"] {
            let mut request = list_request(function);
            request.include_payload = true;
            for listed in list_all(client, account, request).await {
                let full = get(client, account, function, &listed.invocation_id)
                    .await
                    .expect("get listed");
                seen.push(format!("{account}:{full:?}"));
            }
        }
        let functions = client
            .list_stateful_async_invocation_functions(as_account(
                account,
                pb::ListStatefulAsyncInvocationFunctionsRequest {
                    limit: 100,
                    next_token: String::new(),
                },
            ))
            .await
            .expect("functions")
            .into_inner();
        seen.push(format!("{account}:{functions:?}"));
    }
    seen
}

fn names() -> Vec<String> {
    vec![
        String::new(),
        " ".into(),
        "a".repeat(129),
        "bad/name".into(),
        "has space".into(),
        "nul\u{0}byte".into(),
        "ünïcödé".into(),
        "-leading-dash".into(),
        "x".repeat(100_000),
    ]
}

fn ids() -> Vec<String> {
    vec![
        String::new(),
        "x".repeat(129),
        "has space".into(),
        "../etc/passwd".into(),
        "pipe|in|id".into(),
        "\u{7f}".into(),
        "id\n".into(),
    ]
}

fn tokens() -> Vec<String> {
    vec![
        "!!!".into(),
        "aGVsbG8".into(),
        "x".repeat(10_000),
        "ia1|1|x".into(),
        "\u{0}".into(),
    ]
}

fn check(case: &str, outcome: Outcome) -> usize {
    let status = match outcome {
        Ok(()) => panic!("{case}: a malformed request was accepted"),
        Err(status) => status,
    };
    assert!(
        !matches!(status.code(), Code::Ok | Code::Unknown | Code::Internal),
        "{case}: {status:?}"
    );
    assert!(
        !status.message().is_empty(),
        "{case}: an error without a message"
    );
    assert!(
        status.metadata().get("x-fc-error-code").is_some(),
        "{case}: an error without an x-fc-error-code: {status:?}"
    );
    1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_malformed_requests_are_refused_cleanly_and_change_nothing() {
    // The held lease must outlast the whole battery (a slow CI machine takes ~0.5 s for it),
    // so that the snapshot after it differs only if a refused request changed something.
    let mut config = fast_engine();
    config.engine.lease_timeout = std::time::Duration::from_secs(60);
    let server = TestServer::start_with(config).await;
    let mut client = server.client().await;
    let mut worker = server.worker().await;
    invoke(&mut client, "default", FUNCTION, "existing").await;
    invoke(&mut client, "other", "other-function", "theirs").await;
    let lease = poll(&mut worker, "default", FUNCTION, 1, 1_000)
        .await
        .remove(0);
    let before = snapshot(&mut client).await;
    let mut count = 0;

    // InvokeFunction: every field.
    for name in names() {
        let mut r = pb::InvokeFunctionRequest {
            service_name: name.clone(),
            function_name: FUNCTION.into(),
            invocation_id: "fresh".into(),
            ..Default::default()
        };
        count += check(
            "invoke service",
            client.invoke_function(r.clone()).await.map(drop),
        );
        r.service_name = SERVICE.into();
        r.function_name = name.clone();
        count += check(
            "invoke function",
            client.invoke_function(r.clone()).await.map(drop),
        );
        r.function_name = FUNCTION.into();
        r.qualifier = format!("{name}!");
        count += check(
            "invoke qualifier",
            client.invoke_function(r).await.map(drop),
        );
    }
    // InvokeFunctions: the same bad fields as entries of batches (each answered in its own
    // result, none stored), and batches of the wrong size refused whole.
    let bad_entries: Vec<pb::InvokeFunctionRequest> = names()
        .into_iter()
        .flat_map(|name| {
            let good = pb::InvokeFunctionRequest {
                service_name: SERVICE.into(),
                function_name: FUNCTION.into(),
                invocation_id: "fresh".into(),
                ..Default::default()
            };
            [
                pb::InvokeFunctionRequest {
                    service_name: name.clone(),
                    ..good.clone()
                },
                pb::InvokeFunctionRequest {
                    function_name: name.clone(),
                    ..good.clone()
                },
                pb::InvokeFunctionRequest {
                    qualifier: format!("{name}!"),
                    ..good
                },
            ]
        })
        .chain([pb::InvokeFunctionRequest {
            service_name: SERVICE.into(),
            function_name: FUNCTION.into(),
            invocation_id: "existing".into(),
            ..Default::default()
        }])
        .collect();
    for batch in bad_entries.chunks(100) {
        let results = client
            .invoke_functions(pb::InvokeFunctionsRequest {
                invocations: batch.to_vec(),
            })
            .await
            .expect("a batch of bad entries is answered entry by entry")
            .into_inner()
            .results;
        assert_eq!(results.len(), batch.len());
        for (entry, result) in batch.iter().zip(&results) {
            // The entry's result, as the status a single InvokeFunction would answer.
            let mut status = tonic::Status::new(Code::from(result.code), result.message.clone());
            if let Ok(code) = result.error_code.parse() {
                status.metadata_mut().insert("x-fc-error-code", code);
            }
            assert_eq!(
                result.invocation_id, entry.invocation_id,
                "the asked id is echoed"
            );
            count += check(&format!("invoke batch entry {entry:?}"), Err(status));
        }
    }
    for size in [0, 101] {
        let refused = client
            .invoke_functions(pb::InvokeFunctionsRequest {
                invocations: vec![bad_entries[0].clone(); size],
            })
            .await
            .map(drop);
        count += check("invoke batch size", refused);
    }
    // (An empty id is not among them: it asks the server to make one.)
    for id in ids()
        .into_iter()
        .filter(|id| !id.is_empty())
        .chain(["existing".to_string(), "9starts-with-digit".into()])
    {
        let r = pb::InvokeFunctionRequest {
            service_name: SERVICE.into(),
            function_name: FUNCTION.into(),
            invocation_id: id.clone(),
            ..Default::default()
        };
        count += check(
            &format!("invoke id {id:?}"),
            client.invoke_function(r).await.map(drop),
        );
    }
    for size in [128 * 1024 + 1, 1024 * 1024] {
        let r = pb::InvokeFunctionRequest {
            service_name: SERVICE.into(),
            function_name: FUNCTION.into(),
            invocation_id: "big".into(),
            payload: "x".repeat(size),
            ..Default::default()
        };
        count += check("invoke payload", client.invoke_function(r).await.map(drop));
    }
    // Metadata: bad accounts, including bytes that are not UTF-8.
    for account in [
        &b""[..],
        b"a b",
        &[b'x'; 200][..],
        b"bad/acct",
        &[0xff, 0xfe][..],
        &[b'a', 0x80, b'b'][..],
    ] {
        let mut request = tonic::Request::new(pb::InvokeFunctionRequest {
            service_name: SERVICE.into(),
            function_name: FUNCTION.into(),
            invocation_id: "meta".into(),
            ..Default::default()
        });
        if let Ok(value) = tonic::metadata::MetadataValue::try_from(account) {
            request.metadata_mut().insert("x-fc-account-id", value);
            count += check(
                "account header",
                client.invoke_function(request).await.map(drop),
            );
        }
    }

    // Get, Stop, WatchInvocation: names and ids.
    for (service, function, id) in names()
        .into_iter()
        .map(|n| (n, FUNCTION.to_string(), "existing".to_string()))
        .chain(
            names()
                .into_iter()
                .map(|n| (SERVICE.to_string(), n, "existing".to_string())),
        )
        .chain(
            ids()
                .into_iter()
                .map(|i| (SERVICE.to_string(), FUNCTION.to_string(), i)),
        )
    {
        let get = pb::GetStatefulAsyncInvocationRequest {
            service_name: service.clone(),
            function_name: function.clone(),
            qualifier: String::new(),
            invocation_id: id.clone(),
        };
        count += check(
            "get",
            client.get_stateful_async_invocation(get).await.map(drop),
        );
        let stop = pb::StopStatefulAsyncInvocationRequest {
            service_name: service.clone(),
            function_name: function.clone(),
            qualifier: String::new(),
            invocation_id: id.clone(),
        };
        count += check(
            "stop",
            client.stop_stateful_async_invocation(stop).await.map(drop),
        );
        let watch = pb::WatchInvocationRequest {
            service_name: service,
            function_name: function,
            qualifier: String::new(),
            invocation_id: id,
            from_event_id: 0,
        };
        count += check("watch", client.watch_invocation(watch).await.map(drop));
    }
    for from_event_id in [-1, i64::MIN] {
        let watch = pb::WatchInvocationRequest {
            service_name: SERVICE.into(),
            function_name: FUNCTION.into(),
            qualifier: String::new(),
            invocation_id: "existing".into(),
            from_event_id,
        };
        count += check("watch from", client.watch_invocation(watch).await.map(drop));
    }

    // List: every filter.
    let list = |change: &dyn Fn(&mut pb::ListStatefulAsyncInvocationsRequest)| {
        let mut r = list_request(FUNCTION);
        change(&mut r);
        r
    };
    let mut lists = Vec::new();
    for name in names() {
        lists.push(list(&|r| r.service_name = name.clone()));
        lists.push(list(&|r| r.function_name = name.clone()));
    }
    for limit in [-1, 101, i32::MAX, i32::MIN] {
        lists.push(list(&|r| r.limit = limit));
    }
    for status in [99, -3, i32::MAX] {
        lists.push(list(&|r| r.status = status));
    }
    for order in [3, -1, 1_000] {
        lists.push(list(&|r| r.sort_order_by_time = order));
    }
    for (begin, end) in [(-1, 0), (0, -5), (10, 5), (i64::MIN, 0), (i64::MAX, 1)] {
        lists.push(list(&|r| {
            r.started_time_begin = begin;
            r.started_time_end = end;
        }));
    }
    for token in tokens() {
        lists.push(list(&|r| r.next_token = token.clone()));
    }
    for prefix in ["x".repeat(200), "bad prefix".into(), "a|b".into()] {
        lists.push(list(&|r| r.invocation_id_prefix = prefix.clone()));
    }
    for r in lists {
        count += check(
            "list",
            client.list_stateful_async_invocations(r).await.map(drop),
        );
    }

    // WatchInvocations, functions, configs.
    for (service, function, from) in [
        (String::new(), FUNCTION.to_string(), 0),
        ("bad/svc".into(), String::new(), 0),
        (SERVICE.into(), "bad fn".into(), 0),
        (SERVICE.into(), FUNCTION.into(), u64::MAX),
    ] {
        let r = pb::WatchInvocationsRequest {
            service_name: service,
            function_name: function,
            from_sequence: from,
            from_oldest: false,
        };
        count += check("watch changes", client.watch_invocations(r).await.map(drop));
    }
    for (limit, token) in [
        (-1, String::new()),
        (101, String::new()),
        (10, "!!!".into()),
        (10, "aGVsbG8".into()),
    ] {
        let r = pb::ListStatefulAsyncInvocationFunctionsRequest {
            limit,
            next_token: token,
        };
        count += check(
            "functions",
            client
                .list_stateful_async_invocation_functions(r)
                .await
                .map(drop),
        );
    }
    let config = |change: &dyn Fn(&mut pb::AsyncInvokeConfig)| {
        let mut config = pb::AsyncInvokeConfig::default();
        change(&mut config);
        pb::PutFunctionAsyncInvokeConfigRequest {
            service_name: SERVICE.into(),
            function_name: FUNCTION.into(),
            qualifier: String::new(),
            config: Some(config),
        }
    };
    let mut puts = vec![pb::PutFunctionAsyncInvokeConfigRequest {
        service_name: SERVICE.into(),
        function_name: FUNCTION.into(),
        qualifier: String::new(),
        config: None,
    }];
    for age in [-1, 0, i64::MAX, i64::MIN] {
        puts.push(config(&|c| c.max_async_event_age_in_seconds = Some(age)));
    }
    for retries in [-1, 9, i64::MAX] {
        puts.push(config(&|c| c.max_async_retry_attempts = Some(retries)));
    }
    // (An empty destination is not among them: in proto3 it means "none".)
    for arn in [
        "not-an-arn",
        "acs:fc:::services/",
        "acs:fc:::services/s/functions/",
        "acs:fc:region:someone-else:services/s/functions/f",
        "acs:mns:::queues/q",
        "acs:fc:::services/s/functions/f/extra",
    ] {
        puts.push(config(&|c| {
            c.destination_config = Some(pb::DestinationConfig {
                on_success: Some(pb::Destination {
                    destination: arn.into(),
                }),
                on_failure: None,
            })
        }));
    }
    for name in names() {
        let mut put = config(&|_| {});
        put.function_name = name;
        puts.push(put);
    }
    for r in puts {
        count += check(
            &format!("put config {:?}", r.config),
            client.put_function_async_invoke_config(r).await.map(drop),
        );
    }
    for name in names() {
        let get = pb::GetFunctionAsyncInvokeConfigRequest {
            service_name: SERVICE.into(),
            function_name: name.clone(),
            qualifier: String::new(),
        };
        count += check(
            "get config",
            client.get_function_async_invoke_config(get).await.map(drop),
        );
        let delete = pb::DeleteFunctionAsyncInvokeConfigRequest {
            service_name: name.clone(),
            function_name: FUNCTION.into(),
            qualifier: String::new(),
        };
        count += check(
            "delete config",
            client
                .delete_function_async_invoke_config(delete)
                .await
                .map(drop),
        );
        let list = pb::ListFunctionAsyncInvokeConfigsRequest {
            service_name: SERVICE.into(),
            function_name: name,
            limit: 10,
            next_token: String::new(),
        };
        count += check(
            "list configs",
            client
                .list_function_async_invoke_configs(list)
                .await
                .map(drop),
        );
    }

    // Worker service.
    let poll_with = |change: &dyn Fn(&mut pb::PollInvocationsRequest)| {
        let mut r = pb::PollInvocationsRequest {
            functions: vec![pb::FunctionRef {
                service_name: SERVICE.into(),
                function_name: FUNCTION.into(),
                qualifier: String::new(),
            }],
            worker_id: "w".into(),
            max_invocations: 1,
            wait_time_ms: 0,
        };
        change(&mut r);
        r
    };
    let mut polls = vec![poll_with(&|r| r.functions.clear())];
    for max in [-1, 101, i32::MAX] {
        polls.push(poll_with(&|r| r.max_invocations = max));
    }
    for wait in [-1, i32::MIN, i32::MAX] {
        polls.push(poll_with(&|r| r.wait_time_ms = wait));
    }
    for id in ["".to_string(), "x".repeat(300), "bad\nworker".into()] {
        polls.push(poll_with(&|r| r.worker_id = id.clone()));
    }
    for name in names() {
        polls.push(poll_with(&|r| r.functions[0].function_name = name.clone()));
    }
    for r in polls {
        count += check("poll", worker.poll_invocations(r).await.map(drop));
    }
    let bad_leases = [
        "".to_string(),
        "lt1.".into(),
        "lt1.zz".into(),
        "x".repeat(5_000),
        "lt2.00000000000000000000000000000000".into(),
    ];
    for token in &bad_leases {
        let beat = pb::HeartbeatInvocationRequest {
            lease_token: token.clone(),
        };
        count += check(
            "heartbeat",
            worker.heartbeat_invocation(beat).await.map(drop),
        );
        let done = pb::CompleteInvocationRequest {
            lease_token: token.clone(),
            outcome: Some(success("x")),
        };
        count += check("complete", worker.complete_invocation(done).await.map(drop));
    }
    for outcome in [
        None,
        Some(success(&"x".repeat(1024 * 1024 + 1))),
        Some(failure(&"x".repeat(64 * 1024 + 1))),
        Some(pb::complete_invocation_request::Outcome::Invalid(
            pb::CompleteInvalid {
                reason: "x".repeat(64 * 1024 + 1),
            },
        )),
    ] {
        let done = pb::CompleteInvocationRequest {
            lease_token: lease.lease_token.clone(),
            outcome,
        };
        count += check(
            "complete outcome",
            worker.complete_invocation(done).await.map(drop),
        );
    }
    // Another account's lease.
    let stolen = as_account(
        "other",
        pb::CompleteInvocationRequest {
            lease_token: lease.lease_token.clone(),
            outcome: Some(success("x")),
        },
    );
    count += check(
        "complete as other",
        worker.complete_invocation(stolen).await.map(drop),
    );
    for completions in [0, 101] {
        let many = pb::CompleteInvocationsRequest {
            completions: vec![
                pb::CompleteInvocationRequest {
                    lease_token: lease.lease_token.clone(),
                    outcome: None,
                };
                completions
            ],
        };
        count += check(
            "complete many",
            worker.complete_invocations(many).await.map(drop),
        );
    }

    count += raw_frames(&server).await;

    assert!(count >= 200, "only {count} malformed requests were tried");
    assert_eq!(
        snapshot(&mut client).await,
        before,
        "a refused request changed something"
    );
    // Still serving, and the held lease still works.
    complete(&mut worker, "default", &lease.lease_token, success("fine"))
        .await
        .expect("the server is healthy");
    println!("battery: {count} malformed requests refused cleanly");
}

/// gRPC over HTTP/2 by hand: truncated, oversized, garbage and mislabelled frames. Each gets
/// a non-OK grpc-status (or an HTTP error), and the connection's other streams go on.
async fn raw_frames(server: &TestServer) -> usize {
    let tcp = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    let (sender, connection) = h2::client::handshake(tcp).await.expect("h2 handshake");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let framed = |flag: u8, declared: u32, body: &[u8]| {
        let mut bytes = vec![flag];
        bytes.extend_from_slice(&declared.to_be_bytes());
        bytes.extend_from_slice(body);
        bytes
    };
    let garbage: Vec<u8> = (0..64u32).map(|i| (i * 37 + 11) as u8).collect();
    let method = "/sai.v1.StatefulAsyncInvocationService/InvokeFunction";
    let cases: Vec<(&str, &str, Vec<u8>)> = vec![
        (method, "application/grpc", Vec::new()),
        (method, "application/grpc", vec![0, 0]),
        (method, "application/grpc", framed(0, 100, b"short")),
        (
            method,
            "application/grpc",
            framed(0, garbage.len() as u32, &garbage),
        ),
        (method, "application/grpc", framed(1, 4, b"abcd")),
        (method, "application/grpc", framed(0, u32::MAX, b"")),
        (
            method,
            "application/grpc",
            framed(0, 3, &[0x0a, 0xff, 0xff]),
        ),
        (method, "application/grpc", framed(0, 2, &[0x12, 0x80])),
        (method, "application/grpc", framed(7, 0, b"")),
        (method, "text/plain", framed(0, 0, b"")),
        (
            "/sai.v1.StatefulAsyncInvocationService/NoSuchMethod",
            "application/grpc",
            framed(0, 0, b""),
        ),
        (
            "/no.such.Service/Call",
            "application/grpc",
            framed(0, 0, b""),
        ),
        (
            "/sai.v1.WorkerService/CompleteInvocation",
            "application/grpc",
            framed(0, garbage.len() as u32, &garbage),
        ),
        (
            "/sai.v1.WorkerService/PollInvocations",
            "application/grpc",
            framed(0, 50, &garbage[..10]),
        ),
        (
            "/sai.v1.StatefulAsyncInvocationService/WatchInvocation",
            "application/grpc",
            framed(0, 9, &[0x22, 0x07, 0xff, 0xfe, 0xfd, 0, 1, 2, 3]),
        ),
    ];
    let mut count = 0;
    for (path, content_type, body) in cases {
        let request = http::Request::builder()
            .method("POST")
            .uri(format!("http://{}{path}", server.addr))
            .header("content-type", content_type)
            .header("te", "trailers")
            .body(())
            .expect("request");
        let mut sender = sender.clone().ready().await.expect("connection ready");
        let (response, mut stream) = sender.send_request(request, false).expect("send");
        // A server that refuses before reading the body (a wrong content type) may end the
        // stream before the body goes out: then sending it fails, and the answer below is
        // what is checked.
        let _ = stream.send_data(Bytes::from(body), true);
        let response = response.await.expect("an answer, not a dead connection");
        let (head, mut body) = response.into_parts();
        let mut grpc_status = head
            .headers
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        while let Some(chunk) = body.data().await {
            let _ = chunk;
        }
        if let Ok(Some(trailers)) = body.trailers().await {
            if let Some(status) = trailers.get("grpc-status").and_then(|v| v.to_str().ok()) {
                grpc_status = Some(status.to_string());
            }
        }
        let error_code = head.headers.get("x-fc-error-code").cloned();
        let message = head.headers.get("grpc-message").cloned();
        let refused =
            head.status != http::StatusCode::OK || grpc_status.as_deref().is_some_and(|s| s != "0");
        assert!(
            refused,
            "{path} {content_type}: answered OK ({grpc_status:?})"
        );
        if let Some(code) = grpc_status.as_deref().and_then(|s| s.parse::<i32>().ok()) {
            assert!(
                !matches!(Code::from(code), Code::Unknown | Code::Internal),
                "{path}: {:?} for a malformed frame ({message:?})",
                Code::from(code)
            );
            assert!(
                error_code.is_some(),
                "{path}: {:?} without an x-fc-error-code",
                Code::from(code)
            );
        }
        count += 1;
    }
    count
}
