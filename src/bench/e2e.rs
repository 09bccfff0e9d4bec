//! `e2e`: invoke -> worker poll -> complete -> Succeeded. P producers invoke N invocations (as
//! fast as they are answered, or paced at a total rate) over shared connections; W workers,
//! each on its own connection, long-poll batches and complete every lease concurrently. Reports throughput
//! (N over first invoke to last completion) and the latency from sending the invoke to the
//! acknowledged Succeeded completion.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::task::JoinSet;
use tonic::transport::Channel;

use crate::pb;
use crate::pb::stateful_async_invocation_service_client::StatefulAsyncInvocationServiceClient;
use crate::pb::worker_service_client::WorkerServiceClient;

use super::load::connect_spread;
use super::machine::{MachineCpu, MachineUse};
use super::report::{median_index, runs_column, Latencies, Report};
use super::server::{process_cpu_time, Mode, ScratchDir, ServerProcess};
use super::{micros_per, poll_request, server_error, succeeded, BenchError};

/// Flags of `sai bench e2e`.
#[derive(Debug, clap::Args)]
pub struct E2eArgs {
    /// Invocations per run.
    #[arg(long, default_value_t = 20_000, value_parser = super::at_least_one())]
    pub invocations: usize,
    /// Producers (clients invoking, each one call at a time).
    #[arg(long, default_value_t = 64, value_parser = super::at_least_one())]
    pub producers: usize,
    /// Connections the producers share, round robin, as the callers in one process share a
    /// gRPC channel (0: a connection per producer).
    #[arg(long, default_value_t = 1)]
    pub producer_connections: usize,
    /// Workers, one connection each.
    #[arg(long, default_value_t = 8, value_parser = super::at_least_one())]
    pub workers: usize,
    /// Connections the workers share, round robin (0: a connection per worker, as workers
    /// in separate processes have).
    #[arg(long, default_value_t = 0)]
    pub worker_connections: usize,
    /// Invocations per producer call: 1 sends InvokeFunction, more send InvokeFunctions
    /// of that many (up to 100; as BullMQ's addBulk).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=100))]
    pub invoke_batch: u16,
    /// Producers send over InvokeFunctionStream: one stream per producer connection, with
    /// `--producers` invocations in flight in all, each its own message (as BullMQ's add
    /// pipelined on one Redis connection).
    #[arg(long, conflicts_with = "invoke_batch")]
    pub invoke_stream: bool,
    /// Leases a worker asks for per poll.
    #[arg(long, default_value_t = 32)]
    pub batch: i32,
    /// How workers report: `batch` (one CompleteInvocations per poll) or `each` (one
    /// CompleteInvocation per lease, all in flight at once).
    #[arg(long, value_enum, default_value = "batch")]
    pub complete: Completion,
    /// Offered rate in invocations/s across all producers (0: as fast as answered).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Storage modes to measure.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "sync")]
    pub modes: Vec<Mode>,
    /// Servers sharing the work (with `--store`: replicas on one database); producers and
    /// workers connect to each in turn.
    #[arg(long, default_value_t = 1, value_parser = super::at_least_one())]
    pub replicas: usize,
    /// Watch the run from a replica that takes none of its load (the last of `--replicas`,
    /// at least 2): a WatchInvocations stream of the function, reporting each event's delay
    /// from its timestamp (taken before its commit, on the replica that committed it) to its
    /// arrival.
    #[arg(long)]
    pub watcher: bool,
    /// Runtime worker threads of each server (`sai --threads`); 0: the server's default.
    /// Replicas sharing this machine can be given a share of its cores each, as a container's
    /// CPU limit would.
    #[arg(long, default_value_t = 0)]
    pub server_threads: usize,
    /// Bytes of each invocation's payload (up to the server's limit, 128 KiB by default).
    #[arg(long, default_value_t = DEFAULT_PAYLOAD_BYTES)]
    pub payload_bytes: usize,
}

/// The payload size every e2e figure was measured with unless it says otherwise.
pub const DEFAULT_PAYLOAD_BYTES: usize = 100;

/// How a bench worker reports outcomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Completion {
    /// One CompleteInvocations per poll.
    Batch,
    /// One CompleteInvocation per lease.
    Each,
}

/// The service and function the load invokes.
pub(super) const SERVICE: &str = "bench";
pub(super) const FUNCTION: &str = "e2e";

