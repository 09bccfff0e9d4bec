//! The baseline: the least a tonic server can do for sai's unary calls. It serves the same
//! `StatefulAsyncInvocationService` from one `DashMap` of ready-made answers: a get is a
//! lookup and a clone, an invoke is an insert (no validation, no lifecycle, no disk). Every
//! other RPC is UNIMPLEMENTED. Same proto, same transport, same machine: what is left between
//! it and sai is sai's own work.

use std::net::SocketAddr;

use dashmap::DashMap;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::pb;
use crate::pb::stateful_async_invocation_service_server::{
    StatefulAsyncInvocationService, StatefulAsyncInvocationServiceServer,
};

use super::BenchError;

/// The key of a stored answer.
type Key = (String, String, String);

/// The baseline service.
pub struct Baseline {
    records: DashMap<Key, pb::StatefulAsyncInvocation>,
}

/// A ready-made finished invocation with `events` events, like the ones sai serves.
pub fn sample(
    service: &str,
    function: &str,
    id: &str,
    events: usize,
) -> pb::StatefulAsyncInvocation {
    pb::StatefulAsyncInvocation {
        service_name: service.into(),
        function_name: function.into(),
        qualifier: "LATEST".into(),
        invocation_id: id.into(),
        status: pb::InvocationStatus::Succeeded as i32,
        started_time: 1_700_000_000_000,
        end_time: 1_700_000_000_020,
        invocation_payload: "p".repeat(100),
        request_id: format!("req-{id}"),
        instance_id: "bench-worker".into(),
        return_payload: "ok".into(),
        events: (1..=events)
            .map(|n| pb::StatefulAsyncInvocationEvent {
                event_id: n as i64,
                status: pb::InvocationStatus::Running as i32,
                timestamp: 1_700_000_000_000 + n as i64,
                event_detail: "{\"attempt\":1,\"workerId\":\"bench-worker\"}".into(),
            })
            .collect(),
        ..Default::default()
    }
}

/// Serve the baseline on `listen` with `records` ready-made invocations of
/// `service/function` (ids as those of invocations seeded from `start_ms`), until the process
/// is killed.
pub async fn serve(
    listen: SocketAddr,
    service: &str,
    function: &str,
    records: usize,
    start_ms: i64,
) -> Result<(), BenchError> {
    let baseline = Baseline {
        records: DashMap::new(),
    };
    for n in 0..records {
        let id = super::history::seed_id(start_ms, n);
        baseline.records.insert(
            (service.into(), function.into(), id.clone()),
            sample(service, function, &id, 6),
        );
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| BenchError::Server(format!("cannot listen on {listen}: {e}")))?;
    let bound = listener
        .local_addr()
        .map_err(|e| BenchError::Server(format!("cannot read the listening address: {e}")))?;
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    crate::cli::announce_ready(crate::server::Bound {
        grpc: bound,
        http: None,
    });
    tonic::transport::Server::builder()
        .add_service(StatefulAsyncInvocationServiceServer::new(baseline))
        .serve_with_incoming(incoming)
        .await
        .map_err(|e| BenchError::Server(e.to_string()))
}

type Stream<T> = ReceiverStream<Result<T, Status>>;

fn unimplemented<T>() -> Result<Response<T>, Status> {
    Err(Status::unimplemented(
        "the baseline serves only get and invoke",
    ))
}

#[tonic::async_trait]
impl StatefulAsyncInvocationService for Baseline {
    async fn invoke_function(
        &self,
        request: Request<pb::InvokeFunctionRequest>,
    ) -> Result<Response<pb::InvokeFunctionResponse>, Status> {
        let r = request.into_inner();
        let mut record = sample(&r.service_name, &r.function_name, &r.invocation_id, 1);
        record.invocation_payload = r.payload;
        self.records.insert(
            (r.service_name, r.function_name, r.invocation_id.clone()),
            record,
        );
        Ok(Response::new(pb::InvokeFunctionResponse {
            invocation_id: r.invocation_id,
            request_id: String::new(),
        }))
    }

    async fn invoke_functions(
        &self,
        _: Request<pb::InvokeFunctionsRequest>,
    ) -> Result<Response<pb::InvokeFunctionsResponse>, Status> {
        unimplemented()
    }

    type InvokeFunctionStreamStream = Stream<pb::InvokeFunctionResult>;

    async fn invoke_function_stream(
        &self,
        _: Request<tonic::Streaming<pb::InvokeFunctionRequest>>,
    ) -> Result<Response<Self::InvokeFunctionStreamStream>, Status> {
        unimplemented()
    }

    async fn get_stateful_async_invocation(
        &self,
        request: Request<pb::GetStatefulAsyncInvocationRequest>,
    ) -> Result<Response<pb::StatefulAsyncInvocation>, Status> {
        let r = request.into_inner();
        self.records
            .get(&(r.service_name, r.function_name, r.invocation_id))
            .map(|record| Response::new(record.clone()))
            .ok_or_else(|| Status::not_found("no such invocation"))
    }

    async fn list_stateful_async_invocations(
        &self,
        _: Request<pb::ListStatefulAsyncInvocationsRequest>,
    ) -> Result<Response<pb::ListStatefulAsyncInvocationsResponse>, Status> {
        unimplemented()
    }

    async fn stop_stateful_async_invocation(
        &self,
        _: Request<pb::StopStatefulAsyncInvocationRequest>,
    ) -> Result<Response<pb::StopStatefulAsyncInvocationResponse>, Status> {
        unimplemented()
    }

    type WatchInvocationStream = Stream<pb::WatchInvocationResponse>;

    async fn watch_invocation(
        &self,
        _: Request<pb::WatchInvocationRequest>,
    ) -> Result<Response<Self::WatchInvocationStream>, Status> {
        unimplemented()
    }

    type WatchInvocationsStream = Stream<pb::WatchInvocationsResponse>;

    async fn watch_invocations(
        &self,
        _: Request<pb::WatchInvocationsRequest>,
    ) -> Result<Response<Self::WatchInvocationsStream>, Status> {
        unimplemented()
    }

    async fn list_stateful_async_invocation_functions(
        &self,
        _: Request<pb::ListStatefulAsyncInvocationFunctionsRequest>,
    ) -> Result<Response<pb::ListStatefulAsyncInvocationFunctionsResponse>, Status> {
        // Answered, so that the bench's readiness probe works on the baseline too.
        Ok(Response::new(Default::default()))
    }

    async fn put_function_async_invoke_config(
        &self,
        _: Request<pb::PutFunctionAsyncInvokeConfigRequest>,
    ) -> Result<Response<pb::AsyncInvokeConfig>, Status> {
        unimplemented()
    }

    async fn get_function_async_invoke_config(
        &self,
        _: Request<pb::GetFunctionAsyncInvokeConfigRequest>,
    ) -> Result<Response<pb::AsyncInvokeConfig>, Status> {
        unimplemented()
    }

    async fn delete_function_async_invoke_config(
        &self,
        _: Request<pb::DeleteFunctionAsyncInvokeConfigRequest>,
    ) -> Result<Response<pb::DeleteFunctionAsyncInvokeConfigResponse>, Status> {
        unimplemented()
    }

    async fn list_function_async_invoke_configs(
        &self,
        _: Request<pb::ListFunctionAsyncInvokeConfigsRequest>,
    ) -> Result<Response<pb::ListFunctionAsyncInvokeConfigsResponse>, Status> {
        unimplemented()
    }
}
