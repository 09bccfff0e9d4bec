//! Every conversion between protobuf messages and model values. Conversions from requests
//! validate as they go, and their errors name the proto field that broke a rule.

use std::sync::Arc;

use crate::clock::rfc3339;
use crate::engine::{NewInvocation, Outcome, PollTarget};
use crate::model::validate::{self, ValidationError};
use crate::model::{
    AsyncInvokeConfig, DestinationArn, DestinationStatus, Event, FunctionKey, Invocation,
    InvocationKey, Status, StoredConfig, DEFAULT_QUALIFIER,
};
use crate::pb;
use crate::store::{ConfigKey, ListQuery, Order};

/// Default page size of ListStatefulAsyncInvocations.
pub const DEFAULT_LIST_LIMIT: usize = 50;
/// Default page size of the functions and configs lists.
pub const DEFAULT_CATALOG_LIMIT: usize = 20;
/// Largest page size of every list.
pub const MAX_LIST_LIMIT: usize = 100;

/// The proto status of a model status.
pub fn status_to_pb(status: Status) -> pb::InvocationStatus {
    use pb::InvocationStatus as P;
    match status {
        Status::Enqueued => P::Enqueued,
        Status::Dequeued => P::Dequeued,
        Status::Running => P::Running,
        Status::Succeeded => P::Succeeded,
        Status::Failed => P::Failed,
        Status::Stopped => P::Stopped,
        Status::Stopping => P::Stopping,
        Status::Expired => P::Expired,
        Status::Invalid => P::Invalid,
        Status::Retrying => P::Retrying,
    }
}

/// A status filter: UNSPECIFIED means any.
pub fn status_filter(field: &str, value: i32) -> Result<Option<Status>, ValidationError> {
    use pb::InvocationStatus as P;
    let status = P::try_from(value).map_err(|_| {
        ValidationError::new(field, &format!("{value} is not an InvocationStatus value"))
    })?;
    Ok(match status {
        P::Unspecified => None,
        P::Enqueued => Some(Status::Enqueued),
        P::Dequeued => Some(Status::Dequeued),
        P::Running => Some(Status::Running),
        P::Succeeded => Some(Status::Succeeded),
        P::Failed => Some(Status::Failed),
        P::Stopped => Some(Status::Stopped),
        P::Stopping => Some(Status::Stopping),
        P::Expired => Some(Status::Expired),
        P::Invalid => Some(Status::Invalid),
        P::Retrying => Some(Status::Retrying),
    })
}

/// A sort order: UNSPECIFIED means descending.
pub fn sort_order(field: &str, value: i32) -> Result<Order, ValidationError> {
    match pb::SortOrder::try_from(value) {
        Ok(pb::SortOrder::Asc) => Ok(Order::Asc),
        Ok(pb::SortOrder::Desc | pb::SortOrder::Unspecified) => Ok(Order::Desc),
        Err(_) => Err(ValidationError::new(
            field,
            &format!("{value} is not a SortOrder value"),
        )),
    }
}

fn destination_status_to_pb(status: DestinationStatus) -> pb::DestinationStatus {
    match status {
        DestinationStatus::None => pb::DestinationStatus::Unspecified,
        DestinationStatus::Succeeded => pb::DestinationStatus::Succeeded,
        DestinationStatus::Failed => pb::DestinationStatus::Failed,
    }
}

/// One event in proto form.
pub fn event_to_pb(event: &Event) -> pb::StatefulAsyncInvocationEvent {
    pb::StatefulAsyncInvocationEvent {
        event_id: i64::try_from(event.event_id).unwrap_or(i64::MAX),
        status: status_to_pb(event.status) as i32,
        timestamp: event.timestamp_ms,
        event_detail: event.detail.clone(),
    }
}

/// What of an invocation an answer carries.
#[derive(Debug, Clone, Copy)]
pub struct View {
    /// Fill invocation_payload.
    pub payload: bool,
    /// Fill events.
    pub events: bool,
}

