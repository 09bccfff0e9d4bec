//! The `sai` command line: `serve` runs the service, `demo` shows it at work, `worker` runs a
//! command per invocation, and the client commands (`invoke`, `get`, `list`, `watch`, `stop`,
//! `functions`, `config`) talk to a server given by `--server` or `SAI_SERVER`.

mod client;
mod demo;
mod output;
mod runtime;
mod worker;

use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tonic::transport::{Channel, Endpoint};

use crate::api::EdgeLimits;
use crate::engine::EngineConfig;
use crate::error_chain::error_chain;
use crate::persist::{DiskConfig, Durability};
use crate::server::{self, ServerConfig, ServerLimits, TlsFiles, WatchHistoryLimit};
use crate::store::PostgresConfig;
use crate::store::{Storage, DEFAULT_WATCH_HISTORY};
use crate::telemetry::{self, LogFormat};

use client::{ConfigCommand, ListArgs, Target};
use output::Format;
pub use runtime::{cores, machine_memory_bytes};
use worker::WorkerArgs;

/// sai: stateful async invocations over gRPC (Alibaba Cloud Function Compute's task model).
#[derive(Debug, Parser)]
#[command(name = "sai", version, about)]
pub struct Cli {
    /// Server to talk to (client commands and worker).
    #[arg(
        long,
        global = true,
        env = "SAI_SERVER",
        default_value = "http://127.0.0.1:50051"
    )]
    pub server: String,
    /// Account to act as (x-fc-account-id); the server's "default" when absent. With a
    /// token, the token's account is used and this must match it or be left out.
    #[arg(long, global = true, env = "SAI_ACCOUNT")]
    pub account: Option<String>,
    /// CA certificate (PEM) to trust for an https:// server.
    #[arg(long, global = true, env = "SAI_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// Bearer token for a server started with --auth-tokens. Prefer the environment
    /// variable: a command line is visible to other users of the machine.
    #[arg(long, global = true, env = "SAI_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Output: human tables, or JSON for scripts.
    #[arg(long, global = true, value_enum, default_value = "table")]
    pub output: Format,
    /// Log lines on standard error: text, or one JSON object a line (filtered by RUST_LOG).
    #[arg(
        long,
        global = true,
        value_enum,
        env = "SAI_LOG_FORMAT",
        default_value = "text"
    )]
    pub log_format: LogFormat,
    /// Runtime worker threads. When absent: one per core (the cores the machine, or a
    /// container's CPU limit, gives the process); for `sai serve` on a data directory larger
    /// than half the memory, whose gets of finished invocations then wait on the disk, two per
    /// core, and four once it is larger than the memory.
    #[arg(long, global = true, env = "SAI_THREADS")]
    pub threads: Option<std::num::NonZeroUsize>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gRPC service.
    Serve(Box<ServeArgs>),
    /// Run the service and show it at work (invoke, watch live, stop, list, get), then keep
    /// serving for grpcurl.
    Demo {
        /// Address to listen on.
        #[arg(long, env = "SAI_LISTEN", default_value = "127.0.0.1:50051")]
        listen: SocketAddr,
    },
    /// Invoke a function asynchronously; prints the invocation id.
    Invoke {
        /// SERVICE/FUNCTION.
        target: Target,
        /// Invocation id (default: generated).
        #[arg(long)]
        id: Option<String>,
        /// Version or alias (default LATEST).
        #[arg(long)]
        qualifier: Option<String>,
        /// Payload; `-` reads standard input.
        #[arg(long, default_value = "")]
        payload: String,
    },
    /// Show one invocation with its events.
    Get {
        /// SERVICE/FUNCTION.
        target: Target,
        /// Invocation id.
        id: String,
    },
    /// List a function's invocations.
    List(ListArgs),
    /// Print an invocation's events live until it ends. Exit code: 0 Succeeded, 2 Failed,
    /// 3 Stopped, 4 Expired, 5 Invalid, 1 error.
    Watch {
        /// SERVICE/FUNCTION.
        target: Target,
        /// Invocation id.
        id: String,
        /// Resume after this event id.
        #[arg(long, default_value_t = 0)]
        from_event: i64,
    },
    /// Stop an invocation.
    Stop {
        /// SERVICE/FUNCTION.
        target: Target,
        /// Invocation id.
        id: String,
    },
    /// List the functions with stateful async invocation enabled.
    Functions,
    /// Manage async invoke configs.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Run a command for each invocation of the given functions.
    Worker(WorkerArgs),
    /// Run a benchmark scenario against a `sai serve` child process; prints a table, writes JSON.
    Bench(crate::bench::BenchArgs),
    /// The benchmarks' baseline server: a bare tonic service over one DashMap.
    #[command(hide = true)]
    BenchBaseline {
        /// Address to listen on.
        #[arg(long)]
        listen: SocketAddr,
        /// Ready-made invocations to hold.
        #[arg(long, default_value_t = 0)]
        records: usize,
        /// Started time of the first, which their ids carry (one per ms from it).
        #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
        start_ms: i64,
    },
}

