//! The `sai` command line: `sai serve` runs the service; `sai demo` runs it and shows it at work.

mod demo;

use std::net::SocketAddr;

use clap::{Parser, Subcommand};

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
    let config = ServerConfig {
        watch_history: args.watch_history,
    };
    server::serve(listener, config, server::shutdown_signal())
        .await
        .map_err(|err| err.to_string())
}
