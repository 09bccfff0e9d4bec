//! `sai worker --function SERVICE/FUNCTION --exec 'COMMAND'`: a ready worker. It long-polls,
//! runs the command per invocation (payload on stdin, context in `SAI_*` variables), takes
//! stdout as the return payload and a non-zero exit as a failure (the stderr tail as its
//! message), heartbeats while the command runs, kills it on a stop request, and runs up to
//! `--concurrency` commands at once.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;
use tokio::sync::Semaphore;
use tonic::transport::Channel;

use crate::pb;
use crate::pb::complete_invocation_request::Outcome;
use crate::pb::worker_service_client::WorkerServiceClient;

use super::client::Target;
use super::{CliError, Connection};

/// Most stdout kept as a return payload (the server's limit, 1 MiB).
const MAX_RETURN_PAYLOAD: usize = 1024 * 1024;
/// Bytes of stderr kept as a failure message.
const STDERR_TAIL: usize = 4 * 1024;

/// Flags of `sai worker`.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// Function to run, as SERVICE/FUNCTION; repeat for several.
    #[arg(long = "function", required = true)]
    pub functions: Vec<Target>,
    /// Shell command run per invocation (`sh -c`).
    #[arg(long)]
    pub exec: String,
    /// Most commands running at once.
    #[arg(long, default_value_t = 1)]
    pub concurrency: usize,
    /// This worker's id (recorded as the invocation's instance_id). Default: host-pid.
    #[arg(long)]
    pub worker_id: Option<String>,
    /// Stop after this many invocations (default: run until interrupted).
    #[arg(long)]
    pub max_invocations: Option<usize>,
}

type Worker = WorkerServiceClient<Channel>;

/// Run the worker until interrupted (or `--max-invocations` are done).
pub async fn run(connection: &Connection, args: WorkerArgs) -> Result<(), CliError> {
    let worker = WorkerServiceClient::new(connection.channel().await?);
    let worker_id = args
        .worker_id
        .clone()
        .unwrap_or_else(|| format!("sai-worker-{}", std::process::id()));
    let concurrency = args.concurrency.max(1);
    let slots = Arc::new(Semaphore::new(concurrency));
    let functions: Vec<pb::FunctionRef> = args
        .functions
        .iter()
        .map(|t| pb::FunctionRef {
            service_name: t.service.clone(),
            function_name: t.function.clone(),
            qualifier: String::new(),
        })
        .collect();
    let command = Arc::new(args.exec.clone());
    let mut started = 0usize;
    let interrupted = tokio_util::sync::CancellationToken::new();
    tokio::spawn({
        let interrupted = interrupted.clone();
        async move {
            crate::server::shutdown_signal().await;
            interrupted.cancel();
        }
    });
    eprintln!(
        "sai worker {worker_id}: running {:?} for {} function(s)",
        args.exec,
        functions.len()
    );
    loop {
        if args.max_invocations.is_some_and(|max| started >= max) {
            break;
        }
        // Wait for a free slot before asking for work, then ask for as many as are free.
        let first = slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| CliError::Closed)?;
        let free = 1 + slots.available_permits();
        let want = args
            .max_invocations
            .map_or(free, |max| free.min(max - started));
        let mut poller = worker.clone();
        let poll = tokio::select! {
            _ = interrupted.cancelled() => break,
            poll = poller.poll_invocations(connection.request(pb::PollInvocationsRequest {
                functions: functions.clone(),
                worker_id: worker_id.clone(),
                max_invocations: i32::try_from(want).unwrap_or(100).min(100),
                wait_time_ms: 20_000,
            })) => poll,
        };
        let leases = match poll {
            Ok(answer) => answer.into_inner().leases,
            Err(status) if status.code() == tonic::Code::Unavailable => {
                eprintln!(
                    "sai worker: server unavailable, retrying: {}",
                    status.message()
                );
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(status) => return Err(status.into()),
        };
        let mut permit = Some(first);
        for lease in leases {
            let slot = match permit.take() {
                Some(slot) => slot,
                None => slots
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| CliError::Closed)?,
            };
            started += 1;
            let (worker, connection, command) =
                (worker.clone(), connection.clone(), command.clone());
            tokio::spawn(async move {
                run_one(worker, &connection, &command, lease).await;
                drop(slot);
            });
        }
    }
    // Let running commands finish and report.
    let _ = slots
        .acquire_many(u32::try_from(concurrency).unwrap_or(u32::MAX))
        .await;
    Ok(())
}

