//! The client commands: invoke, get, list, watch, stop, functions, config. Each makes one or a
//! few RPCs and prints the answer as a table or as JSON.

use clap::{Args, Subcommand};
use tokio_stream::StreamExt;
use tonic::transport::Channel;

use crate::api::fc_json;
use crate::pb;
use crate::pb::stateful_async_invocation_service_client::StatefulAsyncInvocationServiceClient;

use super::output::{self, Format};
use super::{CliError, Connection};

/// `SERVICE/FUNCTION`, parsed.
#[derive(Debug, Clone)]
pub struct Target {
    /// Service name.
    pub service: String,
    /// Function name.
    pub function: String,
}

impl std::str::FromStr for Target {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('/') {
            Some((service, function)) if !service.is_empty() && !function.is_empty() => {
                Ok(Target {
                    service: service.to_string(),
                    function: function.to_string(),
                })
            }
            _ => Err(format!("{s:?} is not SERVICE/FUNCTION")),
        }
    }
}

/// Flags of `sai list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// SERVICE/FUNCTION.
    pub target: Target,
    /// Only this status (Enqueued, Running, Succeeded, Failed, ...).
    #[arg(long)]
    pub status: Option<String>,
    /// Only ids starting with this.
    #[arg(long)]
    pub prefix: Option<String>,
    /// Only this qualifier.
    #[arg(long)]
    pub qualifier: Option<String>,
    /// Only invocations started at or after this epoch ms.
    #[arg(long)]
    pub since: Option<i64>,
    /// Only invocations started at or before this epoch ms.
    #[arg(long)]
    pub until: Option<i64>,
    /// Oldest first (default newest first).
    #[arg(long)]
    pub asc: bool,
    /// Page size, 1-100.
    #[arg(long, default_value_t = 50)]
    pub limit: i32,
    /// Include payloads.
    #[arg(long)]
    pub include_payload: bool,
    /// Continue from this token.
    #[arg(long)]
    pub next_token: Option<String>,
    /// Follow next_token to the end.
    #[arg(long)]
    pub all: bool,
}

/// `sai config ...`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Show one config.
    Get {
        /// SERVICE/FUNCTION.
        target: Target,
        /// Qualifier (default LATEST).
        #[arg(long, default_value = "")]
        qualifier: String,
    },
    /// Create or replace a config.
    Put {
        /// SERVICE/FUNCTION.
        target: Target,
        /// Qualifier (default LATEST).
        #[arg(long, default_value = "")]
        qualifier: String,
        /// Seconds an invocation may wait for dispatch, 1-604800 (default 86400).
        #[arg(long)]
        max_event_age: Option<i64>,
        /// Retries after a failed attempt, 0-8 (default 3).
        #[arg(long)]
        max_retries: Option<i64>,
        /// Destination ARN after success.
        #[arg(long)]
        on_success: Option<String>,
        /// Destination ARN after failure or expiry.
        #[arg(long)]
        on_failure: Option<String>,
        /// Keep invocation records (default true).
        #[arg(long)]
        stateful: Option<bool>,
    },
    /// Remove a config.
    Delete {
        /// SERVICE/FUNCTION.
        target: Target,
        /// Qualifier (default LATEST).
        #[arg(long, default_value = "")]
        qualifier: String,
    },
    /// List a function's configs.
    List {
        /// SERVICE/FUNCTION.
        target: Target,
    },
}

fn parse_status(name: &str) -> Result<i32, CliError> {
    pb::InvocationStatus::from_str_name(&format!("INVOCATION_STATUS_{}", name.to_ascii_uppercase()))
        .map(|s| s as i32)
        .ok_or_else(|| CliError::Usage(format!("--status {name:?} is not a status")))
}

type Client = StatefulAsyncInvocationServiceClient<Channel>;

async fn client(connection: &Connection) -> Result<Client, CliError> {
    Ok(StatefulAsyncInvocationServiceClient::new(
        connection.channel().await?,
    ))
}

/// Fetch pages starting at `first_token`, following next_token while `all` (else one page).
/// Returns the items and the token to continue from ("" at the end of the list).
async fn pages<Item, Fut>(
    first_token: String,
    all: bool,
    mut fetch: impl FnMut(String) -> Fut,
) -> Result<(Vec<Item>, String), CliError>
where
    Fut: std::future::Future<Output = Result<(Vec<Item>, String), tonic::Status>>,
{
    let mut items = Vec::new();
    let mut token = first_token;
    loop {
        let (page, next) = fetch(token).await?;
        items.extend(page);
        if !all || next.is_empty() {
            return Ok((items, next));
        }
        token = next;
    }
}

fn print_json(value: &serde_json::Value) {
    println!("{value}");
}

/// `sai invoke`.
pub async fn invoke(
    connection: &Connection,
    target: Target,
    id: Option<String>,
    qualifier: Option<String>,
    payload: String,
) -> Result<(), CliError> {
    let answer = client(connection)
        .await?
        .invoke_function(connection.request(pb::InvokeFunctionRequest {
            service_name: target.service,
            function_name: target.function,
            qualifier: qualifier.unwrap_or_default(),
            invocation_id: id.unwrap_or_default(),
            payload,
        }))
        .await?
        .into_inner();
    match connection.format {
        Format::Json => print_json(&serde_json::json!({
            "invocationId": answer.invocation_id,
            "requestId": answer.request_id,
        })),
        Format::Table => println!("{}", answer.invocation_id),
    }
    Ok(())
}