/// Print the ready line: scripts and tests started with `--listen 127.0.0.1:0` read the port
/// from it. A closed standard output is not an error of the server's.
pub fn announce_ready(bound: server::Bound) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", bound.ready_line());
    let _ = out.flush();
}

/// Flags of `sai serve`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Once it answers calls, sai serve prints one line on standard output, \
    `sai ready: grpc=ADDR` (and ` http=ADDR` with --http) with the addresses it bound: start \
    it with --listen 127.0.0.1:0 and read the ports from that line."
)]
pub struct ServeArgs {
    /// Address to listen on (port 0: any free port, printed in the ready line).
    #[arg(long, env = "SAI_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,
    /// Serve Prometheus metrics (/metrics) and health (/healthz, /readyz) over HTTP on this
    /// address (off unless given; port 0: any free port, printed in the ready line).
    #[arg(long, env = "SAI_HTTP")]
    pub http: Option<SocketAddr>,
    /// Export a span per RPC over OTLP/gRPC to this OpenTelemetry collector (e.g.
    /// http://127.0.0.1:4317), joined to the caller's W3C traceparent. Batching and limits
    /// follow the OTEL_BSP_* environment variables.
    #[arg(long, env = "SAI_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// Recent status changes kept so that WatchInvocations can resume by sequence number.
    #[arg(long, default_value_t = DEFAULT_WATCH_HISTORY)]
    pub watch_history: usize,
    /// Bytes those changes may hold in memory: each keeps a snapshot of its invocation,
    /// payloads included, so large payloads keep fewer (the count still applies). Not used
    /// with --store, where the database keeps them. Suffixes: KiB, MiB, GiB.
    #[arg(long, default_value = DEFAULT_WATCH_HISTORY_SIZE, value_parser = parse_bytes)]
    pub watch_history_size: u64,
    /// Bytes of finished invocations kept in memory once read or finished (the rest are
    /// read from the data directory). Suffixes: KiB, MiB, GiB.
    #[arg(long, default_value = "64MiB", value_parser = parse_bytes)]
    pub cache_size: u64,
    /// Bytes of the data directory's block cache: the storage engine's index, filter and
    /// data blocks that reads of finished invocations load, kept in sai's own memory.
    /// Larger keeps more of a long history's blocks off the disk, at more CPU per read.
    /// Suffixes: KiB, MiB, GiB; at least 1MiB.
    #[arg(long, default_value = DEFAULT_BLOCK_CACHE_SIZE, value_parser = parse_block_cache_size,
          conflicts_with_all = ["in_memory", "store"])]
    pub block_cache_size: u64,
    /// How long a worker's lease lasts without a heartbeat; a lease that runs out is a failed
    /// attempt. More than 0.
    #[arg(long, default_value = "30s", value_parser = parse_lease_timeout)]
    pub lease_timeout: Duration,
    /// How long a Stopping invocation waits for its worker before it is forced Stopped.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub stop_grace: Duration,
    /// Backoff before the first retry; it doubles per attempt, with jitter.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub retry_backoff_initial: Duration,
    /// Longest backoff between attempts; at least --retry-backoff-initial.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub retry_backoff_max: Duration,
    /// Data directory: every acknowledged change is kept here and loaded back on start.
    #[arg(
        long,
        env = "SAI_DATA_DIR",
        default_value = "./sai-data",
        conflicts_with = "in_memory"
    )]
    pub data_dir: PathBuf,
    /// Keep everything in memory only (lost when sai stops); for tests and demos.
    #[arg(long)]
    pub in_memory: bool,
    /// Keep everything in a PostgreSQL database instead of a data directory
    /// (`postgres://user@host:port/database`): several sai replicas on one database share
    /// its work, and any of them answers any call. sai creates and migrates its tables.
    #[arg(long, env = "SAI_STORE", conflicts_with_all = ["in_memory"])]
    pub store: Option<String>,
    /// `sync`: answer once a change is synced to disk. `buffered`: answer once the OS has it
    /// and sync every 100 ms (survives kill -9, but a power loss may lose the last 100 ms).
    #[arg(long, value_enum, default_value = "sync")]
    pub durability: Durability,
    /// Terminal invocations that ended longer ago than this are purged (FC keeps 7 days).
    #[arg(long, default_value = "7d", value_parser = humantime::parse_duration)]
    pub retention: Duration,
    /// Require bearer tokens: a file of `TOKEN ACCOUNT` lines, read again on SIGHUP. Every
    /// RPC but health and reflection then needs `authorization: Bearer <token>`, and acts
    /// for the token's account.
    #[arg(long, env = "SAI_AUTH_TOKENS")]
    pub auth_tokens: Option<PathBuf>,
    /// Require signed requests on FC's REST API (the --http listener): a file of
    /// `ACCESS_KEY_ID ACCESS_KEY_SECRET ACCOUNT` lines, read again on SIGHUP. Requests signed
    /// with ACS3-HMAC-SHA256 or FC's `FC id:signature` act for the key's account.
    #[arg(long, env = "SAI_ACCESS_KEYS")]
    pub access_keys: Option<PathBuf>,
    /// Serve without tokens on a non-loopback address (anyone who can connect can act for
    /// any account). Without this, sai refuses to.
    #[arg(long)]
    pub allow_unauthenticated: bool,
    /// Unfinished (queued, retrying or running) invocations one function may have; more
    /// invokes are RESOURCE_EXHAUSTED and store nothing.
    #[arg(
        long,
        default_value_t = ServerLimits::default().max_open_per_function,
        value_parser = at_least_one()
    )]
    pub max_open_per_function: usize,
    /// Largest request message in bytes; larger requests are refused unread.
    #[arg(
        long,
        default_value_t = ServerLimits::default().max_request_bytes,
        value_parser = at_least_one()
    )]
    pub max_request_bytes: usize,
    /// Concurrent calls and watch streams on one connection.
    #[arg(
        long,
        default_value_t = ServerLimits::default().max_streams_per_connection,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub max_streams_per_connection: u32,
    /// Open watch streams per account; more are RESOURCE_EXHAUSTED.
    #[arg(
        long,
        default_value_t = EdgeLimits::default().watches_per_account,
        value_parser = at_least_one()
    )]
    pub max_watches_per_account: usize,
    /// Serve TLS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// PollInvocations calls waiting at once per account; more are RESOURCE_EXHAUSTED.
    #[arg(
        long,
        default_value_t = EdgeLimits::default().polls_per_account,
        value_parser = at_least_one()
    )]
    pub max_polls_per_account: usize,
    /// Open InvokeFunctionStream streams per account; more are RESOURCE_EXHAUSTED.
    #[arg(
        long,
        default_value_t = EdgeLimits::default().invoke_streams_per_account,
        value_parser = at_least_one()
    )]
    pub max_invoke_streams_per_account: usize,
    /// Largest invoke payload in bytes (FC's limit is 128 KiB).
    #[arg(long, default_value_t = EdgeLimits::default().max_payload_bytes)]
    pub max_payload_bytes: usize,
    /// Largest return payload a worker may report, in bytes (keep it below
    /// --max-request-bytes).
    #[arg(long, default_value_t = EdgeLimits::default().max_return_payload_bytes)]
    pub max_return_payload_bytes: usize,
    /// How often idle connections are pinged (HTTP/2 keepalive). More than 0.
    #[arg(long, default_value = "30s", value_parser = parse_keepalive_interval)]
    pub keepalive_interval: Duration,
    /// How long a keepalive ping may go unanswered before the connection is closed. More
    /// than 0.
    #[arg(long, default_value = "10s", value_parser = parse_keepalive_timeout)]
    pub keepalive_timeout: Duration,
}