pub(super) struct Run {
    pub(super) throughput: f64,
    pub(super) latencies: Latencies,
    cpu_us: f64,
    /// This process's CPU (the producers, workers and watcher) per invocation.
    load_cpu_us: f64,
    /// Everything on the machine (server, PostgreSQL, this load generator) over the run.
    machine: MachineUse,
    /// Event delays seen by the watcher, with `--watcher`.
    watched: Option<Latencies>,
    stages: Stages,
}

/// Where an invocation's time goes, call by call: which side bounds a run shows here (a
/// backlog grows behind workers whose polls and completions take long, producers wait on
/// slow invokes).
#[derive(Default)]
struct Stages {
    /// Each PollInvocations call, from sent to answered.
    polls: Latencies,
    /// Leases the polls handed out.
    leases: usize,
    /// Each poll's completions, from the first sent to the last answered.
    completes: Latencies,
    /// Each unary InvokeFunction or InvokeFunctions call (none over a stream, where calls
    /// overlap).
    invokes: Latencies,
}

impl Stages {
    fn merge(&mut self, other: Stages) {
        self.polls.merge(other.polls);
        self.leases += other.leases;
        self.completes.merge(other.completes);
        self.invokes.merge(other.invokes);
    }
}

/// Measure every mode `runs` times; report the median run of each.
pub async fn run(args: &E2eArgs, runs: usize) -> Result<Report, BenchError> {
    if args.watcher && args.replicas < 2 {
        return Err(BenchError::Usage(
            "--watcher needs --replicas 2 or more: the watcher's replica takes no load".into(),
        ));
    }
    let mut columns = vec![
        "mode",
        "offered/s",
        "completed/s",
        "server CPU µs/invocation",
        "load generator CPU µs/invocation",
        "machine CPU µs/invocation",
        "steal %",
        "p50 ms",
        "p99 ms",
        "leases/poll",
        "poll p50 ms",
        "complete p50 ms",
        "invoke p50 ms",
    ];
    if args.watcher {
        columns.extend(["watched events", "watch p50 ms", "watch p99 ms"]);
    }
    columns.push("runs (completed/s)");
    let mut report = Report::new(
        "e2e",
        json!({ "invocations": args.invocations, "producers": args.producers, "invoke_stream": args.invoke_stream,
                "producer_connections": args.producer_connections, "invoke_batch": args.invoke_batch,
                "workers": args.workers, "batch": args.batch, "rate": args.rate, "runs": runs,
                "replicas": args.replicas, "watcher": args.watcher,
                "server_threads": args.server_threads }),
        columns,
    );
    for mode in &args.modes {
        let mut measured = Vec::new();
        for _ in 0..runs.max(1) {
            let dir = ScratchDir::new("e2e")?;
            let mut servers = Vec::new();
            for replica in 0..args.replicas.max(1) {
                servers.push(
                    ServerProcess::start_replica(
                        *mode,
                        dir.path(),
                        replica == 0,
                        args.server_threads,
                    )
                    .await?,
                );
            }
            let mut urls: Vec<String> = servers.iter().map(|s| s.url.clone()).collect();
            let watcher = match args.watcher {
                true => {
                    let url = urls.pop().expect("--watcher runs with 2 replicas or more");
                    Some(Watcher::start(url, args.invocations * EVENTS_PER_INVOCATION).await?)
                }
                false => None,
            };
            let cpu_of = |servers: &[ServerProcess]| -> Duration {
                servers.iter().map(ServerProcess::cpu_time).sum()
            };
            let cpu_before = cpu_of(&servers);
            let machine_before = MachineCpu::now();
            let load_before = process_cpu_time("self");
            let mut run = once(&urls, args).await?;
            run.machine = MachineCpu::now().since(machine_before);
            if let Some(watcher) = watcher {
                run.watched = Some(watcher.finish().await?);
            }
            let servers_cpu = cpu_of(&servers).saturating_sub(cpu_before);
            run.cpu_us = micros_per(servers_cpu, args.invocations as u64);
            let load_cpu = process_cpu_time("self").saturating_sub(load_before);
            run.load_cpu_us = micros_per(load_cpu, args.invocations as u64);
            measured.push(run);
        }
        let throughputs: Vec<f64> = measured.iter().map(|r| r.throughput).collect();
        let mut median = measured.swap_remove(median_index(&throughputs));
        let mut row = vec![
            json!(mode.name()),
            if args.rate == 0 {
                json!("max")
            } else {
                json!(args.rate)
            },
            json!(median.throughput.round() as u64),
            json!((median.cpu_us * 10.0).round() / 10.0),
            json!(median.load_cpu_us.round()),
            json!(median.machine.busy_us_per(args.invocations).round()),
            json!((median.machine.steal_percent() * 10.0).round() / 10.0),
            json!(median.latencies.percentile_ms(50.0)),
            json!(median.latencies.percentile_ms(99.0)),
            json!(
                (median.stages.leases as f64 / median.stages.polls.len().max(1) as f64 * 10.0)
                    .round()
                    / 10.0
            ),
            json!(median.stages.polls.percentile_ms(50.0)),
            json!(median.stages.completes.percentile_ms(50.0)),
            if median.stages.invokes.is_empty() {
                json!("-")
            } else {
                json!(median.stages.invokes.percentile_ms(50.0))
            },
        ];
        if let Some(watched) = &mut median.watched {
            row.extend([
                json!(watched.len()),
                json!(watched.percentile_ms(50.0)),
                json!(watched.percentile_ms(99.0)),
            ]);
        }
        row.push(runs_column(&throughputs));
        report.row(row);
    }
    Ok(report)
}