/// Run the command for one lease and report its outcome.
async fn run_one(
    mut worker: Worker,
    connection: &Connection,
    command: &str,
    lease: pb::InvocationLease,
) {
    let invocation = lease.invocation.clone().unwrap_or_default();
    let outcome = execute(&mut worker, connection, command, &lease, &invocation).await;
    let label = match &outcome {
        Outcome::Success(_) => "succeeded",
        Outcome::Failure(_) => "failed",
        Outcome::Stopped(_) => "stopped",
        Outcome::Invalid(_) => "invalid",
    };
    let reported = worker
        .complete_invocation(connection.request(pb::CompleteInvocationRequest {
            lease_token: lease.lease_token.clone(),
            outcome: Some(outcome),
        }))
        .await;
    match reported {
        Ok(_) => eprintln!(
            "sai worker: {}/{} {} attempt {} {label}",
            invocation.service_name,
            invocation.function_name,
            invocation.invocation_id,
            lease.attempt
        ),
        Err(status) => eprintln!(
            "sai worker: could not report {}: {}",
            invocation.invocation_id,
            status.message()
        ),
    }
}

async fn execute(
    worker: &mut Worker,
    connection: &Connection,
    command: &str,
    lease: &pb::InvocationLease,
    invocation: &pb::StatefulAsyncInvocation,
) -> Outcome {
    let spawned = Command::new("sh")
        .arg("-c")
        .arg(command)
        .env("SAI_INVOCATION_ID", &invocation.invocation_id)
        .env("SAI_SERVICE_NAME", &invocation.service_name)
        .env("SAI_FUNCTION_NAME", &invocation.function_name)
        .env("SAI_QUALIFIER", &invocation.qualifier)
        .env("SAI_REQUEST_ID", &invocation.request_id)
        .env("SAI_ATTEMPT", lease.attempt.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(err) => {
            return Outcome::Invalid(pb::CompleteInvalid {
                reason: format!("cannot start {command:?}: {err}"),
            })
        }
    };
    let (Some(mut stdin), Some(mut stdout), Some(mut stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Outcome::Invalid(pb::CompleteInvalid {
            reason: "cannot attach to the command's stdio".into(),
        });
    };
    let payload = invocation.invocation_payload.clone().into_bytes();
    let feed = tokio::spawn(async move {
        // A command that does not read its stdin is fine: ignore a broken pipe.
        let _ = stdin.write_all(&payload).await;
    });
    let read_out = tokio::spawn(async move {
        let mut out = Vec::new();
        let _ = (&mut stdout)
            .take(MAX_RETURN_PAYLOAD as u64 + 1)
            .read_to_end(&mut out)
            .await;
        out
    });
    let read_err = tokio::spawn(async move {
        let mut err = Vec::new();
        let _ = stderr.read_to_end(&mut err).await;
        err
    });

    // Heartbeat at a third of the lease (so two can be lost before it runs out), and at
    // least every second, since the heartbeat answer is also how a stop request arrives.
    let lease_left = lease.lease_deadline - crate::clock::Clock::system().now_ms();
    let interval = Duration::from_millis(
        u64::try_from(lease_left / 3)
            .unwrap_or(1_000)
            .clamp(100, 1_000),
    );
    let mut ticker = tokio::time::interval(interval);
    ticker.tick().await;
    let status = loop {
        tokio::select! {
            status = child.wait() => break status,
            _ = ticker.tick() => {
                let beat = worker
                    .heartbeat_invocation(connection.request(pb::HeartbeatInvocationRequest {
                        lease_token: lease.lease_token.clone(),
                    }))
                    .await;
                match beat {
                    Ok(answer) if answer.get_ref().stop_requested => {
                        let _ = child.kill().await;
                        return Outcome::Stopped(pb::CompleteStopped {});
                    }
                    Ok(_) => {}
                    Err(status) if status.code() == tonic::Code::FailedPrecondition
                        || status.code() == tonic::Code::NotFound => {
                        // The lease is gone (expired, or the stop grace ran out): stop working.
                        let _ = child.kill().await;
                        return Outcome::Stopped(pb::CompleteStopped {});
                    }
                    Err(_) => {}
                }
            }
        }
    };
    let _ = feed.await;
    let out = read_out.await.unwrap_or_default();
    let err = read_err.await.unwrap_or_default();
    match status {
        Ok(status) if status.success() => {
            if out.len() > MAX_RETURN_PAYLOAD {
                return Outcome::Failure(pb::CompleteFailure {
                    error_message: "stdout exceeds the 1 MiB return payload limit".into(),
                    permanent: true,
                    ..Default::default()
                });
            }
            Outcome::Success(pb::CompleteSuccess {
                return_payload: String::from_utf8_lossy(&out).into_owned(),
            })
        }
        Ok(status) => {
            let tail = &err[err.len().saturating_sub(STDERR_TAIL)..];
            let tail = String::from_utf8_lossy(tail);
            let message = if tail.trim().is_empty() {
                format!("command exited with {status}")
            } else {
                format!("command exited with {status}: {}", tail.trim_end())
            };
            Outcome::Failure(pb::CompleteFailure {
                error_message: message,
                ..Default::default()
            })
        }
        Err(err) => Outcome::Failure(pb::CompleteFailure {
            error_message: format!("cannot wait for the command: {err}"),
            ..Default::default()
        }),
    }
}
