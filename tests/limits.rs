//! Limits that protect the service: each one, when hit, answers its code with a message
//! naming the flag, and changes nothing.

mod support;

use std::time::Duration;

use sai::pb;
use sai::server::EdgeLimits;
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
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert_eq!(
        refused
            .metadata()
            .get("x-fc-error-code")
            .and_then(|v| v.to_str().ok()),
        Some("EntityTooLarge")
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
                from_oldest: false,
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
    eventually("the slot comes back once the stream is gone", || {
        let mut client = client.clone();
        async move { client.watch_invocations(watch("default")).await.ok() }
    })
    .await;
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
    let poll_request = |worker_id: &str, wait_time_ms| pb::PollInvocationsRequest {
        functions: vec![pb::FunctionRef {
            service_name: SERVICE.into(),
            function_name: FUNCTION.into(),
            qualifier: String::new(),
        }],
        worker_id: worker_id.into(),
        max_invocations: 1,
        wait_time_ms,
    };
    let mut waiting = server.worker().await;
    let long_poll = {
        let request = poll_request("first", 30_000);
        tokio::spawn(async move {
            loop {
                match waiting.poll_invocations(request.clone()).await {
                    Ok(answer) => return answer.into_inner().leases,
                    // The second poll below held the slot for an instant: try again.
                    Err(status) if status.code() == Code::ResourceExhausted => {}
                    Err(status) => panic!("long poll: {status}"),
                }
            }
        })
    };
    let mut worker = server.worker().await;
    // Until the long poll has its slot, a second poll may take it for an instant.
    let refused = eventually("a second poll is refused while the long poll waits", || {
        let (mut worker, request) = (worker.clone(), poll_request("second", 0));
        async move { worker.poll_invocations(request).await.err() }
    })
    .await;
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert!(
        refused.message().contains("--max-polls-per-account"),
        "{}",
        refused.message()
    );
    // Another account polls freely; once the long poll returns, so does this one.
    poll(&mut worker, "another-account", FUNCTION, 1, 0).await;
    let mut client = server.client().await;
    invoke(&mut client, "default", FUNCTION, "ends-the-long-poll").await;
    assert_eq!(long_poll.await.expect("long poll").len(), 1);
    poll(&mut worker, "default", FUNCTION, 1, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_stops_answering_keepalive_pings_is_disconnected() {
    use tokio::io::AsyncReadExt;

    let server = TestServer::start_with(limited(ServerLimits {
        keepalive_interval: Duration::from_millis(200),
        keepalive_timeout: Duration::from_millis(200),
        ..Default::default()
    }))
    .await;
    // A raw HTTP/2 peer: the client preface and an empty SETTINGS frame, then silence. It
    // reads what the server sends but never acknowledges a ping, like a host that vanished
    // behind a half-open connection.
    let mut peer = raw_http2_peer(server.addr).await;
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        let mut buffer = [0u8; 1024];
        loop {
            match peer.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the silent peer was not disconnected");
    // Live clients are unaffected.
    let mut client = server.client().await;
    invoke(&mut client, "default", FUNCTION, "still-serving").await;
}

/// A TCP connection that has sent the HTTP/2 client preface and an empty SETTINGS frame, and
/// nothing else: the test decides what (if anything) it says next.
async fn raw_http2_peer(addr: std::net::SocketAddr) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;

    let mut peer = tokio::net::TcpStream::connect(addr).await.expect("connect");
    peer.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .expect("preface");
    peer.write_all(&frame(4, 0, 0, &[]))
        .await
        .expect("settings");
    peer
}

/// One HPACK "literal header field without indexing, new name" (RFC 7541 6.2.2), for names
/// and values shorter than 127 bytes.
fn literal_header(block: &mut Vec<u8>, name: &str, value: &str) {
    block.push(0x00);
    block.push(name.len() as u8);
    block.extend_from_slice(name.as_bytes());
    block.push(value.len() as u8);
    block.extend_from_slice(value.as_bytes());
}

/// An HTTP/2 frame header: 24-bit length, type, flags, 31-bit stream id.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut bytes = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    bytes.extend_from_slice(&stream.to_be_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_beyond_the_per_connection_cap_are_refused() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let server = TestServer::start_with(limited(ServerLimits {
        max_streams_per_connection: 2,
        ..Default::default()
    }))
    .await;
    // A raw HTTP/2 client that ignores the server's SETTINGS_MAX_CONCURRENT_STREAMS (a
    // well-behaved one would queue): it opens three watch calls at once and sends no body,
    // so the first two stay open.
    let mut peer = raw_http2_peer(server.addr).await;
    // Read the server's SETTINGS and acknowledge it, so that its limit is in force.
    let mut head = [0u8; 9];
    peer.read_exact(&mut head).await.expect("server settings");
    let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
    let mut payload = vec![0u8; len];
    peer.read_exact(&mut payload)
        .await
        .expect("settings payload");
    assert_eq!(head[3], 4, "the server speaks first with SETTINGS");
    peer.write_all(&frame(4, 1, 0, &[]))
        .await
        .expect("settings ack");
    for stream in [1u32, 3, 5] {
        let mut block = Vec::new();
        literal_header(&mut block, ":method", "POST");
        literal_header(&mut block, ":scheme", "http");
        literal_header(
            &mut block,
            ":path",
            "/sai.v1.StatefulAsyncInvocationService/WatchInvocations",
        );
        literal_header(&mut block, ":authority", "sai");
        literal_header(&mut block, "content-type", "application/grpc");
        literal_header(&mut block, "te", "trailers");
        // END_HEADERS, no END_STREAM: the request body never comes.
        peer.write_all(&frame(1, 0x4, stream, &block))
            .await
            .expect("headers");
    }
    // Expect RST_STREAM(REFUSED_STREAM = 7) for stream 5, and none for 1 or 3.
    let refused = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let mut head = [0u8; 9];
            peer.read_exact(&mut head).await.expect("a frame");
            let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
            let mut payload = vec![0u8; len];
            peer.read_exact(&mut payload).await.expect("frame payload");
            let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
            if head[3] == 3 {
                let code = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]);
                return (stream, code);
            }
        }
    })
    .await
    .expect("the third stream is refused");
    assert_eq!(
        refused,
        (5, 7),
        "RST_STREAM(REFUSED_STREAM) on the stream over the cap"
    );
    let mut client = server.client().await;
    invoke(&mut client, "default", FUNCTION, "still-serving").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payload_and_return_payload_limits_are_flags_and_refuse_without_changing_anything() {
    let server = TestServer::start_with(limited(ServerLimits {
        edge: EdgeLimits {
            max_payload_bytes: 1_000,
            max_return_payload_bytes: 10,
            ..Default::default()
        },
        ..Default::default()
    }))
    .await;
    let mut client = server.client().await;
    let mut worker = server.worker().await;
    let refused = client
        .invoke_function(pb::InvokeFunctionRequest {
            service_name: SERVICE.into(),
            function_name: FUNCTION.into(),
            invocation_id: "too-big".into(),
            payload: "x".repeat(1_001),
            ..Default::default()
        })
        .await
        .expect_err("over --max-payload-bytes");
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(
        refused.message().contains("payload") && refused.message().contains("1000"),
        "{}",
        refused.message()
    );
    assert_eq!(
        get(&mut client, "default", FUNCTION, "too-big")
            .await
            .expect_err("not stored")
            .code(),
        Code::NotFound
    );
    invoke(&mut client, "default", FUNCTION, "fits").await;
    let lease = poll(&mut worker, "default", FUNCTION, 1, 1_000)
        .await
        .remove(0);
    let refused = complete(
        &mut worker,
        "default",
        &lease.lease_token,
        success("eleven char"),
    )
    .await
    .expect_err("over --max-return-payload-bytes");
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(
        refused.message().contains("return_payload"),
        "{}",
        refused.message()
    );
    assert_eq!(
        status_of(
            &get(&mut client, "default", FUNCTION, "fits")
                .await
                .expect("get")
        ),
        pb::InvocationStatus::Running
    );
    complete(
        &mut worker,
        "default",
        &lease.lease_token,
        success("ten chars!"),
    )
    .await
    .expect("within the limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invoke_streams_per_account_are_limited_and_given_back_when_a_stream_ends() {
    let server = TestServer::start_with(limited(ServerLimits {
        edge: EdgeLimits {
            invoke_streams_per_account: 1,
            ..Default::default()
        },
        ..Default::default()
    }))
    .await;
    let mut client = server.client().await;
    let open = |client: &mut Client, account: &'static str| {
        let (send, outgoing) = tokio::sync::mpsc::channel::<pb::InvokeFunctionRequest>(4);
        let mut client = client.clone();
        async move {
            let opened = client
                .invoke_function_stream(as_account(
                    account,
                    tokio_stream::wrappers::ReceiverStream::new(outgoing),
                ))
                .await;
            (send, opened)
        }
    };
    let (first_sender, first) = open(&mut client, "default").await;
    let mut first = first.expect("1 of 1").into_inner();
    let (_, refused) = open(&mut client, "default").await;
    let refused = refused.expect_err("2 of 1");
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert!(
        refused
            .message()
            .contains("--max-invoke-streams-per-account"),
        "{}",
        refused.message()
    );
    let (_other_sender, other) = open(&mut client, "another-account").await;
    other.expect("another account has its own");

    // Closing the sending side ends the stream and gives the slot back.
    drop(first_sender);
    assert!(first.message().await.expect("ends cleanly").is_none());
    eventually("the slot comes back once the stream is closed", || {
        let mut client = client.clone();
        async move {
            let (sender, again) = open(&mut client, "default").await;
            again.ok().map(|_| drop(sender))
        }
    })
    .await;
}