/// Enqueued, Dequeued, Running, Succeeded.
const EVENTS_PER_INVOCATION: usize = 4;

/// A WatchInvocations stream of the bench function on a replica of its own.
struct Watcher {
    task: tokio::task::JoinHandle<Result<Latencies, BenchError>>,
}

impl Watcher {
    /// Open the stream (from now on) and read it until `expected` events arrived.
    async fn start(url: String, expected: usize) -> Result<Watcher, BenchError> {
        let mut client = StatefulAsyncInvocationServiceClient::connect(url)
            .await
            .map_err(server_error)?;
        // Answered once the replica follows the feed: nothing committed after this is missed.
        let mut stream = client
            .watch_invocations(pb::WatchInvocationsRequest {
                service_name: SERVICE.into(),
                function_name: FUNCTION.into(),
                from_sequence: 0,
                from_oldest: false,
            })
            .await
            .map_err(server_error)?
            .into_inner();
        let task = tokio::spawn(async move {
            let mut delays = Latencies::default();
            while delays.len() < expected {
                let Some(change) = stream.message().await.map_err(server_error)? else {
                    break;
                };
                let received_us = super::wall_us();
                if let Some(event) = change.event {
                    let committed_us = event.timestamp.saturating_mul(1_000);
                    delays.record(Duration::from_micros(
                        u64::try_from(received_us - committed_us).unwrap_or(0),
                    ));
                }
            }
            Ok(delays)
        });
        Ok(Watcher { task })
    }

    /// The delays seen, once every event arrived (or 30 s after the load ended).
    async fn finish(self) -> Result<Latencies, BenchError> {
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .map_err(|_| server_error("the watcher did not see every event within 30 s"))?
            .map_err(server_error)?
    }
}

/// Complete every lease as succeeded; returns (invocation id, when acknowledged).
async fn report(
    worker: &mut WorkerServiceClient<Channel>,
    leases: Vec<pb::InvocationLease>,
    mode: Completion,
) -> Result<Vec<(String, Instant)>, BenchError> {
    let id = |lease: &pb::InvocationLease| {
        lease
            .invocation
            .as_ref()
            .map(|i| i.invocation_id.clone())
            .unwrap_or_default()
    };
    if leases.is_empty() {
        return Ok(Vec::new());
    }
    match mode {
        Completion::Batch => {
            let results = worker
                .complete_invocations(pb::CompleteInvocationsRequest {
                    completions: leases.iter().map(succeeded).collect(),
                })
                .await
                .map_err(server_error)?
                .into_inner()
                .results;
            let at = Instant::now();
            if let Some(failed) = results.iter().find(|r| r.code != 0) {
                return Err(server_error(&failed.message));
            }
            Ok(leases.iter().map(|l| (id(l), at)).collect())
        }
        Completion::Each => {
            let mut completions = JoinSet::new();
            for lease in leases {
                let mut worker = worker.clone();
                completions.spawn(async move {
                    worker
                        .complete_invocation(succeeded(&lease))
                        .await
                        .map(|_| (id(&lease), Instant::now()))
                });
            }
            let mut done = Vec::new();
            while let Some(one) = completions.join_next().await {
                done.push(one.map_err(server_error)?.map_err(server_error)?);
            }
            Ok(done)
        }
    }
}

/// The bench's invocation number `i`.
fn invoke_request(i: usize, payload: &str) -> pb::InvokeFunctionRequest {
    pb::InvokeFunctionRequest {
        service_name: SERVICE.into(),
        function_name: FUNCTION.into(),
        invocation_id: format!("e{i}"),
        payload: payload.to_owned(),
        ..Default::default()
    }
}

