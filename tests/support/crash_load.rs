//! The load of the crash tests: clients invoking new ids and workers completing them with a
//! known outcome each, recording what was acknowledged; and the `sai serve` replicas of the
//! cluster tests.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use parking_lot::Mutex;
use sai::pb;

use super::*;

/// What the workers were told each invocation returns: even ids succeed, odd ids fail for good.
pub fn intended_outcome(id: &str) -> Result<String, String> {
    let n: u64 = id
        .rsplit('-')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    if n.is_multiple_of(2) {
        Ok(format!("ok:{id}"))
    } else {
        Err(format!("failed:{id}"))
    }
}

/// That `got` ended as the worker was told to report it.
pub fn assert_outcome(
    id: &str,
    got: &pb::StatefulAsyncInvocation,
    outcome: &Result<String, String>,
) {
    match outcome {
        Ok(payload) => {
            assert_eq!(status_of(got), pb::InvocationStatus::Succeeded, "{id}");
            assert_eq!(&got.return_payload, payload, "{id}");
        }
        Err(message) => {
            assert_eq!(status_of(got), pb::InvocationStatus::Failed, "{id}");
            assert_eq!(&got.invocation_error_message, message, "{id}");
        }
    }
}

/// `all` by id, once every invocation in `acked` is found among them.
pub fn every_acknowledged_stored<'a>(
    acked: &Acknowledged,
    all: &'a [pb::StatefulAsyncInvocation],
) -> BTreeMap<&'a str, &'a pb::StatefulAsyncInvocation> {
    let stored: BTreeMap<&str, &pb::StatefulAsyncInvocation> =
        all.iter().map(|i| (i.invocation_id.as_str(), i)).collect();
    for id in &acked.invoked {
        assert!(
            stored.contains_key(id.as_str()),
            "acknowledged {id} is lost"
        );
    }
    stored
}

/// Everything acknowledged so far, across all cycles.
#[derive(Default)]
pub struct Acknowledged {
    pub invoked: BTreeSet<String>,
    /// id -> outcome the worker reported and the server acknowledged.
    pub completed: BTreeMap<String, Result<String, String>>,
}

/// Invoke new ids until the server goes away, recording each acknowledged one.
/// Ids are `{tag}-{n}`, n from 0.
pub async fn invoking(url: String, tag: String, acked: Arc<Mutex<Acknowledged>>) {
    invoke_each(url, tag, acked, false).await
}

/// Invoke new ids until stopped, recording each acknowledged one; a refused call (the
/// database switching over, say) is not acknowledged, and the next id is tried a moment
/// later.
pub async fn invoking_through_errors(url: String, tag: String, acked: Arc<Mutex<Acknowledged>>) {
    invoke_each(url, tag, acked, true).await
}

async fn invoke_each(url: String, tag: String, acked: Arc<Mutex<Acknowledged>>, go_on: bool) {
    let Ok(mut client) = Client::connect(url).await else {
        return;
    };
    for n in 0.. {
        let id = format!("{tag}-{n}");
        let answer = client
            .invoke_function(pb::InvokeFunctionRequest {
                service_name: SERVICE.into(),
                function_name: FUNCTION.into(),
                invocation_id: id.clone(),
                payload: format!("{{\"n\":{n}}}"),
                ..Default::default()
            })
            .await;
        match answer {
            Ok(_) => {
                acked.lock().invoked.insert(id);
            }
            Err(_) if go_on => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            Err(_) => return,
        }
    }
}

/// `sai serve` on the PostgreSQL at `url`, with `flags`.
pub async fn start_replica(url: &str, flags: &[&str]) -> SaiProcess {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_sai"));
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--store", url])
        .args(flags)
        .env("RUST_LOG", "error")
        .stderr(std::process::Stdio::inherit());
    tokio::task::spawn_blocking(move || SaiProcess::start(&mut command))
        .await
        .expect("start sai serve")
}

/// Every invocation of the function once none is open, waiting up to `limit`.
pub async fn all_ended(
    client: &mut Client,
    limit: std::time::Duration,
) -> Vec<pb::StatefulAsyncInvocation> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let all = list_all(client, "default", list_request(FUNCTION)).await;
        let open: Vec<(&str, pb::InvocationStatus)> = all
            .iter()
            .filter(|i| {
                !matches!(
                    status_of(i),
                    pb::InvocationStatus::Succeeded | pb::InvocationStatus::Failed
                )
            })
            .map(|i| (i.invocation_id.as_str(), status_of(i)))
            .collect();
        if open.is_empty() {
            return all;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} invocations still not terminal after {limit:?}: {:?}",
            open.len(),
            &open[..open.len().min(5)]
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Poll and complete with each id's intended outcome, recording acknowledged completions.
pub async fn working(url: String, acked: Arc<Mutex<Acknowledged>>) {
    let Ok(mut worker) = Worker::connect(url).await else {
        return;
    };
    loop {
        let Ok(leases) = worker
            .poll_invocations(pb::PollInvocationsRequest {
                functions: vec![pb::FunctionRef {
                    service_name: SERVICE.into(),
                    function_name: FUNCTION.into(),
                    qualifier: String::new(),
                }],
                worker_id: "crash-worker".into(),
                max_invocations: 16,
                wait_time_ms: 200,
            })
            .await
        else {
            return;
        };
        for lease in leases.into_inner().leases {
            let id = lease
                .invocation
                .map(|i| i.invocation_id)
                .unwrap_or_default();
            let outcome = intended_outcome(&id);
            let reported = match &outcome {
                Ok(payload) => success(payload),
                Err(message) => permanent_failure(message),
            };
            let answer = worker
                .complete_invocation(pb::CompleteInvocationRequest {
                    lease_token: lease.lease_token,
                    outcome: Some(reported),
                })
                .await;
            match answer {
                Ok(_) => {
                    acked.lock().completed.insert(id, outcome);
                }
                Err(status) if status.code() == tonic::Code::Unavailable => return,
                Err(_) => {}
            }
        }
    }
}