/// `sai get`.
pub async fn get(connection: &Connection, target: Target, id: String) -> Result<(), CliError> {
    let inv = client(connection)
        .await?
        .get_stateful_async_invocation(connection.request(pb::GetStatefulAsyncInvocationRequest {
            service_name: target.service,
            function_name: target.function,
            qualifier: String::new(),
            invocation_id: id,
        }))
        .await?
        .into_inner();
    match connection.format {
        Format::Json => print_json(&fc_json::invocation(&inv, true)),
        Format::Table => println!("{}", output::invocation_detail(&inv)),
    }
    Ok(())
}

/// `sai list`.
pub async fn list(connection: &Connection, args: ListArgs) -> Result<(), CliError> {
    let client = client(connection).await?;
    let request = pb::ListStatefulAsyncInvocationsRequest {
        service_name: args.target.service,
        function_name: args.target.function,
        qualifier: args.qualifier.unwrap_or_default(),
        invocation_id_prefix: args.prefix.unwrap_or_default(),
        status: args
            .status
            .as_deref()
            .map(parse_status)
            .transpose()?
            .unwrap_or(0),
        started_time_begin: args.since.unwrap_or(0),
        started_time_end: args.until.unwrap_or(0),
        sort_order_by_time: if args.asc {
            pb::SortOrder::Asc as i32
        } else {
            pb::SortOrder::Desc as i32
        },
        include_payload: args.include_payload,
        limit: args.limit,
        next_token: String::new(),
        status_name: String::new(),
    };
    let (invocations, next_token) = pages(
        args.next_token.unwrap_or_default(),
        args.all,
        |next_token| {
            let mut client = client.clone();
            let request = connection.request(pb::ListStatefulAsyncInvocationsRequest {
                next_token,
                ..request.clone()
            });
            async move {
                let page = client
                    .list_stateful_async_invocations(request)
                    .await?
                    .into_inner();
                Ok((page.invocations, page.next_token))
            }
        },
    )
    .await?;
    match connection.format {
        Format::Json => print_json(&serde_json::json!({
            "invocations": invocations.iter().map(|inv| fc_json::invocation(inv, true)).collect::<Vec<_>>(),
            "nextToken": next_token,
        })),
        Format::Table => {
            println!("{}", output::invocations_table(&invocations));
            if !next_token.is_empty() {
                println!("more: --next-token {next_token} (or --all)");
            }
        }
    }
    Ok(())
}

/// `sai watch`: prints each event as it happens; the exit code tells how it ended.
pub async fn watch(
    connection: &Connection,
    target: Target,
    id: String,
    from_event: i64,
) -> Result<std::process::ExitCode, CliError> {
    let mut stream = client(connection)
        .await?
        .watch_invocation(connection.request(pb::WatchInvocationRequest {
            service_name: target.service,
            function_name: target.function,
            qualifier: String::new(),
            invocation_id: id,
            from_event_id: from_event,
        }))
        .await?
        .into_inner();
    let mut last_status = 0;
    while let Some(message) = stream.next().await {
        let message = message?;
        let (Some(event), Some(inv)) = (message.event, message.invocation) else {
            continue;
        };
        last_status = event.status;
        match connection.format {
            Format::Json => print_json(&serde_json::json!({
                "event": fc_json::event(&event),
                "invocation": fc_json::invocation(&inv, true),
            })),
            Format::Table => println!(
                "{:>4}  {:<10} {}  {}",
                event.event_id,
                output::status_name(event.status),
                event.timestamp,
                event.event_detail
            ),
        }
    }
    Ok(exit_code_for(last_status))
}

/// 0 Succeeded; 2 Failed; 3 Stopped; 4 Expired; 5 Invalid; 1 anything else.
fn exit_code_for(status: i32) -> std::process::ExitCode {
    use pb::InvocationStatus as S;
    std::process::ExitCode::from(match S::try_from(status) {
        Ok(S::Succeeded) => 0,
        Ok(S::Failed) => 2,
        Ok(S::Stopped) => 3,
        Ok(S::Expired) => 4,
        Ok(S::Invalid) => 5,
        _ => 1,
    })
}

/// `sai stop`.
pub async fn stop(connection: &Connection, target: Target, id: String) -> Result<(), CliError> {
    let answer = client(connection)
        .await?
        .stop_stateful_async_invocation(connection.request(
            pb::StopStatefulAsyncInvocationRequest {
                service_name: target.service,
                function_name: target.function,
                qualifier: String::new(),
                invocation_id: id,
            },
        ))
        .await?
        .into_inner();
    let inv = answer.invocation.unwrap_or_default();
    match connection.format {
        Format::Json => print_json(&fc_json::invocation(&inv, true)),
        Format::Table => println!("{} {}", inv.invocation_id, output::status_name(inv.status)),
    }
    Ok(())
}

