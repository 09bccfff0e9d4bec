//! FC's own REST API on the HTTP listener, so that Alibaba Cloud's official SDKs work against
//! sai with only the endpoint changed: the stateful async invocation and async invoke config
//! operations under both API versions' paths (`/2021-04-06/...`, qualifier as a query
//! parameter; `/2016-08-15/...`, qualifier as a `service.qualifier` path suffix), FC's JSON
//! field names and types, and FC's error bodies and HTTP statuses.
//!
//! Every operation calls the gRPC service itself, so an invocation made over REST is gettable
//! and watchable over gRPC and the other way round. With `--access-keys`, a request must be
//! signed (ACS3-HMAC-SHA256 or FC's `FC id:signature`, see `signature`) and acts for its
//! key's account; without, it acts for `X-Fc-Account-Id` (or "default") and the listener is
//! loopback-only unless `--allow-unauthenticated`.

pub mod access_keys;
mod json;
mod names;
pub mod signature;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use percent_encoding::percent_decode_str;
use tonic::metadata::MetadataValue;
use tonic::Code;

use crate::api::metadata::{ACCOUNT_HEADER, REQUEST_ID_HEADER, TRACE_ID_HEADER};
use crate::api::{error, fc_json, ApiError, InvocationService};
use crate::model::validate::ValidationError;
use crate::pb;
use crate::pb::stateful_async_invocation_service_server::StatefulAsyncInvocationService;

use super::HttpState;
use names::Naming;
use signature::{ReceivedRequest, SignatureError};

/// The header naming an invocation's id, on the invoke request and its answer.
const INVOCATION_ID_HEADER: &str = "x-fc-stateful-async-invocation-id";
/// Async or Sync; sai runs async invocations only.
const INVOCATION_TYPE_HEADER: &str = "x-fc-invocation-type";

/// The routes of both API versions.
pub fn routes() -> Router<Arc<HttpState>> {
    Router::new()
        .route("/2021-04-06/{*rest}", any(handle))
        .route("/2016-08-15/{*rest}", any(handle))
        // No operation lives at the bare prefixes, but they are FC's paths: FC's error.
        .route("/2021-04-06", any(handle))
        .route("/2021-04-06/", any(handle))
        .route("/2016-08-15", any(handle))
        .route("/2016-08-15/", any(handle))
}

/// An FC error: the HTTP status, FC's code and a message, answered as every SDK reads it.
#[derive(Debug)]
struct FcError {
    status: StatusCode,
    code: String,
    message: String,
    /// The field refused and the rule it broke, as the gRPC service named them.
    violation: Option<(String, String)>,
}

impl FcError {
    fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        FcError {
            status,
            code: code.to_string(),
            message: message.into(),
            violation: None,
        }
    }

    /// The error with the field it refuses named as the REST request gave it.
    fn named_for(mut self, naming: Naming) -> Self {
        if let Some((field, rule)) = &self.violation {
            self.message = format!(
                "invalid {}: {}",
                names::rest_field(naming, field),
                names::rest_rule(naming, rule)
            );
        }
        self
    }

    fn invalid(field: &str, rule: &str) -> Self {
        ValidationError::new(field, rule).into()
    }

    fn into_response(self, request_id: &str) -> Response {
        // Both spellings: the 2021 SDKs read Code/Message/RequestId, the 2016 ones
        // ErrorCode/ErrorMessage and the request id header.
        let body = serde_json::json!({
            "ErrorCode": self.code,
            "ErrorMessage": self.message,
            "Code": self.code,
            "Message": self.message,
            "RequestId": request_id,
        });
        json_response(self.status, &body)
    }
}

impl From<tonic::Status> for FcError {
    fn from(status: tonic::Status) -> Self {
        let code = error::error_code(&status);
        let code = if code.is_empty() {
            error::code_name(status.code()).to_string()
        } else {
            code
        };
        let http = fc_http_status(status.code(), &code);
        // The gRPC message leads with FC's code, which FC's own messages do not repeat.
        let message = error::without_code(status.message(), &code);
        FcError {
            status: http,
            message: message.to_string(),
            violation: error::bad_request_field(&status),
            code,
        }
    }
}