pub(super) async fn once(urls: &[String], args: &E2eArgs) -> Result<Run, BenchError> {
    let n = args.invocations;
    let origin = Instant::now();
    // Send time of invocation i, in µs after `origin` (+1 so that 0 means "not sent yet").
    let sent: Arc<Vec<std::sync::atomic::AtomicU64>> = Arc::new(
        (0..n)
            .map(|_| std::sync::atomic::AtomicU64::new(0))
            .collect(),
    );
    let completed = Arc::new(AtomicUsize::new(0));
    let next = Arc::new(AtomicUsize::new(0));

    let mut workers = JoinSet::new();
    let channels = connect_spread(urls, args.workers, args.worker_connections).await?;
    for w in 0..args.workers {
        let mut worker = WorkerServiceClient::new(channels[w % channels.len()].clone());
        let (sent, completed, batch, mode) =
            (sent.clone(), completed.clone(), args.batch, args.complete);
        workers.spawn(async move {
            let mut latencies = Latencies::default();
            let mut stages = Stages::default();
            let mut last_done: Option<Instant> = None;
            while completed.load(Ordering::Acquire) < n {
                let polled = Instant::now();
                let leases = worker
                    .poll_invocations(poll_request(
                        SERVICE,
                        FUNCTION,
                        format!("bench-worker-{w}"),
                        batch,
                        200,
                    ))
                    .await
                    .map_err(server_error)?
                    .into_inner()
                    .leases;
                stages.polls.record(polled.elapsed());
                stages.leases += leases.len();
                let reporting = Instant::now();
                let any = !leases.is_empty();
                let done = report(&mut worker, leases, mode).await?;
                if any {
                    stages.completes.record(reporting.elapsed());
                }
                for (id, at) in done {
                    let index: usize = id
                        .strip_prefix('e')
                        .and_then(|i| i.parse().ok())
                        .ok_or_else(|| server_error(format!("unexpected id {id}")))?;
                    let sent_us = sent[index].load(Ordering::Acquire);
                    let done_us = at.duration_since(origin).as_micros() as u64 + 1;
                    latencies.record(Duration::from_micros(done_us.saturating_sub(sent_us)));
                    last_done = Some(last_done.map_or(at, |l| l.max(at)));
                    completed.fetch_add(1, Ordering::AcqRel);
                }
            }
            Ok::<_, BenchError>((latencies, stages, last_done))
        });
    }

    let payload: Arc<str> = "x".repeat(args.payload_bytes).into();
    let started = Instant::now();
    if args.invoke_stream {
        let streams = connect_spread(urls, args.producers, args.producer_connections).await?;
        let mut producers = JoinSet::new();
        for (at, channel) in streams.iter().enumerate() {
            // Producers spread over the streams as evenly as they divide.
            let in_flight =
                args.producers / streams.len() + usize::from(at < args.producers % streams.len());
            let every = (args.rate > 0)
                .then(|| Duration::from_secs_f64(streams.len() as f64 / args.rate as f64));
            let shared = Producing {
                n,
                origin,
                payload: payload.clone(),
                sent: sent.clone(),
                next: next.clone(),
            };
            let client = StatefulAsyncInvocationServiceClient::new(channel.clone());
            producers.spawn(stream_producer(client, shared, in_flight.max(1), every));
        }
        while let Some(done) = producers.join_next().await {
            done.map_err(server_error)??;
        }
        return finish(workers, started, Latencies::default()).await;
    }
    let mut producers = JoinSet::new();
    let invoke_batch = usize::from(args.invoke_batch);
    // Each tick of a producer sends one call of `invoke_batch` invocations.
    let per_producer_interval = (args.rate > 0).then(|| {
        Duration::from_secs_f64(args.producers as f64 * invoke_batch as f64 / args.rate as f64)
    });
    let channels = connect_spread(urls, args.producers, args.producer_connections).await?;
    let producer_count = args.producers;
    for p in 0..args.producers {
        let client =
            StatefulAsyncInvocationServiceClient::new(channels[p % channels.len()].clone());
        let (sent, next, payload) = (sent.clone(), next.clone(), payload.clone());
        producers.spawn(async move {
            let mut client = client;
            // Producers start a fraction of the interval apart, so that the total offered
            // load arrives evenly instead of in bursts of one call per producer.
            let mut tick = per_producer_interval.map(|every| {
                let offset = every.mul_f64(p as f64 / producer_count as f64);
                tokio::time::interval_at(tokio::time::Instant::now() + offset, every)
            });
            let mut invokes = Latencies::default();
            loop {
                if let Some(tick) = &mut tick {
                    tick.tick().await;
                }
                let first = next.fetch_add(invoke_batch, Ordering::AcqRel);
                if first >= n {
                    return Ok::<_, BenchError>(invokes);
                }
                let batch = first..(first + invoke_batch).min(n);
                let at = origin.elapsed().as_micros() as u64 + 1;
                for i in batch.clone() {
                    sent[i].store(at, Ordering::Release);
                }
                let invoked = Instant::now();
                if invoke_batch == 1 {
                    client
                        .invoke_function(invoke_request(first, &payload))
                        .await
                        .map_err(server_error)?;
                } else {
                    let results = client
                        .invoke_functions(pb::InvokeFunctionsRequest {
                            invocations: batch.map(|i| invoke_request(i, &payload)).collect(),
                        })
                        .await
                        .map_err(server_error)?
                        .into_inner()
                        .results;
                    if let Some(refused) = results.iter().find(|r| r.code != 0) {
                        return Err(server_error(&refused.message));
                    }
                }
                invokes.record(invoked.elapsed());
            }
        });
    }
    let mut invokes = Latencies::default();
    while let Some(done) = producers.join_next().await {
        invokes.merge(done.map_err(server_error)??);
    }
    finish(workers, started, invokes).await
}

