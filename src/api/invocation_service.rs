//! `sai.v1.StatefulAsyncInvocationService`: thin handlers over the engine (writes) and the
//! store (reads). Each parses its request, makes one call, and converts the answer.

use std::pin::Pin;
use std::sync::Arc;

use futures_util::StreamExt;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::engine::Engine;
use crate::model::validate::{self, ValidationError};
use crate::pb;
use crate::pb::stateful_async_invocation_service_server::StatefulAsyncInvocationService;
use crate::store::{ResumeFrom, StoreError, StoredChange, WatchScope};

use super::convert::{self, InvocationRef, View};
use super::limits::{EdgeLimits, PerAccount};
use super::metadata::{account, record_invocation, request_id};
use super::{detached, ApiError};

/// The FC mirror service.
#[derive(Clone)]
pub struct InvocationService {
    engine: Arc<Engine>,
    watches: Arc<PerAccount>,
    invoke_streams: Arc<PerAccount>,
    max_payload_bytes: usize,
}

impl InvocationService {
    /// The service over `engine`, within `limits`.
    pub fn new(engine: Arc<Engine>, limits: &EdgeLimits) -> Self {
        InvocationService {
            engine,
            watches: PerAccount::new(
                "watch streams",
                "--max-watches-per-account",
                limits.watches_per_account,
            ),
            invoke_streams: PerAccount::new(
                "invoke streams",
                "--max-invoke-streams-per-account",
                limits.invoke_streams_per_account,
            ),
            max_payload_bytes: limits.max_payload_bytes,
        }
    }

    /// Open WatchInvocation(s) streams, dashboard event streams included.
    pub fn watch_streams(&self) -> usize {
        self.watches.total()
    }

    /// Open InvokeFunctionStream streams.
    pub fn invoke_streams(&self) -> usize {
        self.invoke_streams.total()
    }

    /// `read` of the invocation `target` names, if it exists and matches the qualifier
    /// asked for; it reads the stored record in place, without copying it first.
    async fn find<R>(
        &self,
        target: &InvocationRef,
        read: impl FnOnce(&crate::model::Invocation) -> R,
    ) -> Result<R, ApiError> {
        self.engine
            .backend()
            .get(&target.key)
            .await
            .map_err(ApiError::from)?
            .filter(|inv| target.matches(inv))
            .map(|inv| read(&inv))
            .ok_or_else(|| StoreError::InvocationNotFound(target.key.clone()).into())
    }

    /// Check and accept `entries` as InvokeFunction would, the accepted ones in one commit;
    /// one result per entry, in order. Only a failure of the commit itself is an error.
    async fn invoke_entries(
        &self,
        account: &Arc<str>,
        request_id: &str,
        entries: Vec<pb::InvokeFunctionRequest>,
    ) -> Result<Vec<pb::InvokeFunctionResult>, Status> {
        // Entries that fail their checks are answered without reaching the store; the rest
        // are accepted together, and their results put back in request order.
        let mut results = vec![pb::InvokeFunctionResult::default(); entries.len()];
        let mut accepted_at = Vec::with_capacity(entries.len());
        let mut new = Vec::with_capacity(entries.len());
        let mut asked_ids = Vec::with_capacity(entries.len());
        for (at, entry) in entries.into_iter().enumerate() {
            asked_ids.push(entry.invocation_id.clone());
            match convert::new_invocation(account, request_id, entry, self.max_payload_bytes) {
                Ok(one) => {
                    accepted_at.push(at);
                    new.push(one);
                }
                Err(err) => {
                    results[at] = invoke_result(Err(ApiError::from(err).into()), &asked_ids[at])
                }
            }
        }
        if !new.is_empty() {
            // Not detached: the engine queues what it stored even if this call is dropped.
            let stored = self.engine.invoke_all(new).await.map_err(ApiError::from)?;
            for (at, one) in accepted_at.into_iter().zip(stored) {
                results[at] = invoke_result(
                    one.map_err(|err| ApiError::from(err).into()),
                    &asked_ids[at],
                );
            }
        }
        Ok(results)
    }
}