impl From<ApiError> for FcError {
    fn from(err: ApiError) -> Self {
        tonic::Status::from(err).into()
    }
}

impl From<ValidationError> for FcError {
    fn from(err: ValidationError) -> Self {
        ApiError::from(err).into()
    }
}

impl From<SignatureError> for FcError {
    fn from(err: SignatureError) -> Self {
        let code = match err {
            SignatureError::UnknownAccessKey(_) => "InvalidAccessKeyID",
            SignatureError::Mismatch | SignatureError::BodyHash(_) => "SignatureNotMatch",
            SignatureError::Skewed { .. } => "RequestTimeTooSkewed",
            SignatureError::Missing | SignatureError::Malformed(_) | SignatureError::Date(_) => {
                "AccessDenied"
            }
        };
        FcError::new(StatusCode::FORBIDDEN, code, err.to_string())
    }
}

/// FC's HTTP status for a refusal: FC's own where it has one for the code (a stop of a
/// finished invocation is 412, a duplicate id 409), gRPC's HTTP mapping otherwise.
fn fc_http_status(code: Code, error_code: &str) -> StatusCode {
    let status = match (code, error_code) {
        (Code::Unauthenticated | Code::PermissionDenied, _) => 403,
        (Code::FailedPrecondition, _) => 412,
        (Code::OutOfRange, _) => 400,
        _ => error::http_status(code),
    };
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

fn json_response(status: StatusCode, body: &serde_json::Value) -> Response {
    (
        status,
        [(
            axum::http::header::CONTENT_TYPE,
            "application/json; charset=utf-8",
        )],
        body.to_string(),
    )
        .into_response()
}

/// One FC operation, with the path's parts decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Operation {
    Invoke(Function),
    GetInvocation(Function, String),
    StopInvocation(Function, String),
    ListInvocations(Function),
    ListFunctions,
    PutConfig(Function),
    GetConfig(Function),
    DeleteConfig(Function),
    ListConfigs(Function),
}

/// A function and the qualifier the request names ("" for none).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Function {
    service: String,
    function: String,
    qualifier: String,
}

/// The operation `method` and `path` name, or FC's `PathNotSupported`.
fn route(method: &Method, path: &str, query: &Query) -> Result<Operation, FcError> {
    let not_supported = || {
        FcError::new(
            StatusCode::BAD_REQUEST,
            "PathNotSupported",
            format!("{method} {path} is not an operation of this API"),
        )
    };
    let (version, rest) = path
        .strip_prefix("/2021-04-06")
        .map(|rest| ("2021", rest))
        .or_else(|| path.strip_prefix("/2016-08-15").map(|rest| ("2016", rest)))
        .ok_or_else(not_supported)?;
    let rest = rest.strip_prefix('/').unwrap_or(rest);
    let segments: Vec<String> = rest
        .split('/')
        .map(|segment| percent_decode_str(segment).decode_utf8_lossy().into_owned())
        .collect();
    let parts: Vec<&str> = segments.iter().map(String::as_str).collect();
    if parts == ["stateful-async-invocation-functions"] && version == "2021" {
        return match *method {
            Method::GET => Ok(Operation::ListFunctions),
            _ => Err(not_supported()),
        };
    }
    let ["services", service, "functions", function, resource @ ..] = parts.as_slice() else {
        return Err(not_supported());
    };
    let (service, path_qualifier) = match (version, service.split_once('.')) {
        ("2016", Some((_, ""))) => {
            return Err(FcError::invalid(
                "qualifier",
                "must not be empty after the service name's '.'",
            ))
        }
        ("2016", Some((service, qualifier))) => (service, qualifier),
        _ => (*service, ""),
    };
    let qualifier = if version == "2016" {
        path_qualifier.to_string()
    } else {
        query.get("qualifier").unwrap_or("").to_string()
    };
    let target = Function {
        service: service.to_string(),
        function: function.to_string(),
        qualifier,
    };
    let operation = match (method.clone(), resource) {
        (Method::POST, ["invocations"]) => Operation::Invoke(target),
        (Method::GET, ["stateful-async-invocations"]) => Operation::ListInvocations(target),
        (Method::GET, ["stateful-async-invocations", id]) => {
            Operation::GetInvocation(target, id.to_string())
        }
        (Method::PUT, ["stateful-async-invocations", id]) => {
            Operation::StopInvocation(target, id.to_string())
        }
        (Method::PUT, ["async-invoke-config"]) => Operation::PutConfig(target),
        (Method::GET, ["async-invoke-config"]) => Operation::GetConfig(target),
        (Method::DELETE, ["async-invoke-config"]) => Operation::DeleteConfig(target),
        (Method::GET, ["async-invoke-configs"]) => Operation::ListConfigs(target),
        _ => return Err(not_supported()),
    };
    Ok(operation)
}