impl ServeArgs {
    /// The rules between flags that each flag's own parser cannot see.
    fn check(&self) -> Result<(), String> {
        if self.retry_backoff_max < self.retry_backoff_initial {
            return Err(format!(
                "--retry-backoff-max ({}) must be at least --retry-backoff-initial ({}): \
                 the first retry would otherwise wait less than asked",
                humantime::format_duration(self.retry_backoff_max),
                humantime::format_duration(self.retry_backoff_initial),
            ));
        }
        for (flag, bytes) in [
            ("--max-payload-bytes", self.max_payload_bytes),
            ("--max-return-payload-bytes", self.max_return_payload_bytes),
        ] {
            if bytes >= self.max_request_bytes {
                return Err(format!(
                    "{flag} ({bytes}) must be less than --max-request-bytes ({}): a message \
                     carrying a payload that large would be refused unread",
                    self.max_request_bytes
                ));
            }
        }
        Ok(())
    }

    /// Where these flags keep the service's state.
    pub fn storage(&self) -> Storage {
        match (&self.store, self.in_memory) {
            (Some(url), _) => Storage::Postgres(PostgresConfig { url: url.clone() }),
            (None, true) => Storage::Memory,
            (None, false) => Storage::Disk(DiskConfig {
                block_cache_bytes: self.block_cache_size,
                ..DiskConfig::new(&self.data_dir, self.durability)
            }),
        }
    }