/// Stream of InvokeFunctionStream answers.
pub type InvokeResultStream =
    Pin<Box<dyn Stream<Item = Result<pb::InvokeFunctionResult, Status>> + Send>>;

/// Results an InvokeFunctionStream holds for a client slower to read them than to send.
const STREAM_RESULTS_BUFFERED: usize = 2 * validate::MAX_BATCH;

/// The messages of a group up to the first broken one (undecodable, too large), and that
/// one's error: the stream ends there, after the messages before it are answered.
fn split_at_error<T>(group: Vec<Result<T, Status>>) -> (Vec<T>, Option<Status>) {
    let mut entries = Vec::with_capacity(group.len());
    for message in group {
        match message {
            Ok(entry) => entries.push(entry),
            Err(status) => return (entries, Some(super::error::transport_status(status))),
        }
    }
    (entries, None)
}

/// Stream of WatchInvocation answers.
pub type InvocationEventStream =
    Pin<Box<dyn Stream<Item = Result<pb::WatchInvocationResponse, Status>> + Send>>;
/// Stream of WatchInvocations answers.
pub type InvocationChangeStream =
    Pin<Box<dyn Stream<Item = Result<pb::WatchInvocationsResponse, Status>> + Send>>;

const SUMMARY: View = View {
    payload: false,
    events: false,
};

fn watch_invocation_message(change: &StoredChange) -> pb::WatchInvocationResponse {
    pb::WatchInvocationResponse {
        event: Some(convert::event_to_pb(&change.event)),
        invocation: Some(convert::invocation_to_pb(&change.invocation, SUMMARY)),
    }
}

fn watch_changes_message(change: &StoredChange) -> pb::WatchInvocationsResponse {
    pb::WatchInvocationsResponse {
        sequence: change.sequence,
        event: Some(convert::event_to_pb(&change.event)),
        invocation: Some(convert::invocation_to_pb(&change.invocation, SUMMARY)),
    }
}

/// A watch cursor as a response stream: each change becomes one message, the first error is
/// sent and ends the stream. No task or channel of its own: the transport polls the cursor
/// directly, and dropping the stream (the client left) drops the cursor.
macro_rules! stream_of {
    ($watch:expr, $slot:expr, $to_message:expr) => {{
        // The slot lives as long as the stream: it is given back when the stream ends or the
        // client goes away.
        let state = Some(($watch, $slot));
        Box::pin(futures_util::stream::unfold(state, |state| async move {
            let (mut watch, slot) = state?;
            match watch.next().await? {
                Ok(change) => Some((Ok($to_message(&change)), Some((watch, slot)))),
                Err(err) => Some((Err(Status::from(ApiError::from(err))), None)),
            }
        }))
    }};
}

#[tonic::async_trait]
impl StatefulAsyncInvocationService for InvocationService {
    async fn invoke_function(
        &self,
        request: Request<pb::InvokeFunctionRequest>,
    ) -> Result<Response<pb::InvokeFunctionResponse>, Status> {
        let account = account(&request)?;
        let request_id = request_id(&request);
        let new = convert::new_invocation(
            &account,
            &request_id,
            request.into_inner(),
            self.max_payload_bytes,
        )
        .map_err(ApiError::from)?;
        // Not detached: the engine queues what it stored even if this call is dropped.
        let invocation = self.engine.invoke(new).await.map_err(ApiError::from)?;
        record_invocation(&invocation.key);
        Ok(Response::new(pb::InvokeFunctionResponse {
            invocation_id: invocation.key.id.to_string(),
            request_id: request_id.to_string(),
        }))
    }

