//! Assembles the running service: store, engine, the gRPC services, health and reflection,
//! and a graceful shutdown that ends open watch streams before the server returns.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;

use crate::api::key_file::KeyFileError;
use crate::api::{AuthLayer, InvocationService, RequestContextLayer, Tokens, WorkerService};
use crate::clock::Clock;
use crate::engine::Engine;
use crate::http::fc::access_keys::{self, AccessKeys};
use crate::http::HttpState;
/// How the process's allocator is read for the heap gauges of `/metrics`.
pub use crate::metrics::{read_heap_with, HeapStats};
use crate::pb;
use crate::pb::stateful_async_invocation_service_server::StatefulAsyncInvocationServiceServer;
use crate::pb::worker_service_server::WorkerServiceServer;
use crate::persist::LoadSummary;
use crate::store::{Postgres, Store, StoreError, DEFAULT_CACHE_BYTES, SCHEMA_VERSION};

// The parts of a `ServerConfig`, so that an embedder can fill one in.
pub use crate::api::EdgeLimits;
pub use crate::engine::EngineConfig;
pub use crate::persist::{DiskConfig, Durability};
pub use crate::store::WatchHistoryLimit;
pub use crate::store::{PostgresConfig, Storage};

/// How long terminal invocations are kept by default: FC's query window.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// Settings of a server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Recent changes kept so that function-level watchers can resume by sequence (in memory;
    /// on PostgreSQL only the count applies, and the database keeps them).
    pub watch_history: WatchHistoryLimit,
    /// Bytes of finished records kept in memory once read or finished (with a data
    /// directory; without one, every record is in memory until retention purges it).
    pub cache_bytes: u64,
    /// Lifecycle timing: leases, retries, stop grace.
    pub engine: EngineConfig,
    /// Memory only, or a data directory.
    pub storage: Storage,
    /// Terminal invocations that ended longer ago than this are purged.
    pub retention: Duration,
    /// A token file: with it, calls need a bearer token (see `api::auth`).
    pub auth_tokens: Option<PathBuf>,
    /// An access key file: with it, FC's REST API needs signed requests (see `http::fc`).
    pub access_keys: Option<PathBuf>,
    /// Serve a non-loopback address without tokens.
    pub allow_unauthenticated: bool,
    /// Limits that protect the service.
    pub limits: ServerLimits,
    /// Serve TLS with this certificate chain and key (PEM files); plaintext when `None`.
    pub tls: Option<TlsFiles>,
    /// Where every time is read: the system clock, or a test's manual one.
    pub clock: Clock,
    /// Serve metrics and health over HTTP on this address (port 0: any free one).
    pub http: Option<SocketAddr>,
}

/// PEM files of a TLS identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain.
    pub cert: PathBuf,
    /// Private key.
    pub key: PathBuf,
}