/// An invocation in proto form.
pub fn invocation_to_pb(invocation: &Invocation, view: View) -> pb::StatefulAsyncInvocation {
    pb::StatefulAsyncInvocation {
        service_name: invocation.key.function.service.to_string(),
        function_name: invocation.key.function.function.to_string(),
        qualifier: invocation.qualifier.to_string(),
        invocation_id: invocation.key.id.to_string(),
        status: status_to_pb(invocation.status) as i32,
        started_time: invocation.started_time_ms,
        end_time: invocation.end_time_ms,
        destination_status: destination_status_to_pb(invocation.destination_status) as i32,
        invocation_error_message: invocation.error_message.clone(),
        invocation_payload: if view.payload {
            invocation.payload.to_string()
        } else {
            String::new()
        },
        already_retried_times: i64::from(invocation.already_retried_times),
        request_id: invocation.request_id.to_string(),
        instance_id: invocation.instance_id.to_string(),
        events: if view.events {
            invocation.events.iter().map(event_to_pb).collect()
        } else {
            Vec::new()
        },
        duration_ms: invocation.duration_ms,
        return_payload: invocation.return_payload.to_string(),
    }
}

/// A function named by `service_name` and `function_name` in `account`.
pub fn function_key(
    account: &Arc<str>,
    service_name: &str,
    function_name: &str,
) -> Result<FunctionKey, ValidationError> {
    validate::name("service_name", service_name)?;
    validate::name("function_name", function_name)?;
    Ok(FunctionKey {
        account: account.clone(),
        service: service_name.into(),
        function: function_name.into(),
    })
}

/// A qualifier, "LATEST" when empty.
pub fn qualifier_or_default(qualifier: &str) -> Result<Arc<str>, ValidationError> {
    validate::qualifier("qualifier", qualifier)?;
    Ok(if qualifier.is_empty() {
        DEFAULT_QUALIFIER.into()
    } else {
        qualifier.into()
    })
}

/// An existing invocation named by a Get, Stop or Watch request.
#[derive(Debug, Clone)]
pub struct InvocationRef {
    /// Its key.
    pub key: InvocationKey,
    /// The qualifier the caller expects, if it gave one.
    pub qualifier: Option<String>,
}

impl InvocationRef {
    /// Parse the shared (service, function, qualifier, id) fields.
    pub fn parse(
        account: &Arc<str>,
        service_name: &str,
        function_name: &str,
        qualifier: &str,
        invocation_id: &str,
    ) -> Result<Self, ValidationError> {
        let function = function_key(account, service_name, function_name)?;
        validate::qualifier("qualifier", qualifier)?;
        validate::existing_invocation_id("invocation_id", invocation_id)?;
        Ok(InvocationRef {
            key: function.invocation(invocation_id),
            qualifier: (!qualifier.is_empty()).then(|| qualifier.to_string()),
        })
    }

    /// Whether `invocation` was made under the qualifier the caller asked for.
    pub fn matches(&self, invocation: &Invocation) -> bool {
        self.qualifier
            .as_deref()
            .is_none_or(|q| q == &*invocation.qualifier)
    }
}

/// An InvokeFunction request, validated.
pub fn new_invocation(
    account: &Arc<str>,
    request_id: &str,
    request: pb::InvokeFunctionRequest,
    max_payload_bytes: usize,
) -> Result<NewInvocation, ValidationError> {
    let function = function_key(account, &request.service_name, &request.function_name)?;
    let qualifier = qualifier_or_default(&request.qualifier)?;
    let id = if request.invocation_id.is_empty() {
        None
    } else {
        validate::new_invocation_id("invocation_id", &request.invocation_id)?;
        Some(request.invocation_id)
    };
    validate::max_bytes("payload", &request.payload, max_payload_bytes)?;
    Ok(NewInvocation {
        function,
        id,
        qualifier,
        payload: request.payload.into(),
        request_id: request_id.to_string(),
    })
}