    /// The server settings these flags describe.
    pub fn server_config(&self) -> ServerConfig {
        ServerConfig {
            watch_history: WatchHistoryLimit {
                changes: self.watch_history,
                bytes: self.watch_history_size,
            },
            cache_bytes: self.cache_size,
            engine: EngineConfig {
                lease_timeout: self.lease_timeout,
                stop_grace: self.stop_grace,
                backoff_initial: self.retry_backoff_initial,
                backoff_max: self.retry_backoff_max,
                ..EngineConfig::default()
            },
            storage: self.storage(),
            retention: self.retention,
            auth_tokens: self.auth_tokens.clone(),
            access_keys: self.access_keys.clone(),
            allow_unauthenticated: self.allow_unauthenticated,
            tls: match (&self.tls_cert, &self.tls_key) {
                (Some(cert), Some(key)) => Some(TlsFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                }),
                _ => None,
            },
            limits: ServerLimits {
                edge: EdgeLimits {
                    watches_per_account: self.max_watches_per_account,
                    polls_per_account: self.max_polls_per_account,
                    invoke_streams_per_account: self.max_invoke_streams_per_account,
                    max_payload_bytes: self.max_payload_bytes,
                    max_return_payload_bytes: self.max_return_payload_bytes,
                },
                max_open_per_function: self.max_open_per_function,
                max_request_bytes: self.max_request_bytes,
                max_streams_per_connection: self.max_streams_per_connection,
                keepalive_interval: self.keepalive_interval,
                keepalive_timeout: self.keepalive_timeout,
            },
            clock: crate::clock::Clock::system(),
            http: self.http,
        }
    }
}

/// A duration of more than 0; `why` says what 0 would do.
pub(crate) fn parse_duration_above_zero(text: &str, why: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text).map_err(|err| err.to_string())?;
    if duration.is_zero() {
        return Err(format!("must be more than 0: {why}"));
    }
    Ok(duration)
}

/// A `--lease-timeout`.
fn parse_lease_timeout(text: &str) -> Result<Duration, String> {
    parse_duration_above_zero(
        text,
        "a lease that has run out when it is granted fails every attempt",
    )
}

/// A `--keepalive-interval`.
fn parse_keepalive_interval(text: &str) -> Result<Duration, String> {
    parse_duration_above_zero(text, "every connection would be pinged without pause")
}

/// A `--keepalive-timeout`.
fn parse_keepalive_timeout(text: &str) -> Result<Duration, String> {
    parse_duration_above_zero(text, "a connection would be closed at its first ping")
}

/// The parser of a count of at least 1: a server limit of 0 would refuse every call it
/// counts, and a benchmark's count of 0 would measure nothing.
pub(crate) fn at_least_one() -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::<usize>::new().range(1..)
}

/// `--block-cache-size` when not given: [`crate::persist::DEFAULT_BLOCK_CACHE_BYTES`].
const DEFAULT_BLOCK_CACHE_SIZE: &str = "256MiB";
/// `--watch-history-size`'s default, `store::DEFAULT_WATCH_HISTORY_BYTES` spelled for clap.
const DEFAULT_WATCH_HISTORY_SIZE: &str = "64MiB";

/// Smallest `--block-cache-size`: below it every read reloads the blocks it just used.
const MIN_BLOCK_CACHE_BYTES: u64 = 1 << 20;

