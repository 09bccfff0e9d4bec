//! Authentication with a token file: every RPC but health needs a known bearer token, the
//! token decides the account, accounts stay apart across every RPC including the worker
//! service, SIGHUP reloads the file without dropping connections, and a server without tokens
//! refuses to listen beyond loopback unless told otherwise.

mod support;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use sai::pb;
use sai::server::ServerConfig;
use support::*;
use tonic::Code;

const TOKEN_A: &str = "token-of-account-a-0123456789";
const TOKEN_B: &str = "token-of-account-b-9876543210";

fn token_file(text: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    file.write_all(text.as_bytes()).expect("write tokens");
    file
}

fn two_accounts() -> tempfile::NamedTempFile {
    token_file(&format!(
        "# test tokens\n{TOKEN_A} acct-a\n{TOKEN_B} acct-b\n"
    ))
}

/// `message` with `authorization: <value>` and, if given, an `x-fc-account-id`.
fn authed<T>(authorization: Option<&str>, account: Option<&str>, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(value) = authorization {
        request
            .metadata_mut()
            .insert("authorization", value.parse().expect("ascii"));
    }
    if let Some(account) = account {
        request
            .metadata_mut()
            .insert("x-fc-account-id", account.parse().expect("ascii"));
    }
    request
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn invoke_request(id: &str) -> pb::InvokeFunctionRequest {
    pb::InvokeFunctionRequest {
        service_name: SERVICE.into(),
        function_name: FUNCTION.into(),
        invocation_id: id.into(),
        payload: "{}".into(),
        ..Default::default()
    }
}

fn get_request(id: &str) -> pb::GetStatefulAsyncInvocationRequest {
    pb::GetStatefulAsyncInvocationRequest {
        service_name: SERVICE.into(),
        function_name: FUNCTION.into(),
        qualifier: String::new(),
        invocation_id: id.into(),
    }
}

fn poll_request() -> pb::PollInvocationsRequest {
    pb::PollInvocationsRequest {
        functions: vec![pb::FunctionRef {
            service_name: SERVICE.into(),
            function_name: FUNCTION.into(),
            qualifier: String::new(),
        }],
        worker_id: "auth-worker".into(),
        max_invocations: 1,
        wait_time_ms: 0,
    }
}

/// The code of every RPC of both services, called with `authorization`.
async fn codes_of_every_rpc(
    server: &TestServer,
    authorization: Option<&str>,
) -> Vec<(&'static str, Code)> {
    let mut client = server.client().await;
    let mut worker = server.worker().await;
    let code = |r: Result<(), tonic::Status>| r.err().map_or(Code::Ok, |s| s.code());
    let auth = || authorization;
    vec![
        (
            "InvokeFunction",
            code(
                client
                    .invoke_function(authed(auth(), None, invoke_request("x")))
                    .await
                    .map(drop),
            ),
        ),
        (
            "Get",
            code(
                client
                    .get_stateful_async_invocation(authed(auth(), None, get_request("x")))
                    .await
                    .map(drop),
            ),
        ),
        (
            "List",
            code(
                client
                    .list_stateful_async_invocations(authed(auth(), None, list_request(FUNCTION)))
                    .await
                    .map(drop),
            ),
        ),
        (
            "Stop",
            code(
                client
                    .stop_stateful_async_invocation(authed(
                        auth(),
                        None,
                        pb::StopStatefulAsyncInvocationRequest {
                            service_name: SERVICE.into(),
                            function_name: FUNCTION.into(),
                            qualifier: String::new(),
                            invocation_id: "x".into(),
                        },
                    ))
                    .await
                    .map(drop),
            ),
        ),
        (
            "WatchInvocation",
            code(
                client
                    .watch_invocation(authed(
                        auth(),
                        None,
                        pb::WatchInvocationRequest {
                            service_name: SERVICE.into(),
                            function_name: FUNCTION.into(),
                            qualifier: String::new(),
                            invocation_id: "x".into(),
                            from_event_id: 0,
                        },
                    ))
                    .await
                    .map(drop),
            ),
        ),
        (
            "WatchInvocations",
            code(
                client
                    .watch_invocations(authed(auth(), None, pb::WatchInvocationsRequest::default()))
                    .await
                    .map(drop),
            ),
        ),
        (
            "ListFunctions",
            code(
                client
                    .list_stateful_async_invocation_functions(authed(
                        auth(),
                        None,
                        pb::ListStatefulAsyncInvocationFunctionsRequest::default(),
                    ))
                    .await
                    .map(drop),
            ),
        ),
        (
            "PutConfig",
            code(
                client
                    .put_function_async_invoke_config(authed(
                        auth(),
                        None,
                        pb::PutFunctionAsyncInvokeConfigRequest {
                            service_name: SERVICE.into(),
                            function_name: FUNCTION.into(),
                            qualifier: String::new(),
                            config: Some(Default::default()),
                        },
                    ))
                    .await
                    .map(drop),
            ),
        ),
        (
            "GetConfig",
            code(
                client
                    .get_function_async_invoke_config(authed(
                        auth(),
                        None,
                        pb::GetFunctionAsyncInvokeConfigRequest {
                            service_name: SERVICE.into(),
                            function_name: FUNCTION.into(),
                            qualifier: String::new(),
                        },
                    ))
                    .await
                    .map(drop),
            ),
        ),
        (
            "DeleteConfig",
            code(
                client
                    .delete_function_async_invoke_config(authed(
                        auth(),
                        None,
                        pb::DeleteFunctionAsyncInvokeConfigRequest {
                            service_name: SERVICE.into(),
                            function_name: FUNCTION.into(),
                            qualifier: String::new(),
                        },
                    ))
                    .await
                    .map(drop),
            ),
        ),
        (
            "ListConfigs",
            code(
                client
                    .list_function_async_invoke_configs(authed(
                        auth(),
                        None,
                        pb::ListFunctionAsyncInvokeConfigsRequest {
                            service_name: SERVICE.into(),
                            function_name: FUNCTION.into(),
                            ..Default::default()
                        },
                    ))
                    .await
                    .map(drop),
            ),
        ),
        (
            "Poll",
            code(
                worker
                    .poll_invocations(authed(auth(), None, poll_request()))
                    .await
                    .map(drop),
            ),
        ),
        (
            "Heartbeat",
            code(
                worker
                    .heartbeat_invocation(authed(
                        auth(),
                        None,
                        pb::HeartbeatInvocationRequest {
                            lease_token: "lt1.00000000000000000000000000000000".into(),
                        },
                    ))
                    .await
                    .map(drop),
            ),
        ),
        (
            "Complete",
            code(
                worker
                    .complete_invocation(authed(
                        auth(),
                        None,
                        pb::CompleteInvocationRequest {
                            lease_token: "lt1.00000000000000000000000000000000".into(),
                            outcome: Some(success("x")),
                        },
                    ))
                    .await
                    .map(drop),
            ),
        ),
        (
            "CompleteMany",
            code(
                worker
                    .complete_invocations(authed(
                        auth(),
                        None,
                        pb::CompleteInvocationsRequest {
                            completions: vec![pb::CompleteInvocationRequest {
                                lease_token: "lt1.00000000000000000000000000000000".into(),
                                outcome: Some(success("x")),
                            }],
                        },
                    ))
                    .await
                    .map(drop),
            ),
        ),
    ]
}

async fn start_with_tokens(file: &tempfile::NamedTempFile) -> TestServer {
    TestServer::start_with(ServerConfig {
        auth_tokens: Some(file.path().to_path_buf()),
        ..fast_engine()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_needs_a_known_bearer_token_but_health_does_not() {
    let tokens = two_accounts();
    let server = start_with_tokens(&tokens).await;
    let missing = bearer("not-a-known-token-000000");
    for authorization in [
        None,
        Some(missing.as_str()),
        Some("Basic dXNlcjpwYXNz"),
        Some(TOKEN_A),
    ] {
        for (rpc, code) in codes_of_every_rpc(&server, authorization).await {
            assert_eq!(code, Code::Unauthenticated, "{rpc} with {authorization:?}");
        }
    }
    // With a token, the same calls get past authentication (to their own answers).
    let good = bearer(TOKEN_A);
    for (rpc, code) in codes_of_every_rpc(&server, Some(&good)).await {
        assert!(
            !matches!(code, Code::Unauthenticated | Code::PermissionDenied),
            "{rpc}: {code:?}"
        );
    }
    let channel = tonic::transport::Endpoint::from_shared(server.url())
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let health = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .expect("health needs no token")
        .into_inner();
    assert_eq!(
        health.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_decides_the_account_and_accounts_stay_apart() {
    let tokens = two_accounts();
    let server = start_with_tokens(&tokens).await;
    let mut client = server.client().await;
    let mut worker = server.worker().await;
    let (a, b) = (bearer(TOKEN_A), bearer(TOKEN_B));

    client
        .invoke_function(authed(Some(&a), None, invoke_request("owned-by-a")))
        .await
        .expect("invoke as a");
    // The token's own account may be named; another one may not.
    client
        .get_stateful_async_invocation(authed(Some(&a), Some("acct-a"), get_request("owned-by-a")))
        .await
        .expect("a names itself");
    let denied = client
        .get_stateful_async_invocation(authed(Some(&a), Some("acct-b"), get_request("owned-by-a")))
        .await
        .expect_err("a claims b");
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert!(denied.message().contains("acct-a"), "{}", denied.message());
    // B sees nothing of A's.
    let hidden = client
        .get_stateful_async_invocation(authed(Some(&b), None, get_request("owned-by-a")))
        .await
        .expect_err("b cannot see a's invocation");
    assert_eq!(hidden.code(), Code::NotFound);
    let listed = client
        .list_stateful_async_invocations(authed(Some(&b), None, list_request(FUNCTION)))
        .await
        .expect("list as b")
        .into_inner();
    assert!(listed.invocations.is_empty());
    // B's worker gets none of A's work, and cannot act on A's lease.
    let b_leases = worker
        .poll_invocations(authed(Some(&b), None, poll_request()))
        .await
        .expect("poll as b")
        .into_inner()
        .leases;
    assert!(b_leases.is_empty());
    let a_lease = worker
        .poll_invocations(authed(Some(&a), None, poll_request()))
        .await
        .expect("poll as a")
        .into_inner()
        .leases
        .remove(0);
    for refused in [
        worker
            .heartbeat_invocation(authed(
                Some(&b),
                None,
                pb::HeartbeatInvocationRequest {
                    lease_token: a_lease.lease_token.clone(),
                },
            ))
            .await
            .map(drop),
        worker
            .complete_invocation(authed(
                Some(&b),
                None,
                pb::CompleteInvocationRequest {
                    lease_token: a_lease.lease_token.clone(),
                    outcome: Some(success("stolen")),
                },
            ))
            .await
            .map(drop),
    ] {
        assert_eq!(
            refused.expect_err("b cannot use a's lease").code(),
            Code::NotFound
        );
    }
    let done = worker
        .complete_invocation(authed(
            Some(&a),
            None,
            pb::CompleteInvocationRequest {
                lease_token: a_lease.lease_token,
                outcome: Some(success("mine")),
            },
        ))
        .await
        .expect("a completes its own")
        .into_inner()
        .invocation
        .expect("invocation");
    assert_eq!(done.return_payload, "mine");
    let stored = client
        .get_stateful_async_invocation(authed(Some(&a), None, get_request("owned-by-a")))
        .await
        .expect("get")
        .into_inner();
    assert_eq!(stored.return_payload, "mine");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_tokens_without_dropping_connections() {
    let tokens = token_file(&format!("{TOKEN_A} acct-a\n"));
    let mut server = SaiProcess::start(
        Command::new(env!("CARGO_BIN_EXE_sai"))
            .args(["serve", "--in-memory", "--listen", "127.0.0.1:0"])
            .arg("--auth-tokens")
            .arg(tokens.path())
            .env("RUST_LOG", "error")
            .stderr(Stdio::piped()),
    );
    // The server's error log, a line at a time: how the test learns a reload was refused.
    let errors = {
        use std::io::BufRead;
        let stderr = server.child.stderr.take().expect("piped stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                let _ = tx.send(line);
            }
        });
        rx
    };
    let hangup = |pid: u32| {
        let sent = Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .expect("kill -HUP");
        assert!(sent.success());
    };
    let mut client = Client::connect(server.url()).await.expect("connect");
    let (a, b) = (bearer(TOKEN_A), bearer(TOKEN_B));
    let list_as = |token: &str| authed(Some(token), None, list_request(FUNCTION));
    client
        .list_stateful_async_invocations(list_as(&a))
        .await
        .expect("a works");
    std::fs::write(tokens.path(), format!("{TOKEN_B} acct-b\n")).expect("rewrite");
    hangup(server.child.id());
    // The same client (same connection) sees the new tokens once the reload lands.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while client
        .list_stateful_async_invocations(list_as(&b))
        .await
        .is_err()
    {
        assert!(tokio::time::Instant::now() < deadline, "reload not seen");
        tokio::task::yield_now().await;
    }
    let old = client
        .list_stateful_async_invocations(list_as(&a))
        .await
        .expect_err("the removed token is refused");
    assert_eq!(old.code(), Code::Unauthenticated);
    // A broken file leaves the tokens in force.
    std::fs::write(tokens.path(), "this line is not valid\n").expect("break");
    hangup(server.child.id());
    let refused = tokio::task::spawn_blocking(move || {
        errors
            .iter()
            .find(|line| line.contains("tokens not reloaded"))
    })
    .await
    .expect("read the log");
    assert!(refused.is_some(), "the bad reload is logged");
    client
        .list_stateful_async_invocations(list_as(&b))
        .await
        .expect("b still works after a bad reload");
}

#[test]
fn without_tokens_sai_refuses_a_non_loopback_address_unless_allowed() {
    let refused = Command::new(env!("CARGO_BIN_EXE_sai"))
        .args(["serve", "--in-memory", "--listen", "0.0.0.0:0"])
        .env("RUST_LOG", "error")
        .output()
        .expect("run sai serve");
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        said.contains("refusing") && said.contains("--auth-tokens"),
        "{said}"
    );

    // Its ready line says it serves.
    let allowed = SaiProcess::start(
        Command::new(env!("CARGO_BIN_EXE_sai"))
            .args([
                "serve",
                "--in-memory",
                "--listen",
                "0.0.0.0:0",
                "--allow-unauthenticated",
            ])
            .env("RUST_LOG", "error"),
    );
    assert!(allowed.addr.ip().is_unspecified());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_sends_its_token() {
    let tokens = two_accounts();
    let server = start_with_tokens(&tokens).await;
    let url = server.url();
    let run = move |token: Option<&'static str>| {
        let url = url.clone();
        move || {
            let mut command = Command::new(env!("CARGO_BIN_EXE_sai"));
            command
                .args(["invoke", "demo-service/demo-function", "--id", "from-cli"])
                .env("SAI_SERVER", url)
                .env_remove("SAI_TOKEN");
            if let Some(token) = token {
                command.env("SAI_TOKEN", token);
            }
            command.output().expect("run sai invoke")
        }
    };
    let without = tokio::task::spawn_blocking(run(None)).await.expect("join");
    assert!(!without.status.success());
    assert!(
        String::from_utf8_lossy(&without.stderr).contains("Bearer"),
        "{}",
        String::from_utf8_lossy(&without.stderr)
    );
    let with = tokio::task::spawn_blocking(run(Some(TOKEN_B)))
        .await
        .expect("join");
    assert!(
        with.status.success(),
        "{}",
        String::from_utf8_lossy(&with.stderr)
    );
    let mut client = server.client().await;
    client
        .get_stateful_async_invocation(authed(
            Some(&bearer(TOKEN_B)),
            None,
            get_request("from-cli"),
        ))
        .await
        .expect("stored under the token's account");
}