/// `sai functions`.
pub async fn functions(connection: &Connection) -> Result<(), CliError> {
    let client = client(connection).await?;
    let (all, _) = pages(String::new(), true, |next_token| {
        let mut client = client.clone();
        let request = connection.request(pb::ListStatefulAsyncInvocationFunctionsRequest {
            limit: 100,
            next_token,
        });
        async move {
            let page = client
                .list_stateful_async_invocation_functions(request)
                .await?
                .into_inner();
            Ok((page.data, page.next_token))
        }
    })
    .await?;
    match connection.format {
        Format::Json => print_json(&serde_json::json!({
            "data": all.iter().map(|f| serde_json::json!({
                "serviceName": f.service_name,
                "functionName": f.function_name,
                "qualifier": f.qualifier,
            })).collect::<Vec<_>>(),
        })),
        Format::Table => {
            let mut t = output::table(&["SERVICE", "FUNCTION", "QUALIFIER"]);
            for f in all {
                t.add_row(vec![f.service_name, f.function_name, f.qualifier]);
            }
            println!("{t}");
        }
    }
    Ok(())
}

fn print_configs(format: Format, configs: &[pb::AsyncInvokeConfig]) {
    match format {
        Format::Json if configs.len() == 1 => print_json(&fc_json::config(&configs[0])),
        Format::Json => print_json(&serde_json::json!({
            "configs": configs.iter().map(fc_json::config).collect::<Vec<_>>(),
        })),
        Format::Table => {
            let mut t = output::table(&[
                "QUALIFIER",
                "MAX AGE S",
                "MAX RETRIES",
                "ON SUCCESS",
                "ON FAILURE",
                "STATEFUL",
                "MODIFIED",
            ]);
            for c in configs {
                let d = c.destination_config.clone().unwrap_or_default();
                t.add_row(vec![
                    c.qualifier.clone(),
                    c.max_async_event_age_in_seconds
                        .map_or("default".into(), |v| v.to_string()),
                    c.max_async_retry_attempts
                        .map_or("default".into(), |v| v.to_string()),
                    d.on_success.map(|d| d.destination).unwrap_or_default(),
                    d.on_failure.map(|d| d.destination).unwrap_or_default(),
                    c.stateful_invocation
                        .map_or("default".into(), |v| v.to_string()),
                    c.last_modified_time.clone(),
                ]);
            }
            println!("{t}");
        }
    }
}

/// `sai config ...`.
pub async fn config(connection: &Connection, command: ConfigCommand) -> Result<(), CliError> {
    let mut client = client(connection).await?;
    match command {
        ConfigCommand::Get { target, qualifier } => {
            let config = client
                .get_function_async_invoke_config(connection.request(
                    pb::GetFunctionAsyncInvokeConfigRequest {
                        service_name: target.service,
                        function_name: target.function,
                        qualifier,
                    },
                ))
                .await?
                .into_inner();
            print_configs(connection.format, &[config]);
        }
        ConfigCommand::Put {
            target,
            qualifier,
            max_event_age,
            max_retries,
            on_success,
            on_failure,
            stateful,
        } => {
            let destination_config =
                (on_success.is_some() || on_failure.is_some()).then(|| pb::DestinationConfig {
                    on_success: on_success.map(|destination| pb::Destination { destination }),
                    on_failure: on_failure.map(|destination| pb::Destination { destination }),
                });
            let config = client
                .put_function_async_invoke_config(connection.request(
                    pb::PutFunctionAsyncInvokeConfigRequest {
                        service_name: target.service,
                        function_name: target.function,
                        qualifier,
                        config: Some(pb::AsyncInvokeConfig {
                            max_async_event_age_in_seconds: max_event_age,
                            max_async_retry_attempts: max_retries,
                            destination_config,
                            stateful_invocation: stateful,
                            ..Default::default()
                        }),
                    },
                ))
                .await?
                .into_inner();
            print_configs(connection.format, &[config]);
        }
        ConfigCommand::Delete { target, qualifier } => {
            client
                .delete_function_async_invoke_config(connection.request(
                    pb::DeleteFunctionAsyncInvokeConfigRequest {
                        service_name: target.service,
                        function_name: target.function,
                        qualifier,
                    },
                ))
                .await?;
            if connection.format == Format::Json {
                print_json(&serde_json::json!({}));
            }
        }
        ConfigCommand::List { target } => {
            let (configs, _) = pages(String::new(), true, |next_token| {
                let mut client = client.clone();
                let request = connection.request(pb::ListFunctionAsyncInvokeConfigsRequest {
                    service_name: target.service.clone(),
                    function_name: target.function.clone(),
                    limit: 100,
                    next_token,
                });
                async move {
                    let page = client
                        .list_function_async_invoke_configs(request)
                        .await?
                        .into_inner();
                    Ok((page.configs, page.next_token))
                }
            })
            .await?;
            match connection.format {
                Format::Json => print_json(&serde_json::json!({
                    "configs": configs.iter().map(fc_json::config).collect::<Vec<_>>(),
                })),
                Format::Table => print_configs(Format::Table, &configs),
            }
        }
    }
    Ok(())
}