/// A `--block-cache-size`: a size of at least [`MIN_BLOCK_CACHE_BYTES`].
fn parse_block_cache_size(text: &str) -> Result<u64, String> {
    let bytes = parse_bytes(text)?;
    if bytes < MIN_BLOCK_CACHE_BYTES {
        return Err(format!(
            "{text:?} is too small: the block cache needs at least 1MiB"
        ));
    }
    Ok(bytes)
}

/// A size in bytes: a number, optionally followed by KiB, MiB or GiB.
fn parse_bytes(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| {
        format!("{text:?} is not a size: give a number of bytes, or with KiB, MiB or GiB")
    })?;
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        other => return Err(format!("unknown unit {other:?}: use KiB, MiB or GiB")),
    };
    number
        .checked_mul(scale)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// Why a command failed; printed as one line.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The command line was wrong.
    #[error("{0}")]
    Usage(String),
    /// The server could not be reached.
    #[error("cannot connect to {server}: {reason}")]
    Connect {
        /// Server address.
        server: String,
        /// Why.
        reason: String,
    },
    /// The server answered with an error.
    #[error("{}", rpc_error_line(.0))]
    Rpc(#[from] tonic::Status),
    /// Local I/O failed.
    #[error("{0}")]
    Io(String),
    /// Shutting down.
    #[error("shutting down")]
    Closed,
}

/// An error the server answered, as one line: its gRPC code, then its message. sai begins the
/// message with FC's error code, which for most invalid input is the gRPC code's own name:
/// said once, not as `InvalidArgument: InvalidArgument: ...`.
fn rpc_error_line(status: &tonic::Status) -> String {
    let code = format!("{:?}", status.code());
    let message = crate::api::error::without_code(status.message(), &code);
    if message.is_empty() {
        code
    } else {
        format!("{code}: {message}")
    }
}

/// Where and as whom client commands talk.
#[derive(Debug, Clone)]
pub struct Connection {
    server: String,
    account: Option<String>,
    token: Option<String>,
    ca_cert: Option<PathBuf>,
    format: Format,
}

impl Connection {
    /// A channel to the server.
    pub async fn channel(&self) -> Result<Channel, CliError> {
        let connect_error = |reason: String| CliError::Connect {
            server: self.server.clone(),
            reason,
        };
        let mut endpoint = Endpoint::from_shared(self.server.clone())
            .map_err(|err| connect_error(err.to_string()))?;
        if self.server.starts_with("https://") {
            let ca_path = self.ca_cert.as_ref().ok_or_else(|| {
                connect_error("an https:// server needs --ca-cert FILE (or SAI_CA_CERT)".into())
            })?;
            let ca = std::fs::read(ca_path).map_err(|err| {
                connect_error(format!("cannot read {}: {err}", ca_path.display()))
            })?;
            let tls = tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(ca));
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|err| connect_error(err.to_string()))?;
        }
        endpoint
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .connect()
            .await
            .map_err(|err| connect_error(error_chain(&err)))
    }

    /// `message` as a request of this connection's account.
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(account) = self.account.as_deref().and_then(|a| a.parse().ok()) {
            request.metadata_mut().insert("x-fc-account-id", account);
        }
        if let Some(bearer) = self
            .token
            .as_deref()
            .and_then(|t| format!("Bearer {t}").parse().ok())
        {
            request.metadata_mut().insert("authorization", bearer);
        }
        request
    }
}

/// Runtime worker threads, when not the runtime's own default of one per core (see
/// [`runtime`]).
fn worker_threads(cli: &Cli) -> Option<usize> {
    if let Some(threads) = cli.threads {
        return Some(threads.get());
    }
    match &cli.command {
        Command::Serve(args) => match args.storage() {
            Storage::Disk(disk) => runtime::workers_for_data_dir(&disk.dir),
            Storage::Memory | Storage::Postgres(_) => None,
        },
        _ => None,
    }
}

