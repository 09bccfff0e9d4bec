//! `sai.v1.WorkerService`: thin handlers over the engine's poll, heartbeat and complete.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::task::JoinSet;
use tonic::{Request, Response, Status};

use crate::engine::Engine;
use crate::model::validate;
use crate::pb;
use crate::pb::worker_service_server::WorkerService as WorkerServiceApi;

use super::convert::{self, View};
use super::limits::{EdgeLimits, PerAccount};
use super::metadata::account;
use super::ApiError;

/// The worker-facing service.
#[derive(Clone)]
pub struct WorkerService {
    engine: Arc<Engine>,
    polls: Arc<PerAccount>,
    max_return_payload_bytes: usize,
}

impl WorkerService {
    /// The service over `engine`, within `limits`.
    pub fn new(engine: Arc<Engine>, limits: &EdgeLimits) -> Self {
        WorkerService {
            engine,
            polls: PerAccount::new("polls", "--max-polls-per-account", limits.polls_per_account),
            max_return_payload_bytes: limits.max_return_payload_bytes,
        }
    }
}

const WITH_PAYLOAD: View = View {
    payload: true,
    events: false,
};

#[tonic::async_trait]
impl WorkerServiceApi for WorkerService {
    async fn poll_invocations(
        &self,
        request: Request<pb::PollInvocationsRequest>,
    ) -> Result<Response<pb::PollInvocationsResponse>, Status> {
        let account = account(&request)?;
        let poll = convert::poll_request(&account, request.into_inner()).map_err(ApiError::from)?;
        let _slot = self.polls.acquire(&account)?;
        let grants = self
            .engine
            .poll(
                poll.targets,
                poll.worker_id,
                poll.max_invocations,
                poll.wait,
            )
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::PollInvocationsResponse {
            leases: grants
                .into_iter()
                .map(|grant| pb::InvocationLease {
                    lease_token: grant.token,
                    invocation: Some(convert::invocation_to_pb(&grant.invocation, WITH_PAYLOAD)),
                    attempt: i64::from(grant.attempt),
                    lease_deadline: grant.deadline_ms,
                })
                .collect(),
        }))
    }

    async fn heartbeat_invocation(
        &self,
        request: Request<pb::HeartbeatInvocationRequest>,
    ) -> Result<Response<pb::HeartbeatInvocationResponse>, Status> {
        let account = account(&request)?;
        let r = request.into_inner();
        convert::lease_token(&r.lease_token).map_err(ApiError::from)?;
        let (stop_requested, lease_deadline) = self
            .engine
            .heartbeat(&account, &r.lease_token)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::HeartbeatInvocationResponse {
            stop_requested,
            lease_deadline,
        }))
    }

    async fn complete_invocation(
        &self,
        request: Request<pb::CompleteInvocationRequest>,
    ) -> Result<Response<pb::CompleteInvocationResponse>, Status> {
        let account = account(&request)?;
        let r = request.into_inner();
        convert::lease_token(&r.lease_token).map_err(ApiError::from)?;
        let outcome =
            convert::outcome(r.outcome, self.max_return_payload_bytes).map_err(ApiError::from)?;
        let invocation = self
            .engine
            .complete(&account, &r.lease_token, outcome)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::CompleteInvocationResponse {
            invocation: Some(completed_view(&invocation)),
        }))
    }

    async fn complete_invocations(
        &self,
        request: Request<pb::CompleteInvocationsRequest>,
    ) -> Result<Response<pb::CompleteInvocationsResponse>, Status> {
        let account = account(&request)?;
        let completions = request.into_inner().completions;
        validate::batch_count("completions", completions.len()).map_err(ApiError::from)?;
        let count = completions.len();
        // Entries of one lease apply in request order; different leases run concurrently, so
        // that their commits share one sync. Answers come back in request order.
        let mut by_lease: HashMap<String, Vec<(usize, pb::CompleteInvocationRequest)>> =
            HashMap::new();
        for (at, completion) in completions.into_iter().enumerate() {
            by_lease
                .entry(completion.lease_token.clone())
                .or_default()
                .push((at, completion));
        }
        let mut pending = JoinSet::new();
        for (_, entries) in by_lease {
            let (engine, account) = (self.engine.clone(), account.clone());
            let max_return = self.max_return_payload_bytes;
            pending.spawn(async move {
                let mut results = Vec::with_capacity(entries.len());
                for (at, completion) in entries {
                    let result = complete_one(&engine, &account, completion, max_return).await;
                    results.push((at, result));
                }
                results
            });
        }
        let mut results = vec![pb::CompleteInvocationResult::default(); count];
        while let Some(done) = pending.join_next().await {
            let done = done.map_err(|_| Status::unavailable("the server is shutting down"))?;
            for (at, result) in done {
                results[at] = answer(result);
            }
        }
        Ok(Response::new(pb::CompleteInvocationsResponse { results }))
    }
}

/// One entry's result as CompleteInvocations reports it.
fn answer(result: Result<Arc<crate::model::Invocation>, Status>) -> pb::CompleteInvocationResult {
    match result {
        Ok(invocation) => pb::CompleteInvocationResult {
            code: 0,
            message: String::new(),
            invocation: Some(completed_view(&invocation)),
        },
        Err(status) => pb::CompleteInvocationResult {
            code: status.code() as i32,
            message: status.message().to_string(),
            invocation: None,
        },
    }
}

/// One completion, checked and applied as CompleteInvocation does.
async fn complete_one(
    engine: &Engine,
    account: &str,
    completion: pb::CompleteInvocationRequest,
    max_return_payload_bytes: usize,
) -> Result<Arc<crate::model::Invocation>, Status> {
    convert::lease_token(&completion.lease_token).map_err(ApiError::from)?;
    let outcome =
        convert::outcome(completion.outcome, max_return_payload_bytes).map_err(ApiError::from)?;
    Ok(engine
        .complete(account, &completion.lease_token, outcome)
        .await
        .map_err(ApiError::from)?)
}

/// What a completion answers: the invocation without payload or events.
fn completed_view(invocation: &crate::model::Invocation) -> pb::StatefulAsyncInvocation {
    convert::invocation_to_pb(
        invocation,
        View {
            payload: false,
            events: false,
        },
    )
}