    async fn invoke_functions(
        &self,
        request: Request<pb::InvokeFunctionsRequest>,
    ) -> Result<Response<pb::InvokeFunctionsResponse>, Status> {
        let account = account(&request)?;
        let request_id = request_id(&request);
        let entries = request.into_inner().invocations;
        validate::batch_count("invocations", entries.len()).map_err(ApiError::from)?;
        let results = self.invoke_entries(&account, &request_id, entries).await?;
        Ok(Response::new(pb::InvokeFunctionsResponse {
            results,
            request_id: request_id.to_string(),
        }))
    }

    type InvokeFunctionStreamStream = InvokeResultStream;

    async fn invoke_function_stream(
        &self,
        request: Request<tonic::Streaming<pb::InvokeFunctionRequest>>,
    ) -> Result<Response<Self::InvokeFunctionStreamStream>, Status> {
        let account = account(&request)?;
        let request_id = request_id(&request);
        // Held for as long as the stream is served.
        let slot = self.invoke_streams.acquire(&account)?;
        // Whatever has arrived when the previous group is stored forms the next group, so a
        // busy stream commits many messages at once and a quiet one answers each at once.
        let mut groups = request.into_inner().ready_chunks(validate::MAX_BATCH);
        let (results, answers) = tokio::sync::mpsc::channel(STREAM_RESULTS_BUFFERED);
        let service = self.clone();
        tokio::spawn(async move {
            let _slot = slot;
            loop {
                let group = tokio::select! {
                    group = groups.next() => group,
                    _ = service.engine.stopping() => {
                        // Every message answered so far stays answered; the client resends
                        // the rest (those without a result) once it reconnects.
                        let _ = results.send(Err(Status::from(ApiError::from(
                            crate::engine::EngineError::ShuttingDown,
                        )))).await;
                        return;
                    }
                };
                let Some(group) = group else {
                    return; // the client closed its side, and has every result
                };
                let (entries, error) = split_at_error(group);
                let answered = if entries.is_empty() {
                    Vec::new()
                } else {
                    match service.invoke_entries(&account, &request_id, entries).await {
                        Ok(answered) => answered,
                        // The commit failed (storage, shutdown): nothing more can be accepted.
                        Err(status) => {
                            let _ = results.send(Err(status)).await;
                            return;
                        }
                    }
                };
                for result in answered {
                    if results.send(Ok(result)).await.is_err() {
                        return; // the client went away; what was accepted stays accepted
                    }
                }
                if let Some(status) = error {
                    let _ = results.send(Err(status)).await;
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(answers),
        )))
    }

    async fn get_stateful_async_invocation(
        &self,
        request: Request<pb::GetStatefulAsyncInvocationRequest>,
    ) -> Result<Response<pb::StatefulAsyncInvocation>, Status> {
        let account = account(&request)?;
        let r = request.into_inner();
        let target = InvocationRef::parse(
            &account,
            &r.service_name,
            &r.function_name,
            &r.qualifier,
            &r.invocation_id,
        )
        .map_err(ApiError::from)?;
        record_invocation(&target.key);
        let view = View {
            payload: true,
            events: true,
        };
        let invocation = self
            .find(&target, |inv| convert::invocation_to_pb(inv, view))
            .await?;
        Ok(Response::new(invocation))
    }

    async fn list_stateful_async_invocations(
        &self,
        request: Request<pb::ListStatefulAsyncInvocationsRequest>,
    ) -> Result<Response<pb::ListStatefulAsyncInvocationsResponse>, Status> {
        let account = account(&request)?;
        let r = request.into_inner();
        let view = View {
            payload: r.include_payload,
            events: false,
        };
        let query = convert::list_query(&account, r).map_err(ApiError::from)?;
        let page = self
            .engine
            .backend()
            .list(&query)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::ListStatefulAsyncInvocationsResponse {
            invocations: page
                .invocations
                .iter()
                .map(|inv| convert::invocation_to_pb(inv, view))
                .collect(),
            next_token: page.next_token,
        }))
    }

    async fn stop_stateful_async_invocation(
        &self,
        request: Request<pb::StopStatefulAsyncInvocationRequest>,
    ) -> Result<Response<pb::StopStatefulAsyncInvocationResponse>, Status> {
        let account = account(&request)?;
        let r = request.into_inner();
        let target = InvocationRef::parse(
            &account,
            &r.service_name,
            &r.function_name,
            &r.qualifier,
            &r.invocation_id,
        )
        .map_err(ApiError::from)?;
        record_invocation(&target.key);
        // The qualifier is immutable, so checking it before the stop cannot race.
        self.find(&target, |_| ()).await?;
        let engine = self.engine.clone();
        let invocation = detached(async move { engine.stop(target.key).await })
            .await?
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::StopStatefulAsyncInvocationResponse {
            invocation: Some(convert::invocation_to_pb(&invocation, SUMMARY)),
        }))
    }

    type WatchInvocationStream = InvocationEventStream;

    async fn watch_invocation(
        &self,
        request: Request<pb::WatchInvocationRequest>,
    ) -> Result<Response<Self::WatchInvocationStream>, Status> {
        let account = account(&request)?;
        let r = request.into_inner();
        let target = InvocationRef::parse(
            &account,
            &r.service_name,
            &r.function_name,
            &r.qualifier,
            &r.invocation_id,
        )
        .map_err(ApiError::from)?;
        record_invocation(&target.key);
        let from_event_id =
            convert::non_negative("from_event_id", r.from_event_id).map_err(ApiError::from)?;
        self.find(&target, |_| ()).await?;
        let slot = self.watches.acquire(&account)?;
        let watch = self
            .engine
            .backend()
            .watch_invocation(target.key, from_event_id)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(stream_of!(
            watch,
            slot,
            watch_invocation_message
        )))
    }

    type WatchInvocationsStream = InvocationChangeStream;

    async fn watch_invocations(
        &self,
        request: Request<pb::WatchInvocationsRequest>,
    ) -> Result<Response<Self::WatchInvocationsStream>, Status> {
        let account = account(&request)?;
        let r = request.into_inner();
        let slot = self.watches.acquire(&account)?;
        let scope = watch_scope(account, &r).map_err(ApiError::from)?;
        let watch = self
            .engine
            .backend()
            .watch_changes(
                scope,
                match (r.from_sequence, r.from_oldest) {
                    (0, false) => ResumeFrom::Now,
                    (0, true) => ResumeFrom::Oldest,
                    (after, _) => ResumeFrom::After(after),
                },
            )
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(stream_of!(
            watch,
            slot,
            watch_changes_message
        )))
    }

    async fn list_stateful_async_invocation_functions(
        &self,
        request: Request<pb::ListStatefulAsyncInvocationFunctionsRequest>,
    ) -> Result<Response<pb::ListStatefulAsyncInvocationFunctionsResponse>, Status> {
        let account = account(&request)?;
        let r = request.into_inner();
        let limit = validate::limit(
            "limit",
            r.limit,
            convert::DEFAULT_CATALOG_LIMIT,
            convert::MAX_LIST_LIMIT,
        )
        .map_err(ApiError::from)?;
        let page = self
            .engine
            .backend()
            .list_functions(&account, limit, &r.next_token)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(
            pb::ListStatefulAsyncInvocationFunctionsResponse {
                data: page
                    .functions
                    .into_iter()
                    .map(|f| pb::AsyncConfigMeta {
                        service_name: f.service.to_string(),
                        function_name: f.function.to_string(),
                        qualifier: f.qualifier.to_string(),
                    })
                    .collect(),
                next_token: page.next_token,
            },
        ))
    }

    async fn put_function_async_invoke_config(
        &self,
        request: Request<pb::PutFunctionAsyncInvokeConfigRequest>,
    ) -> Result<Response<pb::AsyncInvokeConfig>, Status> {
        let account = account(&request)?;
        let r = request.into_inner();
        let key = convert::config_key(&account, &r.service_name, &r.function_name, &r.qualifier)
            .map_err(ApiError::from)?;
        let config = convert::config_from_pb(&account, r.config).map_err(ApiError::from)?;
        config
            .refuse_own_destination(
                "config.destination_config.",
                &key.function.service,
                &key.function.function,
            )
            .map_err(ApiError::from)?;
        let stored = self
            .engine
            .put_config(key.clone(), config)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(convert::config_to_pb(
            &key.function,
            &key.qualifier,
            &stored,
        )))
    }

    async fn get_function_async_invoke_config(
        &self,
        request: Request<pb::GetFunctionAsyncInvokeConfigRequest>,
    ) -> Result<Response<pb::AsyncInvokeConfig>, Status> {
        let account = account(&request)?;
        let r = request.into_inner();
        let key = convert::config_key(&account, &r.service_name, &r.function_name, &r.qualifier)
            .map_err(ApiError::from)?;
        let stored = self
            .engine
            .backend()
            .config(&key)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(convert::config_to_pb(
            &key.function,
            &key.qualifier,
            &stored,
        )))
    }

    async fn delete_function_async_invoke_config(
        &self,
        request: Request<pb::DeleteFunctionAsyncInvokeConfigRequest>,
    ) -> Result<Response<pb::DeleteFunctionAsyncInvokeConfigResponse>, Status> {
        let account = account(&request)?;
        let r = request.into_inner();
        let key = convert::config_key(&account, &r.service_name, &r.function_name, &r.qualifier)
            .map_err(ApiError::from)?;
        self.engine
            .delete_config(key)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(
            pb::DeleteFunctionAsyncInvokeConfigResponse {},
        ))
    }

    async fn list_function_async_invoke_configs(
        &self,
        request: Request<pb::ListFunctionAsyncInvokeConfigsRequest>,
    ) -> Result<Response<pb::ListFunctionAsyncInvokeConfigsResponse>, Status> {
        let account = account(&request)?;
        let r = request.into_inner();
        let function = convert::function_key(&account, &r.service_name, &r.function_name)
            .map_err(ApiError::from)?;
        let limit = validate::limit(
            "limit",
            r.limit,
            convert::DEFAULT_CATALOG_LIMIT,
            convert::MAX_LIST_LIMIT,
        )
        .map_err(ApiError::from)?;
        let page = self
            .engine
            .backend()
            .list_configs(&function, limit, &r.next_token)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::ListFunctionAsyncInvokeConfigsResponse {
            configs: page
                .configs
                .iter()
                .map(|(qualifier, stored)| convert::config_to_pb(&function, qualifier, stored))
                .collect(),
            next_token: page.next_token,
        }))
    }
}

