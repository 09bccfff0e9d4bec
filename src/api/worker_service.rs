//! `sai.v1.WorkerService`: thin handlers over the engine's poll, heartbeat and complete.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::engine::Engine;
use crate::model::validate;
use crate::pb;
use crate::pb::worker_service_server::WorkerService as WorkerServiceApi;

use super::convert::{self, View};
use super::limits::{EdgeLimits, PerAccount};
use super::metadata::account;
use super::{detached, ApiError};

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

/// How long before a poll's call deadline it answers, for the answer to reach the caller.
const DEADLINE_MARGIN: std::time::Duration = std::time::Duration::from_millis(100);

/// The time the caller gives a call: its `grpc-timeout` header (a number and a unit).
fn call_deadline<T>(request: &Request<T>) -> Option<std::time::Duration> {
    use std::time::Duration;
    let value = request.metadata().get("grpc-timeout")?.to_str().ok()?;
    let (number, unit) = value.split_at(value.len().checked_sub(1)?);
    let number: u64 = number.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(number.saturating_mul(3600)),
        "M" => Duration::from_secs(number.saturating_mul(60)),
        "S" => Duration::from_secs(number),
        "m" => Duration::from_millis(number),
        "u" => Duration::from_micros(number),
        "n" => Duration::from_nanos(number),
        _ => return None,
    })
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
        let deadline = call_deadline(&request);
        let mut poll =
            convert::poll_request(&account, request.into_inner()).map_err(ApiError::from)?;
        if let Some(deadline) = deadline {
            // Answer (empty, if nothing came) before the caller gives up on the call.
            poll.wait = poll.wait.min(deadline.saturating_sub(DEADLINE_MARGIN));
        }
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
        let engine = self.engine.clone();
        let invocation =
            detached(async move { engine.complete(&account, &r.lease_token, outcome).await })
                .await?
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
        // Entries that fail their checks are answered without reaching the engine; the rest
        // are applied together, in one commit, and put back in request order.
        let mut results = vec![pb::CompleteInvocationResult::default(); completions.len()];
        let mut applying_at = Vec::with_capacity(completions.len());
        let mut entries = Vec::with_capacity(completions.len());
        let mut tokens = Vec::with_capacity(completions.len());
        for (at, completion) in completions.into_iter().enumerate() {
            let checked = convert::lease_token(&completion.lease_token)
                .and_then(|()| convert::outcome(completion.outcome, self.max_return_payload_bytes));
            tokens.push(completion.lease_token.clone());
            match checked {
                Ok(outcome) => {
                    applying_at.push(at);
                    entries.push((completion.lease_token, outcome));
                }
                Err(err) => results[at] = answer(Err(ApiError::from(err).into()), &tokens[at]),
            }
        }
        let engine = self.engine.clone();
        let applied = detached(async move { engine.complete_all(&account, entries).await }).await?;
        for (at, result) in applying_at.into_iter().zip(applied) {
            results[at] = answer(
                result.map_err(|err| ApiError::from(err).into()),
                &tokens[at],
            );
        }
        Ok(Response::new(pb::CompleteInvocationsResponse { results }))
    }
}

/// One entry's result as CompleteInvocations reports it, for the entry of `lease_token`.
fn answer(
    result: Result<Arc<crate::model::Invocation>, Status>,
    lease_token: &str,
) -> pb::CompleteInvocationResult {
    match result {
        Ok(invocation) => pb::CompleteInvocationResult {
            code: 0,
            message: String::new(),
            invocation: Some(completed_view(&invocation)),
            lease_token: lease_token.to_string(),
            error_code: String::new(),
        },
        Err(status) => pb::CompleteInvocationResult {
            code: status.code() as i32,
            message: status.message().to_string(),
            invocation: None,
            lease_token: lease_token.to_string(),
            error_code: super::error::error_code(&status),
        },
    }
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
