//! sai's messages in FC's JSON shape: camelCase names, statuses by FC's name ("Succeeded"),
//! times and counts as numbers, configs with `service`/`function` and `null` for what is
//! unset. The CLI's `--output json` and FC's REST API both answer with these.

use serde_json::{json, Value};

use crate::pb;

/// FC's name of a status ("Succeeded"); the number for one this build does not know.
pub fn status_name(status: i32) -> String {
    match pb::InvocationStatus::try_from(status) {
        Ok(pb::InvocationStatus::Unspecified) | Err(_) => status.to_string(),
        Ok(s) => {
            let upper = s.as_str_name().trim_start_matches("INVOCATION_STATUS_");
            let mut name = upper.to_lowercase();
            name[..1].make_ascii_uppercase();
            name
        }
    }
}

/// FC's name of a destination status ("" for none).
pub fn destination_name(status: i32) -> &'static str {
    match pb::DestinationStatus::try_from(status) {
        Ok(pb::DestinationStatus::Succeeded) => "Succeeded",
        Ok(pb::DestinationStatus::Failed) => "Failed",
        _ => "",
    }
}

/// An event.
pub fn event(event: &pb::StatefulAsyncInvocationEvent) -> Value {
    json!({
        "eventId": event.event_id,
        "status": status_name(event.status),
        "timestamp": event.timestamp,
        "eventDetail": event.event_detail,
    })
}

/// An invocation (FC's task object), its payload only `with_payload`.
pub fn invocation(inv: &pb::StatefulAsyncInvocation, with_payload: bool) -> Value {
    let mut task = json!({
        "serviceName": inv.service_name,
        "functionName": inv.function_name,
        "qualifier": inv.qualifier,
        "invocationId": inv.invocation_id,
        "status": status_name(inv.status),
        "startedTime": inv.started_time,
        "endTime": inv.end_time,
        "durationMs": inv.duration_ms,
        "destinationStatus": destination_name(inv.destination_status),
        "invocationErrorMessage": inv.invocation_error_message,
        "returnPayload": inv.return_payload,
        "alreadyRetriedTimes": inv.already_retried_times,
        "requestId": inv.request_id,
        "instanceId": inv.instance_id,
        "events": inv.events.iter().map(event).collect::<Vec<_>>(),
    });
    if with_payload {
        task["invocationPayload"] = json!(inv.invocation_payload);
    }
    task
}

/// An async invoke config.
pub fn config(config: &pb::AsyncInvokeConfig) -> Value {
    let destination = |d: &Option<pb::Destination>| {
        d.as_ref()
            .map_or(Value::Null, |d| json!({ "destination": d.destination }))
    };
    json!({
        "service": config.service,
        "function": config.function,
        "qualifier": config.qualifier,
        "createdTime": config.created_time,
        "lastModifiedTime": config.last_modified_time,
        "maxAsyncEventAgeInSeconds": config.max_async_event_age_in_seconds,
        "maxAsyncRetryAttempts": config.max_async_retry_attempts,
        "statefulInvocation": config.stateful_invocation,
        "destinationConfig": config.destination_config.as_ref().map(|d| json!({
            "onSuccess": destination(&d.on_success),
            "onFailure": destination(&d.on_failure),
        })),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_has_fc_names_and_number_types() {
        let task = invocation(
            &pb::StatefulAsyncInvocation {
                service_name: "s".into(),
                invocation_id: "i".into(),
                status: pb::InvocationStatus::Succeeded as i32,
                started_time: 5,
                invocation_payload: "p".into(),
                events: vec![pb::StatefulAsyncInvocationEvent {
                    event_id: 1,
                    status: pb::InvocationStatus::Enqueued as i32,
                    timestamp: 5,
                    event_detail: String::new(),
                }],
                ..Default::default()
            },
            false,
        );
        assert_eq!(task["status"], "Succeeded");
        assert_eq!(task["startedTime"], 5);
        assert_eq!(task["events"][0]["status"], "Enqueued");
        assert!(task.get("invocationPayload").is_none());
        assert_eq!(status_name(42), "42");
    }
}