/// A ListStatefulAsyncInvocations request, validated.
pub fn list_query(
    account: &Arc<str>,
    request: pb::ListStatefulAsyncInvocationsRequest,
) -> Result<ListQuery, ValidationError> {
    let function = function_key(account, &request.service_name, &request.function_name)?;
    validate::qualifier("qualifier", &request.qualifier)?;
    validate::id_prefix("invocation_id_prefix", &request.invocation_id_prefix)?;
    let status = match (
        status_filter("status", request.status)?,
        request.status_name.as_str(),
    ) {
        (status, "") => status,
        (by_number, name) => {
            let by_name = Status::from_name(name).ok_or_else(|| {
                ValidationError::new(
                    "status_name",
                    &format!(
                        "{name:?} is not a status (Enqueued, Dequeued, Running, Succeeded, \
                         Failed, Stopped, Stopping, Expired, Invalid, Retrying)"
                    ),
                )
            })?;
            if by_number.is_some_and(|status| status != by_name) {
                return Err(ValidationError::new(
                    "status_name",
                    "names another status than status does",
                ));
            }
            Some(by_name)
        }
    };
    let (begin, end) = validate::time_range(
        "started_time_begin",
        request.started_time_begin,
        "started_time_end",
        request.started_time_end,
    )?;
    let order = sort_order("sort_order_by_time", request.sort_order_by_time)?;
    let limit = validate::limit("limit", request.limit, DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT)?;
    Ok(ListQuery {
        function,
        qualifier: (!request.qualifier.is_empty()).then_some(request.qualifier),
        id_prefix: request.invocation_id_prefix,
        status,
        begin,
        end,
        order,
        limit,
        next_token: request.next_token,
    })
}

/// The key of a config named by (service, function, qualifier).
pub fn config_key(
    account: &Arc<str>,
    service_name: &str,
    function_name: &str,
    qualifier: &str,
) -> Result<ConfigKey, ValidationError> {
    Ok(ConfigKey {
        function: function_key(account, service_name, function_name)?,
        qualifier: qualifier_or_default(qualifier)?,
    })
}

fn destination(
    field: &str,
    destination: Option<pb::Destination>,
    account: &str,
) -> Result<Option<DestinationArn>, ValidationError> {
    match destination {
        Some(d) if !d.destination.is_empty() => {
            DestinationArn::parse(field, &d.destination, account).map(Some)
        }
        _ => Ok(None),
    }
}

/// The settings of a PutFunctionAsyncInvokeConfig request, validated.
pub fn config_from_pb(
    account: &Arc<str>,
    config: Option<pb::AsyncInvokeConfig>,
) -> Result<AsyncInvokeConfig, ValidationError> {
    let config = config.ok_or_else(|| ValidationError::new("config", "is required"))?;
    let destinations = config.destination_config.unwrap_or_default();
    let parsed = AsyncInvokeConfig {
        max_async_event_age_in_seconds: config.max_async_event_age_in_seconds,
        max_async_retry_attempts: config.max_async_retry_attempts,
        on_success: destination(
            "config.destination_config.on_success.destination",
            destinations.on_success,
            account,
        )?,
        on_failure: destination(
            "config.destination_config.on_failure.destination",
            destinations.on_failure,
            account,
        )?,
        stateful_invocation: config.stateful_invocation,
    };
    parsed.validate("config.")?;
    Ok(parsed)
}

/// A stored config in proto form.
pub fn config_to_pb(
    function: &FunctionKey,
    qualifier: &str,
    stored: &StoredConfig,
) -> pb::AsyncInvokeConfig {
    let config = &stored.config;
    let destination_config =
        (config.on_success.is_some() || config.on_failure.is_some()).then(|| {
            pb::DestinationConfig {
                on_success: config.on_success.as_ref().map(|d| pb::Destination {
                    destination: d.arn.clone(),
                }),
                on_failure: config.on_failure.as_ref().map(|d| pb::Destination {
                    destination: d.arn.clone(),
                }),
            }
        });
    pb::AsyncInvokeConfig {
        service: function.service.to_string(),
        function: function.function.to_string(),
        qualifier: qualifier.to_string(),
        created_time: rfc3339(stored.created_time_ms),
        last_modified_time: rfc3339(stored.last_modified_time_ms),
        max_async_event_age_in_seconds: config.max_async_event_age_in_seconds,
        max_async_retry_attempts: config.max_async_retry_attempts,
        destination_config,
        stateful_invocation: config.stateful_invocation,
    }
}