type Workers = JoinSet<Result<(Latencies, Stages, Option<Instant>), BenchError>>;

/// Wait for the workers to complete everything; the run from `started` to the last completion.
async fn finish(
    mut workers: Workers,
    started: Instant,
    invokes: Latencies,
) -> Result<Run, BenchError> {
    let mut latencies = Latencies::default();
    let mut stages = Stages {
        invokes,
        ..Stages::default()
    };
    let mut last = started;
    let deadline = tokio::time::timeout(Duration::from_secs(600), async {
        while let Some(done) = workers.join_next().await {
            let (worker_latencies, worker_stages, finished) = done.map_err(server_error)??;
            latencies.merge(worker_latencies);
            stages.merge(worker_stages);
            if let Some(finished) = finished {
                last = last.max(finished);
            }
        }
        Ok::<_, BenchError>(())
    });
    deadline
        .await
        .map_err(|_| server_error("the workers did not finish in 600 s"))??;
    let completed = latencies.len();
    Ok(Run {
        throughput: completed as f64 / last.duration_since(started).as_secs_f64(),
        latencies,
        cpu_us: 0.0,
        load_cpu_us: 0.0,
        machine: MachineUse::default(),
        watched: None,
        stages,
    })
}

/// What the producers of one run share.
struct Producing {
    n: usize,
    origin: Instant,
    /// Send time of invocation i, in µs after `origin` (+1 so that 0 means "not sent yet").
    sent: Arc<Vec<std::sync::atomic::AtomicU64>>,
    /// The next invocation number to send.
    next: Arc<AtomicUsize>,
    /// Every invocation's payload.
    payload: Arc<str>,
}

/// Invoke over one InvokeFunctionStream, keeping `in_flight` messages unanswered (one sent
/// per `every`, when paced), until all `n` are sent and answered.
async fn stream_producer(
    mut client: StatefulAsyncInvocationServiceClient<Channel>,
    shared: Producing,
    in_flight: usize,
    every: Option<Duration>,
) -> Result<(), BenchError> {
    let (send, outgoing) = tokio::sync::mpsc::channel(in_flight);
    let mut results = client
        .invoke_function_stream(tokio_stream::wrappers::ReceiverStream::new(outgoing))
        .await
        .map_err(server_error)?
        .into_inner();
    let window = Arc::new(tokio::sync::Semaphore::new(in_flight));
    let sender = tokio::spawn({
        let window = window.clone();
        async move {
            let mut tick = every.map(tokio::time::interval);
            loop {
                if let Some(tick) = &mut tick {
                    tick.tick().await;
                }
                let Ok(permit) = window.acquire().await else {
                    return;
                };
                permit.forget();
                let i = shared.next.fetch_add(1, Ordering::AcqRel);
                if i >= shared.n {
                    return; // dropping `send` closes the stream
                }
                let at = shared.origin.elapsed().as_micros() as u64 + 1;
                shared.sent[i].store(at, Ordering::Release);
                if send.send(invoke_request(i, &shared.payload)).await.is_err() {
                    return;
                }
            }
        }
    });
    while let Some(result) = results.message().await.map_err(server_error)? {
        if result.code != 0 {
            sender.abort();
            return Err(server_error(&result.message));
        }
        window.add_permits(1);
    }
    sender.await.map_err(server_error)?;
    Ok(())
}