/// The query's pairs, decoded (`+` is a space).
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(raw: Option<&str>) -> Query {
        let decode = |text: &str| {
            percent_decode_str(&text.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        };
        Query(
            raw.unwrap_or("")
                .split('&')
                .filter(|pair| !pair.is_empty())
                .map(|pair| {
                    let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                    (decode(key), decode(value))
                })
                .collect(),
        )
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn int<T: std::str::FromStr>(&self, key: &str) -> Result<Option<T>, FcError> {
        self.get(key)
            .map(|value| {
                value
                    .parse()
                    .map_err(|_| FcError::invalid(key, "must be an integer"))
            })
            .transpose()
    }

    fn bool(&self, key: &str) -> Result<bool, FcError> {
        match self.get(key).map(str::to_ascii_lowercase).as_deref() {
            None | Some("false") | Some("") => Ok(false),
            Some("true") => Ok(true),
            Some(_) => Err(FcError::invalid(key, "must be true or false")),
        }
    }
}

async fn handle(
    State(state): State<Arc<HttpState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let mut response = match serve(&state, &method, &uri, &headers, body).await {
        Ok(response) => response,
        Err(err) => err.into_response(&request_id),
    };
    let answer_headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        answer_headers.insert(REQUEST_ID_HEADER, value);
    }
    if let Some(trace) = headers.get(TRACE_ID_HEADER) {
        answer_headers.insert(TRACE_ID_HEADER, trace.clone());
    }
    response
}

async fn serve(
    state: &HttpState,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, FcError> {
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            FcError::new(
                StatusCode::BAD_REQUEST,
                "EntityTooLarge",
                format!("the request body is too large: {rejection}"),
            )
        } else {
            FcError::new(
                StatusCode::BAD_REQUEST,
                "InvalidArgument",
                format!("the request body cannot be read: {rejection}"),
            )
        }
    })?;
    let account = authenticate(state, method, uri, headers, &body)?;
    let query = Query::parse(uri.query());
    let operation = route(method, uri.path(), &query)?;
    let naming = match operation {
        Operation::Invoke(_) => Naming::Invoke,
        _ => Naming::Other,
    };
    let service = state.service().ok_or_else(|| {
        FcError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "the store is loading; try again in a moment",
        )
    })?;
    let call = Call {
        service,
        account,
        headers,
    };
    call.run(operation, &query, &body)
        .await
        .map_err(|err| err.named_for(naming))
}