/// The scope of a WatchInvocations request.
fn watch_scope(
    account: Arc<str>,
    request: &pb::WatchInvocationsRequest,
) -> Result<WatchScope, ValidationError> {
    let service = (!request.service_name.is_empty()).then_some(request.service_name.as_str());
    let function = (!request.function_name.is_empty()).then_some(request.function_name.as_str());
    if let Some(service) = service {
        validate::name("service_name", service)?;
    }
    if let Some(function) = function {
        if service.is_none() {
            return Err(ValidationError::new(
                "function_name",
                "needs service_name (a function is named within its service)",
            ));
        }
        validate::name("function_name", function)?;
    }
    Ok(WatchScope {
        account,
        service: service.map(Into::into),
        function: function.map(Into::into),
    })
}

/// One entry's result as InvokeFunctions reports it; `asked_id` is the id the entry named.
fn invoke_result(
    result: Result<Arc<crate::model::Invocation>, Status>,
    asked_id: &str,
) -> pb::InvokeFunctionResult {
    match result {
        Ok(invocation) => pb::InvokeFunctionResult {
            code: 0,
            message: String::new(),
            invocation_id: invocation.key.id.to_string(),
            error_code: String::new(),
        },
        Err(status) => pb::InvokeFunctionResult {
            code: status.code() as i32,
            message: status.message().to_string(),
            invocation_id: asked_id.to_string(),
            error_code: super::error::error_code(&status),
        },
    }
}
