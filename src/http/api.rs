//! The JSON API the dashboard reads, under `/api/v1`: the same RPCs as gRPC, through the same
//! service (so the same checks, limits and answers), with the messages as JSON, and
//! WatchInvocations as server-sent events. A refusal, a query parameter that does not parse
//! included, is `{"code", "error_code", "message"}` JSON with the HTTP status of its code.
//! With `--auth-tokens` every route needs `authorization: Bearer <token>` and acts for the
//! token's account; without, the account is `x-fc-account-id` (or "default"), as over gRPC.
//!
//! - `GET  /api/v1/functions?next_token=`: the account's functions, each with its queue depth
//! - `GET  /api/v1/invocations?service_name=&function_name=&status=&invocation_id_prefix=&started_time_begin=&started_time_end=&sort_order=asc|desc&limit=&next_token=&include_payload=`
//! - `GET  /api/v1/invocations/{service}/{function}/{id}`: with events and payloads
//! - `POST /api/v1/invocations/{service}/{function}/{id}/stop`
//! - `GET  /api/v1/changes?service_name=&function_name=&from_sequence=`: `text/event-stream`,
//!   one `change` event per status change (`id:` its sequence, `data:` the JSON message);
//!   a reconnecting client sends `Last-Event-ID` (or `from_sequence`) and resumes with no gap.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::{Stream, StreamExt};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use tonic::metadata::MetadataValue;

use crate::api::metadata::ACCOUNT_HEADER;
use crate::api::{error, ApiError, InvocationService};
use crate::model::validate::ValidationError;
use crate::pb;
use crate::pb::stateful_async_invocation_service_server::StatefulAsyncInvocationService;

use super::HttpState;

/// How often an idle event stream sends a comment, so that proxies keep it open.
const KEEPALIVE: std::time::Duration = std::time::Duration::from_secs(15);

/// The routes under `/api/v1`.
pub fn routes() -> Router<Arc<HttpState>> {
    Router::new()
        .route("/api/v1/functions", get(functions))
        .route("/api/v1/invocations", get(list))
        .route("/api/v1/invocations/{service}/{function}/{id}", get(one))
        .route(
            "/api/v1/invocations/{service}/{function}/{id}/stop",
            post(stop),
        )
        .route("/api/v1/changes", get(changes))
}

/// An RPC's refusal as JSON: `{"code": "NOT_FOUND", "error_code": "...", "message": "..."}`
/// with the HTTP status of its gRPC code.
struct ApiFailure(tonic::Status);

impl IntoResponse for ApiFailure {
    fn into_response(self) -> Response {
        let status = self.0;
        let http_status = StatusCode::from_u16(error::http_status(status.code()))
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::json!({
            "code": error::code_name(status.code()),
            "error_code": status
                .metadata()
                .get(error::ERROR_CODE_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or(""),
            "message": status.message(),
        });
        (http_status, Json(body)).into_response()
    }
}

impl From<tonic::Status> for ApiFailure {
    fn from(status: tonic::Status) -> Self {
        ApiFailure(status)
    }
}

impl From<ApiError> for ApiFailure {
    fn from(err: ApiError) -> Self {
        ApiFailure(err.into())
    }
}

type ApiResult<T> = Result<Json<T>, ApiFailure>;

/// A route's query parameters. One that does not parse is refused as this API's other errors
/// are, INVALID_ARGUMENT as JSON naming the parameter, not as axum's plain-text rejection.
struct ApiQuery<T>(T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiFailure;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(query)) => Ok(ApiQuery(query)),
            Err(rejection) => {
                // serde's message for one parameter is "name: what is wrong with it".
                let text = rejection.body_text();
                let text = text
                    .strip_prefix("Failed to deserialize query string: ")
                    .unwrap_or(&text);
                let (field, rule) = text.split_once(": ").unwrap_or(("query", text));
                Err(ApiError::from(ValidationError::new(field, rule)).into())
            }
        }
    }
}

/// The service, and `message` as a request for the caller the headers authenticate.
fn request<T>(
    state: &HttpState,
    headers: &HeaderMap,
    message: T,
) -> Result<(InvocationService, tonic::Request<T>), ApiFailure> {
    let service = state
        .service()
        .ok_or_else(|| tonic::Status::unavailable("the store is loading; try again in a moment"))?;
    let mut request = tonic::Request::new(message);
    let account = match state.tokens() {
        Some(tokens) => Some(
            tokens
                .authenticate(headers)
                .map_err(ApiError::from)?
                .to_string(),
        ),
        None => headers
            .get(ACCOUNT_HEADER)
            .map(|value| value.to_str().map(str::to_string).map_err(|_| not_ascii()))
            .transpose()?,
    };
    if let Some(account) = account {
        let value = MetadataValue::try_from(account.as_str()).map_err(|_| not_ascii())?;
        request.metadata_mut().insert(ACCOUNT_HEADER, value);
    }
    Ok((service, request))
}

fn not_ascii() -> ApiError {
    ValidationError::new(ACCOUNT_HEADER, "must be printable ASCII").into()
}

#[derive(Debug, Deserialize)]
struct PageQuery {
    #[serde(default)]
    next_token: String,
}