/// The account a request acts for: its access key's when keys are configured (the request
/// must then be signed), else `X-Fc-Account-Id` or the default one.
fn authenticate(
    state: &HttpState,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Option<String>, FcError> {
    let claimed = headers
        .get(ACCOUNT_HEADER)
        .map(|value| {
            value
                .to_str()
                .map_err(|_| FcError::invalid(ACCOUNT_HEADER, "must be printable ASCII"))
        })
        .transpose()?
        // GoFC2 sends the header empty when no account id is configured.
        .filter(|claimed| !claimed.is_empty());
    let Some(keys) = state.access_keys() else {
        return Ok(claimed.map(str::to_string));
    };
    let received = ReceivedRequest {
        method: method.as_str(),
        raw_path: uri.path(),
        raw_query: uri.query(),
        headers,
        body,
    };
    let account = signature::verify(&received, keys, state.now_ms())?;
    if let Some(claimed) = claimed {
        if claimed != account {
            return Err(FcError::new(
                StatusCode::FORBIDDEN,
                "AccessDenied",
                format!("the access key is for account {account}; {ACCOUNT_HEADER} names another account"),
            ));
        }
    }
    Ok(Some(account))
}

/// One operation's call of the gRPC service, for an account.
struct Call<'a> {
    service: InvocationService,
    account: Option<String>,
    headers: &'a HeaderMap,
}

