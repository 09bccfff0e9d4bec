//! `sai demo`: start the service and show its main job with the real clients: invocations
//! accepted, run by a worker (one fails once and is retried), one stopped, all followed live
//! through a function-level watch, then listed and fetched with their history. The server
//! keeps running afterwards for exploring with grpcurl and the `sai` client commands.

use std::net::SocketAddr;
use std::time::Duration;

use tokio_stream::StreamExt;

use crate::pb;

use super::output::status_name;
use crate::pb::stateful_async_invocation_service_client::StatefulAsyncInvocationServiceClient;
use crate::server::{self, ServerConfig};

const SERVICE: &str = "demo-service";
const FUNCTION: &str = "demo-function";

/// Serve on `listen`, run the tour against it, then keep serving until SIGINT/SIGTERM.
pub async fn run(listen: SocketAddr) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|err| format!("cannot listen on {listen}: {err}"))?;
    let addr = listener
        .local_addr()
        .map_err(|err| format!("cannot read the listening address: {err}"))?;
    let serving = tokio::spawn(server::serve(
        listener,
        ServerConfig::default(),
        server::shutdown_signal(),
    ));
    tour(addr)
        .await
        .map_err(|status| format!("demo call failed: {}", super::rpc_error_line(&status)))?;
    println!();
    println!("sai keeps serving on {addr}; explore it with grpcurl, for example:");
    println!("  grpcurl -plaintext {addr} list");
    println!("  grpcurl -plaintext {addr} describe sai.v1.StatefulAsyncInvocationService");
    println!("Press Ctrl-C to stop.");
    serving
        .await
        .map_err(|err| format!("server task: {err}"))?
        .map_err(|err| err.to_string())
}

async fn tour(addr: SocketAddr) -> Result<(), tonic::Status> {
    let mut client = StatefulAsyncInvocationServiceClient::connect(format!("http://{addr}"))
        .await
        .map_err(|err| tonic::Status::unavailable(err.to_string()))?;
    println!("sai is serving on {addr}");

    let mut changes = client
        .watch_invocations(pb::WatchInvocationsRequest {
            service_name: SERVICE.into(),
            function_name: FUNCTION.into(),
            from_sequence: 0,
            from_oldest: false,
        })
        .await?
        .into_inner();
    let printer = tokio::spawn(async move {
        while let Ok(Some(Ok(change))) =
            tokio::time::timeout(Duration::from_secs(2), changes.next()).await
        {
            let (Some(event), Some(inv)) = (change.event, change.invocation) else {
                continue;
            };
            println!(
                "  watch  #{:<3} {:<12} event {} -> {}",
                change.sequence,
                inv.invocation_id,
                event.event_id,
                status_name(event.status)
            );
        }
    });

    client
        .put_function_async_invoke_config(pb::PutFunctionAsyncInvokeConfigRequest {
            service_name: SERVICE.into(),
            function_name: FUNCTION.into(),
            qualifier: String::new(),
            config: Some(pb::AsyncInvokeConfig {
                max_async_retry_attempts: Some(2),
                ..Default::default()
            }),
        })
        .await?;
    println!("configured {SERVICE}/{FUNCTION}: up to 2 retries");
    for id in ["order-1001", "order-1002", "order-1003"] {
        let answer = client
            .invoke_function(pb::InvokeFunctionRequest {
                service_name: SERVICE.into(),
                function_name: FUNCTION.into(),
                qualifier: String::new(),
                invocation_id: id.into(),
                payload: format!(r#"{{"order":"{id}"}}"#),
            })
            .await?
            .into_inner();
        println!(
            "invoked {SERVICE}/{FUNCTION} {} (request {})",
            answer.invocation_id, answer.request_id
        );
    }
    client
        .stop_stateful_async_invocation(pb::StopStatefulAsyncInvocationRequest {
            service_name: SERVICE.into(),
            function_name: FUNCTION.into(),
            qualifier: String::new(),
            invocation_id: "order-1002".into(),
        })
        .await?;
    println!("stopped order-1002 while queued");
    run_worker(addr, 3).await?;
    let _ = printer.await;

    let page = client
        .list_stateful_async_invocations(pb::ListStatefulAsyncInvocationsRequest {
            service_name: SERVICE.into(),
            function_name: FUNCTION.into(),
            sort_order_by_time: pb::SortOrder::Asc as i32,
            ..Default::default()
        })
        .await?
        .into_inner();
    println!("list {SERVICE}/{FUNCTION}:");
    for inv in page.invocations {
        println!(
            "  {:<12} {:<9} started {}",
            inv.invocation_id,
            status_name(inv.status),
            inv.started_time
        );
    }
    let retried = client
        .get_stateful_async_invocation(pb::GetStatefulAsyncInvocationRequest {
            service_name: SERVICE.into(),
            function_name: FUNCTION.into(),
            qualifier: String::new(),
            invocation_id: "order-1003".into(),
        })
        .await?
        .into_inner();
    println!("get order-1003: {} events", retried.events.len());
    for event in retried.events {
        println!(
            "  event {} {:<9} at {} {}",
            event.event_id,
            status_name(event.status),
            event.timestamp,
            event.event_detail
        );
    }
    Ok(())
}

/// A tiny in-process worker: completes `runs` attempts; the first attempt of order-1003 fails
/// so that the retry shows.
async fn run_worker(addr: SocketAddr, runs: usize) -> Result<(), tonic::Status> {
    use crate::pb::complete_invocation_request::Outcome;
    let mut worker =
        crate::pb::worker_service_client::WorkerServiceClient::connect(format!("http://{addr}"))
            .await
            .map_err(|err| tonic::Status::unavailable(err.to_string()))?;
    let mut done = 0;
    while done < runs {
        let leases = worker
            .poll_invocations(pb::PollInvocationsRequest {
                functions: vec![pb::FunctionRef {
                    service_name: SERVICE.into(),
                    function_name: FUNCTION.into(),
                    qualifier: String::new(),
                }],
                worker_id: "demo-worker".into(),
                max_invocations: 10,
                wait_time_ms: 5_000,
            })
            .await?
            .into_inner()
            .leases;
        for lease in leases {
            let invocation = lease.invocation.unwrap_or_default();
            let outcome = if invocation.invocation_id == "order-1003" && lease.attempt == 1 {
                println!("worker: {} attempt 1 fails", invocation.invocation_id);
                Outcome::Failure(pb::CompleteFailure {
                    error_message: "payment service timed out".into(),
                    ..Default::default()
                })
            } else {
                println!(
                    "worker: {} attempt {} succeeds",
                    invocation.invocation_id, lease.attempt
                );
                Outcome::Success(pb::CompleteSuccess {
                    return_payload: format!(r#"{{"shipped":"{}"}}"#, invocation.invocation_id),
                })
            };
            worker
                .complete_invocation(pb::CompleteInvocationRequest {
                    lease_token: lease.lease_token,
                    outcome: Some(outcome),
                })
                .await?;
            done += 1;
        }
    }
    Ok(())
}