/// Parse the command line and run it; the process exit code follows the result.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Serve(args) = &cli.command {
        if let Err(rule) = args.check() {
            use clap::CommandFactory;
            Cli::command()
                .error(clap::error::ErrorKind::ArgumentConflict, rule)
                .exit();
        }
    }
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Some(threads) = worker_threads(&cli) {
        runtime.worker_threads(threads);
    }
    let runtime = match runtime.build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("sai: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let otlp_endpoint = match &cli.command {
        Command::Serve(args) => args.otlp_endpoint.as_deref(),
        _ => None,
    };
    // The exporter's connection is made on the runtime, so it is set up inside it.
    let telemetry = match runtime.block_on(async { telemetry::init(cli.log_format, otlp_endpoint) })
    {
        Ok(telemetry) => telemetry,
        Err(err) => {
            eprintln!("sai: {err}");
            return ExitCode::FAILURE;
        }
    };
    if matches!(cli.command, Command::Serve(_)) {
        let workers = runtime.metrics().num_workers();
        tracing::info!(workers, "runtime worker threads");
    }
    let code = match runtime.block_on(dispatch(cli)) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("sai: {err}");
            ExitCode::FAILURE
        }
    };
    telemetry.shutdown();
    code
}

async fn dispatch(cli: Cli) -> Result<ExitCode, CliError> {
    let connection = Connection {
        server: cli.server,
        account: cli.account,
        token: cli.token,
        ca_cert: cli.ca_cert,
        format: cli.output,
    };
    let ok = |_| ExitCode::SUCCESS;
    match cli.command {
        Command::Serve(args) => serve(*args).await.map(ok),
        Command::Demo { listen } => demo::run(listen).await.map_err(CliError::Io).map(ok),
        Command::Invoke {
            target,
            id,
            qualifier,
            payload,
        } => {
            let payload = if payload == "-" {
                let mut buffer = String::new();
                std::io::stdin()
                    .read_to_string(&mut buffer)
                    .map_err(|err| {
                        CliError::Io(format!("cannot read the payload from stdin: {err}"))
                    })?;
                buffer
            } else {
                payload
            };
            client::invoke(&connection, target, id, qualifier, payload)
                .await
                .map(ok)
        }
        Command::Get { target, id } => client::get(&connection, target, id).await.map(ok),
        Command::List(args) => client::list(&connection, args).await.map(ok),
        Command::Watch {
            target,
            id,
            from_event,
        } => client::watch(&connection, target, id, from_event).await,
        Command::Stop { target, id } => client::stop(&connection, target, id).await.map(ok),
        Command::Functions => client::functions(&connection).await.map(ok),
        Command::Config(command) => client::config(&connection, command).await.map(ok),
        Command::Worker(args) => worker::run(&connection, args).await.map(ok),
        Command::BenchBaseline {
            listen,
            records,
            start_ms,
        } => crate::bench::baseline::serve(
            listen,
            crate::bench::SEED_SERVICE,
            &crate::bench::seed_function(0),
            records,
            start_ms,
        )
        .await
        .map_err(|err| CliError::Io(err.to_string()))
        .map(ok),
        Command::Bench(args) => crate::bench::run(args)
            .await
            .map_err(|err| CliError::Io(err.to_string()))
            .map(ok),
    }
}

