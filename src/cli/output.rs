//! How the CLI shows answers: tables for people (comfy-table), JSON in FC's camelCase shape
//! for scripts.

use comfy_table::{presets::UTF8_BORDERS_ONLY, Table};

use crate::pb;

/// Output format chosen with `--output`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Human-readable tables.
    Table,
    /// One JSON document per answer (one per line for streams).
    Json,
}

pub use crate::api::fc_json::{destination_name, status_name};

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
