//! `sai.v1.WorkerService`: thin handlers over the engine's poll, heartbeat and complete.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::engine::Engine;
use crate::pb;
use crate::pb::worker_service_server::WorkerService as WorkerServiceApi;

use super::convert::{self, View};
use super::metadata::account;
use super::ApiError;

/// The worker-facing service.
#[derive(Clone)]
pub struct WorkerService {
    engine: Arc<Engine>,
}

impl WorkerService {
    /// The service over `engine`.
    pub fn new(engine: Arc<Engine>) -> Self {
        WorkerService { engine }
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
        let outcome = convert::outcome(r.outcome).map_err(ApiError::from)?;
        let invocation = self
            .engine
            .complete(&account, &r.lease_token, outcome)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::CompleteInvocationResponse {
            invocation: Some(convert::invocation_to_pb(
                &invocation,
                View {
                    payload: false,
                    events: false,
                },
            )),
        }))
    }
}
