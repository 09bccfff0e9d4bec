//! Tenancy: one account can never read, list, stop or watch another's invocations, nor see its
//! functions or configs. Foreign resources are NOT_FOUND, never PERMISSION_DENIED, so that ids
//! do not leak.

mod support;

use sai::pb;
use support::*;
use tokio_stream::StreamExt;
use tonic::Code;

#[tokio::test]
async fn account_b_cannot_reach_account_a() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    invoke(&mut c, "acct-a", FUNCTION, "secret-job").await;
    c.put_function_async_invoke_config(as_account(
        "acct-a",
        pb::PutFunctionAsyncInvokeConfigRequest {
            service_name: SERVICE.into(),
            function_name: FUNCTION.into(),
            qualifier: String::new(),
            config: Some(pb::AsyncInvokeConfig::default()),
        },
    ))
    .await
    .expect("a's config");

    // A B-wide watch opened first must not see A's later changes.
    let mut b_changes = c
        .watch_invocations(as_account(
            "acct-b",
            pb::WatchInvocationsRequest {
                service_name: String::new(),
                function_name: String::new(),
                from_sequence: 0,
                from_oldest: false,
            },
        ))
        .await
        .expect("b watch")
        .into_inner();

    let get_b = get(&mut c, "acct-b", FUNCTION, "secret-job").await;
    assert_eq!(get_b.expect_err("foreign get").code(), Code::NotFound);
    let stop_b = stop(&mut c, "acct-b", FUNCTION, "secret-job").await;
    assert_eq!(stop_b.expect_err("foreign stop").code(), Code::NotFound);
    let watch_b = c
        .watch_invocation(as_account(
            "acct-b",
            pb::WatchInvocationRequest {
                service_name: SERVICE.into(),
                function_name: FUNCTION.into(),
                qualifier: String::new(),
                invocation_id: "secret-job".into(),
                from_event_id: 0,
            },
        ))
        .await;
    assert_eq!(watch_b.expect_err("foreign watch").code(), Code::NotFound);
    assert!(list_all(&mut c, "acct-b", list_request(FUNCTION))
        .await
        .is_empty());
    let functions_b = c
        .list_stateful_async_invocation_functions(as_account(
            "acct-b",
            pb::ListStatefulAsyncInvocationFunctionsRequest::default(),
        ))
        .await
        .expect("b functions")
        .into_inner();
    assert!(functions_b.data.is_empty());
    let config_b = c
        .get_function_async_invoke_config(as_account(
            "acct-b",
            pb::GetFunctionAsyncInvokeConfigRequest {
                service_name: SERVICE.into(),
                function_name: FUNCTION.into(),
                qualifier: String::new(),
            },
        ))
        .await;
    assert_eq!(config_b.expect_err("foreign config").code(), Code::NotFound);
    let configs_b = c
        .list_function_async_invoke_configs(as_account(
            "acct-b",
            pb::ListFunctionAsyncInvokeConfigsRequest {
                service_name: SERVICE.into(),
                function_name: FUNCTION.into(),
                limit: 0,
                next_token: String::new(),
            },
        ))
        .await
        .expect("b configs")
        .into_inner();
    assert!(configs_b.configs.is_empty());
    let delete_b = c
        .delete_function_async_invoke_config(as_account(
            "acct-b",
            pb::DeleteFunctionAsyncInvokeConfigRequest {
                service_name: SERVICE.into(),
                function_name: FUNCTION.into(),
                qualifier: String::new(),
            },
        ))
        .await;
    assert_eq!(delete_b.expect_err("foreign delete").code(), Code::NotFound);

    // B may use the same id for itself: ids are scoped by account.
    invoke(&mut c, "acct-b", FUNCTION, "secret-job").await;
    let b_change = tokio::time::timeout(std::time::Duration::from_secs(10), b_changes.next())
        .await
        .expect("b sees its own change")
        .expect("open")
        .expect("ok");
    stop(&mut c, "acct-a", FUNCTION, "secret-job")
        .await
        .expect("a stops its own");
    let a_view = get(&mut c, "acct-a", FUNCTION, "secret-job")
        .await
        .expect("a get");
    assert_eq!(status_of(&a_view), pb::InvocationStatus::Stopped);
    let b_view = get(&mut c, "acct-b", FUNCTION, "secret-job")
        .await
        .expect("b get");
    assert_eq!(status_of(&b_view), pb::InvocationStatus::Enqueued);
    assert_eq!(
        b_change.invocation.expect("inv").invocation_id,
        "secret-job"
    );

    // A's stop is not among B's changes: B's next change is B's own.
    invoke(&mut c, "acct-b", FUNCTION, "b-second").await;
    let next_b = tokio::time::timeout(std::time::Duration::from_secs(10), b_changes.next())
        .await
        .expect("b sees its next change")
        .expect("open")
        .expect("ok");
    assert_eq!(next_b.invocation.expect("inv").invocation_id, "b-second");

    // And the default account is an account like any other.
    assert_eq!(
        get(&mut c, "default", FUNCTION, "secret-job")
            .await
            .expect_err("default is not acct-a")
            .code(),
        Code::NotFound
    );
}
