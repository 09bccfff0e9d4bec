//! Destination records: what an on-success or on-failure destination function receives, as
//! the payload of a new async invocation (FC's destination record shape).

use std::sync::Arc;

use serde_json::json;

use crate::model::{DestinationArn, FunctionKey, Invocation, DEFAULT_QUALIFIER};

/// How the source invocation ended, as the record's `condition` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// It succeeded.
    Succeeded,
    /// Its last attempt failed.
    Failed,
    /// It expired before it ran.
    Expired,
}

impl Condition {
    fn as_str(self) -> &'static str {
        match self {
            Condition::Succeeded => "Succeeded",
            Condition::Failed => "Failed",
            Condition::Expired => "Expired",
        }
    }
}

/// The invocation that delivers `source`'s result to `target`: same account, a fresh id.
pub fn result_record(
    source: &Invocation,
    target: &DestinationArn,
    condition: Condition,
    response_payload: Option<&str>,
    error_message: Option<&str>,
    now_ms: i64,
) -> Invocation {
    let function = &source.key.function;
    let source_arn = format!(
        "acs:fc:::services/{}.{}/functions/{}",
        function.service, source.qualifier, function.function
    );
    let record = json!({
        "timestamp": now_ms,
        "requestContext": {
            "requestId": &*source.request_id,
            "invocationId": &*source.key.id,
            "functionArn": source_arn,
            "condition": condition.as_str(),
            "approximateInvokeCount": source.attempts,
        },
        "requestPayload": &*source.payload,
        "responseContext": {
            "statusCode": if condition == Condition::Succeeded { 200 } else { 500 },
            "functionError": error_message.unwrap_or_default(),
        },
        "responsePayload": response_payload.unwrap_or_default(),
    });
    let target_function = FunctionKey {
        account: function.account.clone(),
        service: target.service.as_str().into(),
        function: target.function.as_str().into(),
    };
    let id = super::generated_id(now_ms);
    let request_id = uuid::Uuid::new_v4().to_string();
    Invocation::accept(
        target_function.invocation(&id),
        target.qualifier.as_deref().unwrap_or(DEFAULT_QUALIFIER),
        Arc::from(record.to_string()),
        &request_id,
        now_ms,
    )
}
