//! How the CLI shows answers: tables for people (comfy-table), JSON in FC's camelCase shape
//! for scripts.

use comfy_table::{presets::UTF8_BORDERS_ONLY, Table};
use serde_json::{json, Value};

use crate::pb;

/// Output format chosen with `--output`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Human-readable tables.
    Table,
    /// One JSON document per answer (one per line for streams).
    Json,
}

/// FC's name of a status ("Succeeded").
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

fn destination_name(status: i32) -> &'static str {
    match pb::DestinationStatus::try_from(status) {
        Ok(pb::DestinationStatus::Succeeded) => "Succeeded",
        Ok(pb::DestinationStatus::Failed) => "Failed",
        _ => "",
    }
}

/// An event as FC's JSON.
pub fn event_json(event: &pb::StatefulAsyncInvocationEvent) -> Value {
    json!({
        "eventId": event.event_id,
        "status": status_name(event.status),
        "timestamp": event.timestamp,
        "eventDetail": event.event_detail,
    })
}

/// An invocation as FC's JSON.
pub fn invocation_json(inv: &pb::StatefulAsyncInvocation) -> Value {
    json!({
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
        "invocationPayload": inv.invocation_payload,
        "returnPayload": inv.return_payload,
        "alreadyRetriedTimes": inv.already_retried_times,
        "requestId": inv.request_id,
        "instanceId": inv.instance_id,
        "events": inv.events.iter().map(event_json).collect::<Vec<_>>(),
    })
}

/// A config as FC's JSON.
pub fn config_json(config: &pb::AsyncInvokeConfig) -> Value {
    let destinations = config.destination_config.clone().unwrap_or_default();
    json!({
        "service": config.service,
        "function": config.function,
        "qualifier": config.qualifier,
        "createdTime": config.created_time,
        "lastModifiedTime": config.last_modified_time,
        "maxAsyncEventAgeInSeconds": config.max_async_event_age_in_seconds,
        "maxAsyncRetryAttempts": config.max_async_retry_attempts,
        "destinationConfig": {
            "onSuccess": destinations.on_success.map(|d| json!({"destination": d.destination})),
            "onFailure": destinations.on_failure.map(|d| json!({"destination": d.destination})),
        },
        "statefulInvocation": config.stateful_invocation,
    })
}

/// A table with `header`.
pub fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table
        .load_preset(UTF8_BORDERS_ONLY)
        .set_header(header.to_vec());
    table
}

/// One row per invocation.
pub fn invocations_table(invocations: &[pb::StatefulAsyncInvocation]) -> Table {
    let mut t = table(&[
        "INVOCATION ID",
        "STATUS",
        "QUALIFIER",
        "STARTED",
        "ENDED",
        "RETRIES",
        "ERROR",
    ]);
    for inv in invocations {
        t.add_row(vec![
            inv.invocation_id.clone(),
            status_name(inv.status),
            inv.qualifier.clone(),
            inv.started_time.to_string(),
            if inv.end_time > 0 {
                inv.end_time.to_string()
            } else {
                "-".into()
            },
            inv.already_retried_times.to_string(),
            inv.invocation_error_message.clone(),
        ]);
    }
    t
}

/// One invocation with its fields and events.
pub fn invocation_detail(inv: &pb::StatefulAsyncInvocation) -> String {
    let mut fields = table(&["FIELD", "VALUE"]);
    let rows = [
        (
            "function",
            format!("{}/{}", inv.service_name, inv.function_name),
        ),
        ("qualifier", inv.qualifier.clone()),
        ("invocation id", inv.invocation_id.clone()),
        ("status", status_name(inv.status)),
        ("started", inv.started_time.to_string()),
        ("ended", inv.end_time.to_string()),
        ("duration ms", inv.duration_ms.to_string()),
        ("retries", inv.already_retried_times.to_string()),
        (
            "destination",
            destination_name(inv.destination_status).to_string(),
        ),
        ("instance", inv.instance_id.clone()),
        ("request id", inv.request_id.clone()),
        ("error", inv.invocation_error_message.clone()),
        ("payload", inv.invocation_payload.clone()),
        ("return payload", inv.return_payload.clone()),
    ];
    for (name, value) in rows {
        fields.add_row(vec![name.to_string(), value]);
    }
    let mut events = table(&["EVENT", "STATUS", "TIMESTAMP", "DETAIL"]);
    for event in &inv.events {
        events.add_row(vec![
            event.event_id.to_string(),
            status_name(event.status),
            event.timestamp.to_string(),
            event.event_detail.clone(),
        ]);
    }
    format!("{fields}\n{events}")
}