/// Limits that protect the service; defaults in [`ServerLimits::default`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerLimits {
    /// Per-account limits on watch streams and polls.
    pub edge: EdgeLimits,
    /// Unfinished invocations one function may have; more are RESOURCE_EXHAUSTED.
    pub max_open_per_function: usize,
    /// Largest request message, bytes (decoded); larger is refused before it is read whole.
    pub max_request_bytes: usize,
    /// Concurrent HTTP/2 streams (calls, watches) per connection.
    pub max_streams_per_connection: u32,
    /// How often an idle connection is pinged.
    pub keepalive_interval: Duration,
    /// How long a ping may go unanswered before the connection is closed.
    pub keepalive_timeout: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            edge: EdgeLimits::default(),
            max_open_per_function: 1_000_000,
            // A 1 MiB return payload with room for the rest of the message.
            max_request_bytes: 2 * 1024 * 1024,
            max_streams_per_connection: 1_024,
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(10),
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            watch_history: WatchHistoryLimit::default(),
            cache_bytes: DEFAULT_CACHE_BYTES,
            engine: EngineConfig::default(),
            storage: Storage::Memory,
            retention: DEFAULT_RETENTION,
            auth_tokens: None,
            access_keys: None,
            allow_unauthenticated: false,
            limits: ServerLimits::default(),
            tls: None,
            clock: Clock::system(),
            http: None,
        }
    }
}

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Reflection could not load the descriptor set.
    #[error("server reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The transport failed.
    #[error("gRPC transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The data directory could not be opened, loaded or closed.
    #[error("{0}")]
    Storage(#[from] StoreError),
    /// The token or access key file could not be used.
    #[error("{0}")]
    KeyFile(#[from] KeyFileError),
    /// The TLS certificate or key could not be read.
    #[error("cannot read TLS {what} {path}: {source}")]
    TlsFile {
        /// "certificate" or "key".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Loading the data directory did not finish (its task panicked).
    #[error("loading the data directory: {0}")]
    Load(tokio::task::JoinError),
    /// The HTTP listener could not be bound.
    #[error("cannot listen for HTTP on {addr}: {source}")]
    HttpListener {
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The listener's address could not be read.
    #[error("cannot read the listening address: {source}")]
    Listener {
        /// Why.
        source: std::io::Error,
    },
    /// No tokens, and an address others can reach.
    #[error(
        "refusing to serve {0} without authentication: anyone who can connect could act for any \
         account. Give --auth-tokens FILE (and, for the --http listener, --access-keys FILE \
         too), listen on a loopback address, or pass --allow-unauthenticated if the network \
         is otherwise protected"
    )]
    Unprotected(std::net::SocketAddr),
}

/// Serve on an already-bound `listener` until `shutdown` resolves, then end open watch
/// streams, finish in-flight calls, and return.
pub async fn serve(
    listener: TcpListener,
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServerError> {
    serve_and_announce(listener, config, shutdown, |_| {}).await
}

/// Where a started server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bound {
    /// The gRPC listener.
    pub grpc: SocketAddr,
    /// The HTTP listener (metrics, health), if one was asked for.
    pub http: Option<SocketAddr>,
}

impl Bound {
    /// What `sai serve` prints on standard output once it answers calls, e.g.
    /// `sai ready: grpc=127.0.0.1:50051 http=127.0.0.1:8080` (no `http=` without one).
    pub fn ready_line(&self) -> String {
        match self.http {
            Some(http) => format!("{READY_PREFIX} grpc={} http={http}", self.grpc),
            None => format!("{READY_PREFIX} grpc={}", self.grpc),
        }
    }

    /// The addresses a ready line names; `None` for any other line.
    pub fn from_ready_line(line: &str) -> Option<Bound> {
        let mut grpc = None;
        let mut http = None;
        for field in line.strip_prefix(READY_PREFIX)?.split_whitespace() {
            match field.split_once('=')? {
                ("grpc", addr) => grpc = Some(addr.parse().ok()?),
                ("http", addr) => http = Some(addr.parse().ok()?),
                _ => {}
            }
        }
        Some(Bound { grpc: grpc?, http })
    }
}

/// How the ready line starts.
pub const READY_PREFIX: &str = "sai ready:";

/// [`serve`], calling `ready` with the bound addresses once the store is loaded and calls are
/// about to be answered.
pub async fn serve_and_announce(
    listener: TcpListener,
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send,
    ready: impl FnOnce(Bound),
) -> Result<(), ServerError> {
    // Read the TLS files before anything else, so that a bad path fails fast.
    let identity = match &config.tls {
        Some(tls) => {
            let read = |what, path: &PathBuf| {
                std::fs::read(path).map_err(|source| ServerError::TlsFile {
                    what,
                    path: path.clone(),
                    source,
                })
            };
            Some(tonic::transport::Identity::from_pem(
                read("certificate", &tls.cert)?,
                read("key", &tls.key)?,
            ))
        }
        None => None,
    };
    let tokens = match &config.auth_tokens {
        Some(path) => Some(Tokens::load(path)?),
        None => None,
    };
    let local_addr = listener
        .local_addr()
        .map_err(|source| ServerError::Listener { source })?;
    let access_keys = match &config.access_keys {
        Some(path) => Some(access_keys::load(path)?),
        None => None,
    };
    let refuse_unprotected = |addr: SocketAddr, protected: bool| {
        if !protected && !config.allow_unauthenticated && !addr.ip().is_loopback() {
            return Err(ServerError::Unprotected(addr));
        }
        Ok(())
    };
    refuse_unprotected(local_addr, tokens.is_some())?;
    let http_listener = match config.http {
        Some(addr) => {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| ServerError::HttpListener { addr, source })?;
            let bound = listener
                .local_addr()
                .map_err(|source| ServerError::Listener { source })?;
            // The dashboard's API takes tokens, FC's REST API access keys: both are needed.
            refuse_unprotected(bound, tokens.is_some() && access_keys.is_some())?;
            Some((listener, bound))
        }
        None => None,
    };
    let stopping = CancellationToken::new();
    if tokens.is_some() || access_keys.is_some() {
        tokio::spawn(reload_on_hangup(
            tokens.clone(),
            access_keys.clone(),
            stopping.clone(),
        ));
    }
    // Up before the store loads: an orchestrator sees the process alive and not yet ready.
    let http_state = Arc::new(HttpState::new(
        tokens.clone(),
        access_keys,
        config.clock.clone(),
    ));
    let http_bound = http_listener.as_ref().map(|(_, bound)| *bound);
    let http_server = http_listener.map(|(listener, _)| {
        // Installed before any call is served, so that the counters miss none of them;
        // without an HTTP listener nothing is recorded (the facade's calls do nothing).
        crate::metrics::recorder();
        let app = crate::http::router(http_state.clone());
        let stop = stopping.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
        })
    });
    let (engine, store, loaded) = match &config.storage {
        Storage::Postgres(database) => {
            let backend = Postgres::connect(
                database,
                Engine::schedule(&config.engine),
                config.clock.clone(),
                config.watch_history.changes,
                stopping.clone(),
            )
            .await?;
            tracing::info!(schema = SCHEMA_VERSION, "PostgreSQL store ready");
            let engine = Engine::start_on(
                backend,
                config.engine.clone(),
                config.clock.clone(),
                stopping.clone(),
            );
            (engine, None, LoadSummary::default())
        }
        Storage::Memory | Storage::Disk(_) => {
            let opened = {
                let (storage, history, cache, stopping) = (
                    config.storage.clone(),
                    config.watch_history,
                    config.cache_bytes,
                    stopping.clone(),
                );
                tokio::task::spawn_blocking(move || Store::open(&storage, history, cache, stopping))
                    .await
                    .map_err(ServerError::Load)?
            };
            let (store, loaded) = opened?;
            store.limit_open_per_function(config.limits.max_open_per_function);
            let engine = Engine::start(
                store.clone(),
                config.engine.clone(),
                config.clock.clone(),
                stopping.clone(),
            );
            (engine, Some(store), loaded)
        }
    };
    let invocation_service = InvocationService::new(engine.clone(), &config.limits.edge);
    http_state.loaded(engine.clone(), invocation_service.clone());
    if let Storage::Disk(disk) = &config.storage {
        let recovered = engine.recover().await;
        tracing::info!(
            dir = %disk.dir.display(),
            durability = ?disk.durability,
            invocations = loaded.invocations,
            configs = loaded.configs,
            queued = recovered.queued,
            retrying = recovered.retrying,
            stopping = recovered.stopping,
            interrupted = recovered.interrupted,
            "data directory loaded"
        );
    }
    tokio::spawn(engine.clone().purge_expired(config.retention));

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<StatefulAsyncInvocationServiceServer<InvocationService>>()
        .await;
    health_reporter
        .set_serving::<WorkerServiceServer<WorkerService>>()
        .await;
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        // google.rpc.BadRequest, which refusals of bad input carry in their details, so that
        // a reflection client (grpcurl) can print it.
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;

    // Without TCP_NODELAY, small answers wait on delayed ACKs (~40 ms a call).
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    tracing::info!(grpc = %local_addr, http = ?http_bound, "sai serving");
    ready(Bound {
        grpc: local_addr,
        http: http_bound,
    });
    let on_shutdown = {
        let stopping = stopping.clone();
        async move {
            shutdown.await;
            tracing::info!("shutting down: ending watch streams, finishing calls");
            health_reporter
                .set_not_serving::<StatefulAsyncInvocationServiceServer<InvocationService>>()
                .await;
            // Watch streams never end on their own; cancelling lets the graceful drain finish.
            stopping.cancel();
        }
    };
    let limits = config.limits.clone();
    let mut builder = tonic::transport::Server::builder();
    if let Some(identity) = identity {
        builder =
            builder.tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))?;
    }
    let result = builder
        .max_concurrent_streams(Some(limits.max_streams_per_connection))
        // Dead peers (a worker whose host vanished) are found and their streams reaped.
        .http2_keepalive_interval(Some(limits.keepalive_interval))
        .http2_keepalive_timeout(Some(limits.keepalive_timeout))
        .layer(RequestContextLayer)
        .layer(AuthLayer::new(tokens))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(
            StatefulAsyncInvocationServiceServer::new(invocation_service)
                .max_decoding_message_size(limits.max_request_bytes),
        )
        .add_service(
            WorkerServiceServer::new(WorkerService::new(engine, &limits.edge))
                .max_decoding_message_size(limits.max_request_bytes),
        )
        .serve_with_incoming_shutdown(incoming, on_shutdown)
        .await;
    stopping.cancel();
    if let Some(http_server) = http_server {
        match http_server.await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::warn!(%err, "the HTTP listener failed"),
            Err(err) => tracing::error!(%err, "the HTTP listener's task panicked"),
        }
    }
    // Every acknowledged change is already durable; this syncs the rest and releases the lock.
    if let Some(store) = store {
        store.close().await?;
    }
    tracing::info!("sai stopped");
    Ok(result?)
}

/// Read the token and access key files again on every SIGHUP; a file that does not parse
/// changes nothing.
async fn reload_on_hangup(
    tokens: Option<Arc<Tokens>>,
    access_keys: Option<Arc<AccessKeys>>,
    stop: CancellationToken,
) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(hangups) => hangups,
            Err(err) => {
                tracing::error!(%err, "cannot listen for SIGHUP; tokens will not be reloaded");
                return;
            }
        };
        loop {
            tokio::select! {
                _ = hangups.recv() => {
                    if let Some(tokens) = &tokens {
                        match tokens.reload() {
                            Ok(count) => tracing::info!(count, file = %tokens.path().display(), "tokens reloaded"),
                            Err(err) => tracing::error!(%err, "tokens not reloaded; the previous ones stay in force"),
                        }
                    }
                    if let Some(keys) = &access_keys {
                        match keys.reload() {
                            Ok(count) => tracing::info!(count, file = %keys.path().display(), "access keys reloaded"),
                            Err(err) => tracing::error!(%err, "access keys not reloaded; the previous ones stay in force"),
                        }
                    }
                }
                _ = stop.cancelled() => return,
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (tokens, access_keys, stop);
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(%err, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::error!(%err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
}