/// A resume point that must not be negative.
pub fn non_negative(field: &str, value: i64) -> Result<u64, ValidationError> {
    u64::try_from(value).map_err(|_| ValidationError::new(field, "must be >= 0"))
}

/// Longest long-poll wait a worker may ask for, ms.
pub const MAX_POLL_WAIT_MS: i32 = 30_000;
/// Most leases one poll may ask for.
pub const MAX_POLL_INVOCATIONS: usize = 100;

/// A validated PollInvocations request.
#[derive(Debug, Clone)]
pub struct PollRequest {
    /// What to poll.
    pub targets: Vec<PollTarget>,
    /// Who polls.
    pub worker_id: String,
    /// Most leases wanted.
    pub max_invocations: usize,
    /// Longest wait.
    pub wait: std::time::Duration,
}

/// A PollInvocations request, validated.
pub fn poll_request(
    account: &Arc<str>,
    request: pb::PollInvocationsRequest,
) -> Result<PollRequest, ValidationError> {
    if request.functions.is_empty() || request.functions.len() > MAX_POLL_INVOCATIONS {
        return Err(ValidationError::new(
            "functions",
            "must name 1-100 functions",
        ));
    }
    let mut targets = Vec::with_capacity(request.functions.len());
    for (i, function) in request.functions.iter().enumerate() {
        validate::name(
            &format!("functions[{i}].service_name"),
            &function.service_name,
        )?;
        validate::name(
            &format!("functions[{i}].function_name"),
            &function.function_name,
        )?;
        validate::qualifier(&format!("functions[{i}].qualifier"), &function.qualifier)?;
        targets.push(PollTarget {
            function: FunctionKey {
                account: account.clone(),
                service: function.service_name.as_str().into(),
                function: function.function_name.as_str().into(),
            },
            qualifier: (!function.qualifier.is_empty()).then(|| function.qualifier.as_str().into()),
        });
    }
    validate::worker_id("worker_id", &request.worker_id)?;
    let max_invocations = validate::limit(
        "max_invocations",
        request.max_invocations,
        1,
        MAX_POLL_INVOCATIONS,
    )?;
    validate::in_range(
        "wait_time_ms",
        i64::from(request.wait_time_ms),
        0,
        i64::from(MAX_POLL_WAIT_MS),
    )?;
    Ok(PollRequest {
        targets,
        worker_id: request.worker_id,
        max_invocations,
        wait: std::time::Duration::from_millis(u64::try_from(request.wait_time_ms).unwrap_or(0)),
    })
}

/// A lease token field: present and of sane length.
pub fn lease_token(token: &str) -> Result<(), ValidationError> {
    validate::max_bytes("lease_token", token, 256)?;
    if token.is_empty() {
        return Err(ValidationError::new("lease_token", "is required"));
    }
    Ok(())
}

/// The outcome of a CompleteInvocation request, validated.
pub fn outcome(
    outcome: Option<pb::complete_invocation_request::Outcome>,
    max_return_payload_bytes: usize,
) -> Result<Outcome, ValidationError> {
    use pb::complete_invocation_request::Outcome as P;
    match outcome {
        None => Err(ValidationError::new(
            "outcome",
            "is required: one of success, failure, stopped, invalid",
        )),
        Some(P::Success(success)) => {
            validate::max_bytes(
                "success.return_payload",
                &success.return_payload,
                max_return_payload_bytes,
            )?;
            Ok(Outcome::Success {
                return_payload: success.return_payload.into(),
            })
        }
        Some(P::Failure(failure)) => {
            validate::max_bytes(
                "failure.error_message",
                &failure.error_message,
                validate::MAX_MESSAGE_BYTES,
            )?;
            Ok(Outcome::Failure {
                error_message: failure.error_message,
                permanent: failure.permanent,
            })
        }
        Some(P::Stopped(_)) => Ok(Outcome::Stopped),
        Some(P::Invalid(invalid)) => {
            validate::max_bytes(
                "invalid.reason",
                &invalid.reason,
                validate::MAX_MESSAGE_BYTES,
            )?;
            Ok(Outcome::Invalid {
                reason: invalid.reason,
            })
        }
    }
}
