//! The closed-loop load generator: C clients sharing K connections, each client sending its
//! next call as soon as the last one is answered, for a warm-up and then a measured duration.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use tokio::task::JoinSet;
use tonic::transport::Channel;

use crate::pb;
use crate::pb::stateful_async_invocation_service_client::StatefulAsyncInvocationServiceClient;

use super::history::{seed_function, seed_id, SEED_ACCOUNT, SEED_SERVICE};
use super::report::Latencies;
use super::BenchError;

/// Warm-up before measuring.
pub const WARM_UP: Duration = Duration::from_secs(1);

/// One kind of call.
#[derive(Debug, Clone)]
pub enum Call {
    /// InvokeFunction with a fresh id and this payload.
    Invoke(Arc<str>),
    /// GetStatefulAsyncInvocation of a random one of `stored` seeded invocations.
    Get {
        /// How many are stored.
        stored: usize,
        /// Over how many functions.
        functions: usize,
        /// Started time of the first (seeded one per ms), which their ids carry.
        start_ms: i64,
    },
    /// A page of `limit` of a seeded function, starting at a random one of `stored`
    /// (seeded from `start_ms`, one per ms).
    List {
        /// How many are stored.
        stored: usize,
        /// Over how many functions.
        functions: usize,
        /// Page size.
        limit: i32,
        /// Started time of the first.
        start_ms: i64,
    },
}

/// How many clients call, and over how many connections.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct Clients {
    /// Concurrent clients, each with one call in flight.
    #[arg(long, default_value_t = 64, value_parser = super::at_least_one())]
    pub clients: usize,
    /// Connections the clients share, round robin, as the clients of one process share a
    /// gRPC channel (0: a connection per client).
    #[arg(long, default_value_t = 1)]
    pub connections: usize,
}

/// `wanted` connections to `url` for `clients` clients to share (0: one per client).
pub async fn connect(url: &str, clients: usize, wanted: usize) -> Result<Vec<Channel>, BenchError> {
    connect_spread(std::slice::from_ref(&url.to_string()), clients, wanted).await
}

/// [`connect`] to several servers (replicas of one cluster): the connections go to each in
/// turn, at least one to every server.
pub async fn connect_spread(
    urls: &[String],
    clients: usize,
    wanted: usize,
) -> Result<Vec<Channel>, BenchError> {
    let count = match wanted {
        0 => clients,
        n => n.min(clients),
    }
    .max(urls.len())
    .max(1);
    let mut channels = Vec::with_capacity(count);
    for at in 0..count {
        let url = &urls[at % urls.len()];
        let endpoint =
            Channel::from_shared(url.to_string()).map_err(|e| BenchError::Server(e.to_string()))?;
        channels.push(
            endpoint
                .connect()
                .await
                .map_err(|e| BenchError::Server(e.to_string()))?,
        );
    }
    Ok(channels)
}

/// One run's answers.
pub struct Run {
    /// Calls answered per second while measuring.
    pub throughput: f64,
    /// Their latencies.
    pub latencies: Latencies,
    /// Every call answered, warm-up included.
    pub calls: u64,
}

/// Run `call` from `clients` against `url` for `duration` after the warm-up.
pub async fn closed_loop(
    url: &str,
    clients: Clients,
    duration: Duration,
    call: Call,
) -> Result<Run, BenchError> {
    let channels = connect(url, clients.clients, clients.connections).await?;
    let call = Arc::new(call);
    drive(
        clients.clients,
        duration,
        |client_no| {
            StatefulAsyncInvocationServiceClient::new(channels[client_no % channels.len()].clone())
        },
        move |mut client, client_no, n| {
            let call = call.clone();
            async move {
                one(&mut client, &call, client_no, n)
                    .await
                    .map_err(|status| status.to_string())
            }
        },
    )
    .await
}

/// `clients` clients, each made by `make` and calling `call(client, client_no, n)` as soon
/// as its last call is answered, for the warm-up and then `duration`.
pub async fn drive<C, F, Fut>(
    clients: usize,
    duration: Duration,
    make: impl Fn(usize) -> C,
    call: F,
) -> Result<Run, BenchError>
where
    C: Clone + Send + 'static,
    F: Fn(C, usize, u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send,
{
    let measure_from = Instant::now() + WARM_UP;
    let stop_at = measure_from + duration;
    let mut tasks = JoinSet::new();
    for client_no in 0..clients {
        let client = make(client_no);
        let call = call.clone();
        tasks.spawn(async move {
            let mut latencies = Latencies::default();
            let mut failure = None;
            let mut calls = 0;
            for n in 0u64.. {
                let sent = Instant::now();
                if sent >= stop_at {
                    break;
                }
                calls += 1;
                if let Err(err) = call(client.clone(), client_no, n).await {
                    failure = Some(err);
                    break;
                }
                if sent >= measure_from {
                    latencies.record(sent.elapsed());
                }
            }
            (latencies, failure, calls)
        });
    }
    let mut latencies = Latencies::default();
    let mut calls = 0;
    while let Some(done) = tasks.join_next().await {
        let (client_latencies, failure, client_calls) =
            done.map_err(|e| BenchError::Server(e.to_string()))?;
        calls += client_calls;
        if let Some(failure) = failure {
            return Err(BenchError::Server(format!("a call failed: {failure}")));
        }
        latencies.merge(client_latencies);
    }
    Ok(Run {
        throughput: latencies.len() as f64 / duration.as_secs_f64(),
        latencies,
        calls,
    })
}

fn as_seeded<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "x-fc-account-id",
        tonic::metadata::MetadataValue::from_static(SEED_ACCOUNT),
    );
    request
}

async fn one(
    client: &mut StatefulAsyncInvocationServiceClient<Channel>,
    call: &Call,
    client_no: usize,
    n: u64,
) -> Result<(), tonic::Status> {
    match call {
        Call::Invoke(payload) => {
            client
                .invoke_function(pb::InvokeFunctionRequest {
                    service_name: "bench".into(),
                    function_name: "invoke".into(),
                    invocation_id: format!("c{client_no}-{n}"),
                    payload: payload.to_string(),
                    ..Default::default()
                })
                .await?;
        }
        Call::Get {
            stored,
            functions,
            start_ms,
        } => {
            let pick = rand::rng().random_range(0..*stored);
            client
                .get_stateful_async_invocation(as_seeded(pb::GetStatefulAsyncInvocationRequest {
                    service_name: SEED_SERVICE.into(),
                    function_name: seed_function(pick % functions.max(&1)),
                    qualifier: String::new(),
                    invocation_id: seed_id(*start_ms, pick),
                }))
                .await?;
        }
        Call::List {
            stored,
            functions,
            limit,
            start_ms,
        } => {
            // Far enough from the end that a whole page follows in the function.
            let room = usize::try_from(*limit).unwrap_or(0) * functions.max(&1);
            let from = rand::rng().random_range(0..stored.saturating_sub(room).max(1));
            let page = client
                .list_stateful_async_invocations(as_seeded(
                    pb::ListStatefulAsyncInvocationsRequest {
                        service_name: SEED_SERVICE.into(),
                        function_name: seed_function(from % functions.max(&1)),
                        started_time_begin: start_ms + i64::try_from(from).unwrap_or(0),
                        sort_order_by_time: pb::SortOrder::Asc as i32,
                        limit: *limit,
                        ..Default::default()
                    },
                ))
                .await?
                .into_inner();
            if page.invocations.is_empty() {
                return Err(tonic::Status::internal(
                    "an empty page from a seeded function",
                ));
            }
        }
    }
    Ok(())
}