/// A function with stateful invocation, and how many of its invocations wait in its queue.
#[derive(Debug, serde::Serialize)]
struct FunctionView {
    service_name: String,
    function_name: String,
    qualifier: String,
    queue_depth: usize,
}

#[derive(Debug, serde::Serialize)]
struct FunctionsPage {
    functions: Vec<FunctionView>,
    next_token: String,
}

async fn functions(
    State(state): State<Arc<HttpState>>,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> ApiResult<FunctionsPage> {
    let (service, request) = request(
        &state,
        &headers,
        pb::ListStatefulAsyncInvocationFunctionsRequest {
            limit: 100,
            next_token: query.next_token,
        },
    )?;
    let account = crate::api::metadata::account(&request)?;
    let page = service
        .list_stateful_async_invocation_functions(request)
        .await?
        .into_inner();
    let engine = state
        .engine()
        .ok_or_else(|| tonic::Status::unavailable("loading"))?;
    Ok(Json(FunctionsPage {
        functions: page
            .data
            .into_iter()
            .map(|meta| FunctionView {
                queue_depth: engine.queue_depth(&crate::model::FunctionKey::new(
                    &account,
                    &meta.service_name,
                    &meta.function_name,
                )),
                service_name: meta.service_name,
                function_name: meta.function_name,
                qualifier: meta.qualifier,
            })
            .collect(),
        next_token: page.next_token,
    }))
}

/// ListStatefulAsyncInvocations's fields, as query parameters; `status` is a status name
/// ("Running") and `sort_order` is `asc` or `desc`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ListQuery {
    service_name: String,
    function_name: String,
    qualifier: String,
    invocation_id_prefix: String,
    status: String,
    started_time_begin: i64,
    started_time_end: i64,
    sort_order: String,
    include_payload: bool,
    limit: i32,
    next_token: String,
}

async fn list(
    State(state): State<Arc<HttpState>>,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> ApiResult<pb::ListStatefulAsyncInvocationsResponse> {
    let sort_order = match query.sort_order.to_ascii_lowercase().as_str() {
        "" => pb::SortOrder::Unspecified,
        "asc" => pb::SortOrder::Asc,
        "desc" => pb::SortOrder::Desc,
        _ => {
            return Err(
                ApiError::from(ValidationError::new("sort_order", "must be asc or desc")).into(),
            )
        }
    };
    let (service, request) = request(
        &state,
        &headers,
        pb::ListStatefulAsyncInvocationsRequest {
            service_name: query.service_name,
            function_name: query.function_name,
            qualifier: query.qualifier,
            invocation_id_prefix: query.invocation_id_prefix,
            status_name: query.status,
            started_time_begin: query.started_time_begin,
            started_time_end: query.started_time_end,
            sort_order_by_time: sort_order as i32,
            include_payload: query.include_payload,
            limit: query.limit,
            next_token: query.next_token,
            ..Default::default()
        },
    )?;
    Ok(Json(
        service
            .list_stateful_async_invocations(request)
            .await?
            .into_inner(),
    ))
}

async fn one(
    State(state): State<Arc<HttpState>>,
    headers: HeaderMap,
    Path((service_name, function_name, invocation_id)): Path<(String, String, String)>,
) -> ApiResult<pb::StatefulAsyncInvocation> {
    let (service, request) = request(
        &state,
        &headers,
        pb::GetStatefulAsyncInvocationRequest {
            service_name,
            function_name,
            invocation_id,
            ..Default::default()
        },
    )?;
    Ok(Json(
        service
            .get_stateful_async_invocation(request)
            .await?
            .into_inner(),
    ))
}

async fn stop(
    State(state): State<Arc<HttpState>>,
    headers: HeaderMap,
    Path((service_name, function_name, invocation_id)): Path<(String, String, String)>,
) -> ApiResult<pb::StopStatefulAsyncInvocationResponse> {
    let (service, request) = request(
        &state,
        &headers,
        pb::StopStatefulAsyncInvocationRequest {
            service_name,
            function_name,
            invocation_id,
            ..Default::default()
        },
    )?;
    Ok(Json(
        service
            .stop_stateful_async_invocation(request)
            .await?
            .into_inner(),
    ))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ChangesQuery {
    service_name: String,
    function_name: String,
    from_sequence: u64,
}

async fn changes(
    State(state): State<Arc<HttpState>>,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<ChangesQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiFailure> {
    // The browser's EventSource resends the last id it saw when it reconnects.
    let last_seen = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let (service, request) = request(
        &state,
        &headers,
        pb::WatchInvocationsRequest {
            service_name: query.service_name,
            function_name: query.function_name,
            from_sequence: last_seen.unwrap_or(query.from_sequence),
            from_oldest: false,
        },
    )?;
    let watch = service.watch_invocations(request).await?.into_inner();
    let events = watch.map(|change| {
        Ok(match change {
            Ok(change) => Event::default()
                .event("change")
                .id(change.sequence.to_string())
                .json_data(&change)
                .unwrap_or_else(|err| Event::default().event("error").data(err.to_string())),
            // The stream ends after this event; the page reconnects from its last id.
            Err(status) => Event::default().event("error").data(
                serde_json::json!({
                    "code": error::code_name(status.code()),
                    "message": status.message(),
                })
                .to_string(),
            ),
        })
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(KEEPALIVE)))
}