impl Call<'_> {
    fn request<T>(&self, message: T) -> Result<tonic::Request<T>, FcError> {
        let mut request = tonic::Request::new(message);
        if let Some(account) = &self.account {
            let value = MetadataValue::try_from(account.as_str())
                .map_err(|_| FcError::invalid(ACCOUNT_HEADER, "must be printable ASCII"))?;
            request.metadata_mut().insert(ACCOUNT_HEADER, value);
        }
        Ok(request)
    }

    fn header(&self, name: &str) -> Result<Option<&str>, FcError> {
        self.headers
            .get(name)
            .map(|value| {
                value
                    .to_str()
                    .map_err(|_| FcError::invalid(name, "must be printable ASCII"))
            })
            .transpose()
    }

    async fn run(
        self,
        operation: Operation,
        query: &Query,
        body: &[u8],
    ) -> Result<Response, FcError> {
        let service = &self.service;
        match operation {
            Operation::Invoke(target) => {
                match self.header(INVOCATION_TYPE_HEADER)? {
                    Some(kind) if kind.eq_ignore_ascii_case("async") => {}
                    other => {
                        return Err(FcError::invalid(
                            INVOCATION_TYPE_HEADER,
                            &format!(
                                "must be Async: sai runs asynchronous invocations only (got {})",
                                other.map_or(
                                    "none, which FC reads as Sync".to_string(),
                                    |o| format!("{o:?}")
                                )
                            ),
                        ))
                    }
                }
                let payload = std::str::from_utf8(body)
                    .map_err(|_| FcError::invalid("body", "must be UTF-8 text"))?;
                let request = self.request(pb::InvokeFunctionRequest {
                    service_name: target.service,
                    function_name: target.function,
                    qualifier: target.qualifier,
                    invocation_id: self.header(INVOCATION_ID_HEADER)?.unwrap_or("").to_string(),
                    payload: payload.to_string(),
                })?;
                let answer = service.invoke_function(request).await?.into_inner();
                let mut response = StatusCode::ACCEPTED.into_response();
                if let Ok(value) = HeaderValue::from_str(&answer.invocation_id) {
                    response.headers_mut().insert(INVOCATION_ID_HEADER, value);
                }
                Ok(response)
            }
            Operation::GetInvocation(target, id) => {
                let request = self.request(pb::GetStatefulAsyncInvocationRequest {
                    service_name: target.service,
                    function_name: target.function,
                    qualifier: target.qualifier,
                    invocation_id: id,
                })?;
                let invocation = service
                    .get_stateful_async_invocation(request)
                    .await?
                    .into_inner();
                Ok(json_response(
                    StatusCode::OK,
                    &fc_json::invocation(&invocation, true),
                ))
            }
            Operation::StopInvocation(target, id) => {
                let request = self.request(pb::StopStatefulAsyncInvocationRequest {
                    service_name: target.service,
                    function_name: target.function,
                    qualifier: target.qualifier,
                    invocation_id: id,
                })?;
                service.stop_stateful_async_invocation(request).await?;
                Ok(StatusCode::NO_CONTENT.into_response())
            }
            Operation::ListInvocations(target) => {
                let sort_order = match query
                    .get("sortOrderByTime")
                    .map(str::to_ascii_lowercase)
                    .as_deref()
                {
                    None | Some("") => pb::SortOrder::Unspecified,
                    Some("asc") => pb::SortOrder::Asc,
                    Some("desc") => pb::SortOrder::Desc,
                    Some(_) => {
                        return Err(FcError::invalid("sortOrderByTime", "must be asc or desc"))
                    }
                };
                let include_payload = query.bool("includePayload")?;
                let request = self.request(pb::ListStatefulAsyncInvocationsRequest {
                    service_name: target.service,
                    function_name: target.function,
                    qualifier: target.qualifier,
                    invocation_id_prefix: query.get("invocationIdPrefix").unwrap_or("").to_string(),
                    status_name: query.get("status").unwrap_or("").to_string(),
                    started_time_begin: query.int("startedTimeBegin")?.unwrap_or(0),
                    started_time_end: query.int("startedTimeEnd")?.unwrap_or(0),
                    sort_order_by_time: sort_order as i32,
                    include_payload,
                    limit: query.int("limit")?.unwrap_or(0),
                    next_token: query.get("nextToken").unwrap_or("").to_string(),
                    status: 0,
                })?;
                let page = service
                    .list_stateful_async_invocations(request)
                    .await?
                    .into_inner();
                let invocations: Vec<serde_json::Value> = page
                    .invocations
                    .iter()
                    .map(|inv| fc_json::invocation(inv, include_payload))
                    .collect();
                Ok(json_response(
                    StatusCode::OK,
                    &serde_json::json!({ "invocations": invocations, "nextToken": page.next_token }),
                ))
            }
            Operation::ListFunctions => {
                let request = self.request(pb::ListStatefulAsyncInvocationFunctionsRequest {
                    limit: query.int("limit")?.unwrap_or(0),
                    next_token: query.get("nextToken").unwrap_or("").to_string(),
                })?;
                let page = service
                    .list_stateful_async_invocation_functions(request)
                    .await?
                    .into_inner();
                let data: Vec<serde_json::Value> = page
                    .data
                    .iter()
                    .map(|meta| {
                        serde_json::json!({
                            "serviceName": meta.service_name,
                            "functionName": meta.function_name,
                            "qualifier": meta.qualifier,
                        })
                    })
                    .collect();
                Ok(json_response(
                    StatusCode::OK,
                    &serde_json::json!({ "data": data, "nextToken": page.next_token }),
                ))
            }
            Operation::PutConfig(target) => {
                let config = json::config_from_body(body)?;
                let request = self.request(pb::PutFunctionAsyncInvokeConfigRequest {
                    service_name: target.service,
                    function_name: target.function,
                    qualifier: target.qualifier,
                    config: Some(config),
                })?;
                let stored = service
                    .put_function_async_invoke_config(request)
                    .await?
                    .into_inner();
                Ok(json_response(StatusCode::OK, &fc_json::config(&stored)))
            }
            Operation::GetConfig(target) => {
                let request = self.request(pb::GetFunctionAsyncInvokeConfigRequest {
                    service_name: target.service,
                    function_name: target.function,
                    qualifier: target.qualifier,
                })?;
                let stored = service
                    .get_function_async_invoke_config(request)
                    .await?
                    .into_inner();
                Ok(json_response(StatusCode::OK, &fc_json::config(&stored)))
            }
            Operation::DeleteConfig(target) => {
                let request = self.request(pb::DeleteFunctionAsyncInvokeConfigRequest {
                    service_name: target.service,
                    function_name: target.function,
                    qualifier: target.qualifier,
                })?;
                service.delete_function_async_invoke_config(request).await?;
                Ok(StatusCode::NO_CONTENT.into_response())
            }
            Operation::ListConfigs(target) => {
                let request = self.request(pb::ListFunctionAsyncInvokeConfigsRequest {
                    service_name: target.service,
                    function_name: target.function,
                    limit: query.int("limit")?.unwrap_or(0),
                    next_token: query.get("nextToken").unwrap_or("").to_string(),
                })?;
                let page = service
                    .list_function_async_invoke_configs(request)
                    .await?
                    .into_inner();
                let configs: Vec<serde_json::Value> =
                    page.configs.iter().map(fc_json::config).collect();
                Ok(json_response(
                    StatusCode::OK,
                    &serde_json::json!({ "configs": configs, "nextToken": page.next_token }),
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(method: Method, path: &str, query: &str) -> Result<Operation, String> {
        route(&method, path, &Query::parse(Some(query))).map_err(|e| e.code)
    }

    fn function(qualifier: &str) -> Function {
        Function {
            service: "svc".into(),
            function: "fn".into(),
            qualifier: qualifier.into(),
        }
    }

    #[test]
    fn both_versions_route_to_the_same_operations() {
        assert_eq!(
            op(
                Method::POST,
                "/2021-04-06/services/svc/functions/fn/invocations",
                "qualifier=prod"
            ),
            Ok(Operation::Invoke(function("prod")))
        );
        assert_eq!(
            op(
                Method::POST,
                "/2016-08-15/services/svc.prod/functions/fn/invocations",
                ""
            ),
            Ok(Operation::Invoke(function("prod")))
        );
        assert_eq!(
            op(
                Method::GET,
                "/2016-08-15/services/svc/functions/fn/stateful-async-invocations/job-1",
                ""
            ),
            Ok(Operation::GetInvocation(function(""), "job-1".into()))
        );
        assert_eq!(
            op(
                Method::PUT,
                "/2021-04-06/services/svc/functions/fn/stateful-async-invocations/job%2D1",
                ""
            ),
            Ok(Operation::StopInvocation(function(""), "job-1".into()))
        );
        assert_eq!(
            op(
                Method::GET,
                "/2021-04-06/stateful-async-invocation-functions",
                "limit=5"
            ),
            Ok(Operation::ListFunctions)
        );
        assert_eq!(
            op(
                Method::GET,
                "/2016-08-15/services/svc/functions/fn/async-invoke-configs",
                ""
            ),
            Ok(Operation::ListConfigs(function("")))
        );
        for (method, path) in [
            (
                Method::DELETE,
                "/2021-04-06/services/svc/functions/fn/invocations",
            ),
            (
                Method::GET,
                "/2016-08-15/stateful-async-invocation-functions",
            ),
            (Method::GET, "/2021-04-06/services/svc/functions"),
            (
                Method::GET,
                "/2021-04-06/services/svc/functions/fn/stateful-async-invocations/a/b",
            ),
            (Method::GET, "/2021-04-06/"),
        ] {
            assert_eq!(
                op(method.clone(), path, ""),
                Err("PathNotSupported".into()),
                "{method} {path}"
            );
        }
    }

    #[test]
    fn query_booleans_and_integers_are_read_as_the_sdks_send_them() {
        let query = Query::parse(Some(
            "includePayload=True&limit=10&nextToken=tok+1%2F%2B%3D",
        ));
        assert!(query.bool("includePayload").expect("bool"));
        assert_eq!(query.int::<i32>("limit").expect("int"), Some(10));
        assert_eq!(query.get("nextToken"), Some("tok 1/+="));
        let bad = Query::parse(Some("includePayload=yes&limit=ten"));
        assert_eq!(
            bad.bool("includePayload").expect_err("bool").code,
            "InvalidArgument"
        );
        assert!(bad
            .int::<i32>("limit")
            .expect_err("int")
            .message
            .contains("limit"));
    }
}