async fn serve(args: ServeArgs) -> Result<(), CliError> {
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|err| CliError::Io(format!("cannot listen on {}: {err}", args.listen)))?;
    server::serve_and_announce(
        listener,
        args.server_config(),
        server::shutdown_signal(),
        announce_ready,
    )
    .await
    .map_err(|err| CliError::Io(err.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `sai serve ARGS` parsed, then checked across flags.
    fn serve(args: &[&str]) -> Result<Result<(), String>, clap::Error> {
        let cli = Cli::try_parse_from([&["sai", "serve"], args].concat())?;
        let Command::Serve(args) = cli.command else {
            panic!("sai serve parses as serve");
        };
        Ok(args.check())
    }

    #[test]
    fn an_error_line_names_the_grpc_code_once_and_keeps_fc_codes_that_differ() {
        let line = |status: tonic::Status| CliError::Rpc(status).to_string();
        assert_eq!(
            line(tonic::Status::invalid_argument(
                "InvalidArgument: invalid limit: must be between 1 and 100"
            )),
            "InvalidArgument: invalid limit: must be between 1 and 100"
        );
        assert_eq!(
            line(tonic::Status::not_found(
                "StatefulAsyncInvocationNotFound: invocation nope of svc/fn does not exist"
            )),
            "NotFound: StatefulAsyncInvocationNotFound: invocation nope of svc/fn does not exist"
        );
        // Only a whole code followed by ": " is the repeated one.
        assert_eq!(
            line(tonic::Status::invalid_argument("InvalidArgumentCount")),
            "InvalidArgument: InvalidArgumentCount"
        );
        assert_eq!(line(tonic::Status::unavailable("")), "Unavailable");
    }

    #[test]
    fn a_lease_timeout_of_zero_and_a_backoff_cap_below_its_start_are_refused() {
        let refused = serve(&["--lease-timeout", "0s"]).expect_err("zero");
        assert!(
            refused.to_string().contains("must be more than 0"),
            "{refused}"
        );
        assert_eq!(serve(&["--lease-timeout", "1ms"]).expect("1ms"), Ok(()));
        let refused = serve(&["--retry-backoff-initial", "2m"])
            .expect("each flag parses")
            .expect_err("above the default cap");
        assert!(
            refused
                .contains("--retry-backoff-max (1m) must be at least --retry-backoff-initial (2m)"),
            "{refused}"
        );
        let raised = ["--retry-backoff-initial", "2m", "--retry-backoff-max", "2m"];
        assert_eq!(serve(&raised).expect("parses"), Ok(()));
    }

    #[test]
    fn limits_of_zero_and_payloads_past_the_request_limit_are_refused() {
        for flag in [
            "--max-open-per-function",
            "--max-request-bytes",
            "--max-streams-per-connection",
            "--max-watches-per-account",
            "--max-polls-per-account",
            "--max-invoke-streams-per-account",
        ] {
            let refused = serve(&[flag, "0"]).expect_err(flag).to_string();
            assert!(refused.contains(flag), "{refused}");
            assert_eq!(
                serve(&[flag, "1"]).map_err(|e| e.to_string()).map(|_| ()),
                Ok(())
            );
        }
        for flag in ["--keepalive-interval", "--keepalive-timeout"] {
            let refused = serve(&[flag, "0s"]).expect_err(flag).to_string();
            assert!(refused.contains("must be more than 0"), "{refused}");
        }
        let refused = serve(&["--max-return-payload-bytes", "2097152"])
            .expect("each flag parses")
            .expect_err("as large as a request");
        assert!(
            refused.contains("--max-return-payload-bytes (2097152) must be less than --max-request-bytes (2097152)"),
            "{refused}"
        );
        let defaults = serve(&[]).expect("parses");
        assert_eq!(defaults, Ok(()));
    }

    #[test]
    fn the_block_cache_flag_defaults_to_the_storage_default_and_has_a_floor() {
        assert_eq!(
            parse_block_cache_size(DEFAULT_BLOCK_CACHE_SIZE),
            Ok(crate::persist::DEFAULT_BLOCK_CACHE_BYTES)
        );
        assert_eq!(parse_block_cache_size("1MiB"), Ok(MIN_BLOCK_CACHE_BYTES));
        let refused = parse_block_cache_size("1023KiB").expect_err("below 1MiB");
        assert!(refused.contains("at least 1MiB"), "{refused}");
    }

    #[test]
    fn the_watch_history_size_defaults_to_the_store_default() {
        assert_eq!(
            parse_bytes(DEFAULT_WATCH_HISTORY_SIZE),
            Ok(crate::store::DEFAULT_WATCH_HISTORY_BYTES)
        );
        let cli = Cli::try_parse_from(["sai", "serve", "--watch-history-size", "2MiB"])
            .expect("the arguments parse");
        let Command::Serve(args) = cli.command else {
            panic!("sai serve parses as serve");
        };
        assert_eq!(
            args.server_config().watch_history,
            WatchHistoryLimit {
                changes: DEFAULT_WATCH_HISTORY,
                bytes: 2 << 20
            }
        );
    }

    #[test]
    fn a_server_on_a_small_data_directory_runs_one_worker_per_core_unless_told() {
        let dir = tempfile::tempdir().expect("temp dir");
        let data_dir = dir.path().to_str().expect("a UTF-8 temp path");
        let threads = |args: &[&str]| {
            let cli = Cli::try_parse_from(args).expect("the arguments parse");
            worker_threads(&cli)
        };
        assert_eq!(threads(&["sai", "serve", "--data-dir", data_dir]), None);
        assert_eq!(threads(&["sai", "serve", "--in-memory"]), None);
        assert_eq!(
            threads(&["sai", "serve", "--store", "postgres://u@h:5432/d"]),
            None
        );
        assert_eq!(threads(&["sai", "demo"]), None);
        assert_eq!(threads(&["sai", "--threads", "3", "serve"]), Some(3));
        assert_eq!(threads(&["sai", "--threads", "1", "demo"]), Some(1));
    }
}
