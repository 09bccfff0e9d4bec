//! The `sai` command line: `sai serve` runs the service; `sai demo` runs it and shows it at work.

mod demo;

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::engine::EngineConfig;
use crate::server::{self, ServerConfig};
use crate::store::DEFAULT_WATCH_HISTORY;

/// sai: stateful async invocations over gRPC (Alibaba Cloud Function Compute's task model).
#[derive(Debug, Parser)]
#[command(name = "sai", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gRPC service.
    Serve(ServeArgs),
    /// Run the service and show it at work (invoke, watch live, stop, list, get), then keep
    /// serving for grpcurl.
    Demo {
        /// Address to listen on.
        #[arg(long, env = "SAI_LISTEN", default_value = "127.0.0.1:50051")]
        listen: SocketAddr,
    },
}

/// Flags of `sai serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "SAI_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,
    /// Recent status changes kept so that WatchInvocations can resume by sequence number.
    #[arg(long, default_value_t = DEFAULT_WATCH_HISTORY)]
    pub watch_history: usize,
    /// How long a worker's lease lasts without a heartbeat; a lease that runs out is a failed
    /// attempt.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub lease_timeout: Duration,
    /// How long a Stopping invocation waits for its worker before it is forced Stopped.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub stop_grace: Duration,
    /// Backoff before the first retry; it doubles per attempt, with jitter.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub retry_backoff_initial: Duration,
    /// Longest backoff between attempts.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub retry_backoff_max: Duration,
}

impl ServeArgs {
    /// The server settings these flags describe.
    pub fn server_config(&self) -> ServerConfig {
        ServerConfig {
            watch_history: self.watch_history,
            engine: EngineConfig {
                lease_timeout: self.lease_timeout,
                stop_grace: self.stop_grace,
                backoff_initial: self.retry_backoff_initial,
                backoff_max: self.retry_backoff_max,
                ..EngineConfig::default()
            },
        }
    }
}

/// Parse the command line and run it; the process exit code follows the result.
pub fn run() -> std::process::ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("sai: cannot start the async runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve(args).await,
            Command::Demo { listen } => demo::run(listen).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("sai: {message}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn serve(args: ServeArgs) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|err| format!("cannot listen on {}: {err}", args.listen))?;
    server::serve(listener, args.server_config(), server::shutdown_signal())
        .await
        .map_err(|err| err.to_string())
}
