//! The load of the crash tests: clients invoking new ids and workers completing them with a
//! known outcome each, until their server goes away, recording what was acknowledged.

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
            Err(_) => return,
        }
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
