//! A `sai serve` child process for a benchmark: started from this binary on a port the system
//! picks (read back from its ready line) and a fresh (or given) data directory, waited for
//! until it answers, killed when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::pb::stateful_async_invocation_service_client::StatefulAsyncInvocationServiceClient;
use crate::pb::ListStatefulAsyncInvocationFunctionsRequest;

use crate::server::Bound;

use super::report::proc_kib;
use super::BenchError;

/// The PostgreSQL database benchmarked servers run on, if one was given.
static STORE: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Run every benchmarked server on the PostgreSQL database at `url`.
pub fn use_store(url: &str) {
    let _ = STORE.set(url.to_string());
}

/// Drop sai's tables in the database at `url`, so that a server starts on an empty one.
async fn empty_store(url: &str) -> Result<(), BenchError> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .map_err(|err| BenchError::Server(format!("--store {url}: {err}")))?;
    let driver = tokio::spawn(connection);
    client
        .batch_execute(
            "SET client_min_messages = warning;
             DROP TABLE IF EXISTS sai_invocation, sai_change, sai_feed_head, sai_function, sai_meta",
        )
        .await
        .map_err(|err| BenchError::Server(format!("emptying --store {url}: {err}")))?;
    drop(client);
    let _ = driver.await;
    Ok(())
}

/// Storage of a benchmarked server (with `--store`, every mode is that database).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// `--durability sync` (the default of `sai serve`).
    Sync,
    /// `--durability buffered`.
    Buffered,
    /// `--in-memory`.
    Memory,
}

impl Mode {
    /// The name used in reports.
    pub fn name(self) -> &'static str {
        if STORE.get().is_some() {
            return "postgres";
        }
        match self {
            Mode::Sync => "sync",
            Mode::Buffered => "buffered",
            Mode::Memory => "in-memory",
        }
    }
}

/// A running server.
pub struct ServerProcess {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// `http://127.0.0.1:PORT` of its HTTP listener (metrics), when it has one.
    pub http_url: Option<String>,
    /// From spawn to the first answered RPC.
    pub time_to_serving: Duration,
}

impl ServerProcess {
    /// Start `sai serve` in `mode` on `data_dir` and wait until it answers.
    pub async fn start(mode: Mode, data_dir: &Path) -> Result<ServerProcess, BenchError> {
        Self::start_with(mode, data_dir, &[]).await
    }

    /// A replica on the `--store` database (emptied first for the `first` of them), with
    /// `threads` runtime worker threads (0: the server's default).
    pub async fn start_replica(
        mode: Mode,
        data_dir: &Path,
        first: bool,
        threads: usize,
    ) -> Result<ServerProcess, BenchError> {
        Self::start_on(mode, data_dir, &[], first, threads).await
    }

    /// [`ServerProcess::start`] with more flags for `sai serve`.
    pub async fn start_with(
        mode: Mode,
        data_dir: &Path,
        flags: &[&str],
    ) -> Result<ServerProcess, BenchError> {
        Self::start_on(mode, data_dir, flags, true, 0).await
    }

    async fn start_on(
        mode: Mode,
        data_dir: &Path,
        flags: &[&str],
        empty: bool,
        threads: usize,
    ) -> Result<ServerProcess, BenchError> {
        let mut command = sai_command()?;
        command
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(flags);
        if threads > 0 {
            command.args(["--threads", &threads.to_string()]);
        }
        match (STORE.get(), mode) {
            (Some(url), _) => {
                if empty {
                    empty_store(url).await?;
                }
                command.args(["--store", url])
            }
            (None, Mode::Memory) => command.arg("--in-memory"),
            (None, Mode::Sync | Mode::Buffered) => command
                .arg("--data-dir")
                .arg(data_dir)
                .args(["--durability", mode.name()]),
        };
        launch(command).await
    }

    /// Start the baseline server (see [`super::baseline`]) holding `records` ready-made
    /// invocations of the seeded service's first function, with the ids of invocations seeded
    /// from `start_ms`.
    pub async fn start_baseline(
        records: usize,
        start_ms: i64,
    ) -> Result<ServerProcess, BenchError> {
        let mut command = sai_command()?;
        command
            .args(["bench-baseline", "--listen", "127.0.0.1:0"])
            .args(["--records", &records.to_string()])
            .args(["--start-ms", &start_ms.to_string()]);
        launch(command).await
    }

    /// CPU time the server has used so far (user + system), from /proc.
    pub fn cpu_time(&self) -> Duration {
        process_cpu_time(&self.child.id().to_string())
    }

    /// Wait until the server uses under 5% of a core over a second (at most 30 minutes): its
    /// background work (the storage engine's compactions) is done.
    pub async fn wait_until_quiet(&self) {
        let deadline = Instant::now() + Duration::from_secs(1800);
        let mut before = self.cpu_time();
        while Instant::now() < deadline {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let now = self.cpu_time();
            if now.saturating_sub(before) < Duration::from_millis(50) {
                return;
            }
            before = now;
        }
    }

    /// Resident and peak resident memory, bytes (from /proc).
    pub fn memory(&self) -> (u64, u64) {
        let status = format!("/proc/{}/status", self.child.id());
        (proc_kib(&status, "VmRSS"), proc_kib(&status, "VmHWM"))
    }
}

/// `sai` (this binary) with logging quiet.
fn sai_command() -> Result<Command, BenchError> {
    let mut command = Command::new(running_binary()?);
    command
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    Ok(command)
}

/// The binary this process runs. Where the system offers it (Linux), the running image
/// itself rather than the path it was started from: a benchmark can outlast a rebuild
/// (seeding 100 M invocations takes half an hour), and the path then holds another build or
/// none, while every server the benchmark starts must be the build it measures.
fn running_binary() -> Result<PathBuf, BenchError> {
    let image = Path::new("/proc/self/exe");
    if image.exists() {
        return Ok(image.to_path_buf());
    }
    std::env::current_exe()
        .map_err(|e| BenchError::Server(format!("cannot find the sai binary: {e}")))
}

/// Spawn `command`, read the address it bound from its ready line, and wait until it answers.
async fn launch(mut command: Command) -> Result<ServerProcess, BenchError> {
    let started = Instant::now();
    let mut child = command.spawn().map_err(|e| {
        let program = command.get_program().to_string_lossy().into_owned();
        BenchError::Server(format!("cannot start the server ({program}): {e}"))
    })?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| BenchError::Server("the server's stdout is not piped".into()))?;
    let mut server = ServerProcess {
        child,
        url: String::new(),
        http_url: None,
        time_to_serving: Duration::ZERO,
    };
    let bound = tokio::task::spawn_blocking(move || ready_address(stdout))
        .await
        .map_err(|e| BenchError::Server(format!("reading the ready line: {e}")))??;
    server.url = format!("http://{}", bound.grpc);
    server.http_url = bound.http.map(|http| format!("http://{http}"));
    let deadline = started + Duration::from_secs(300);
    loop {
        if let Ok(mut client) =
            StatefulAsyncInvocationServiceClient::connect(server.url.clone()).await
        {
            let answer = client
                .list_stateful_async_invocation_functions(
                    ListStatefulAsyncInvocationFunctionsRequest::default(),
                )
                .await;
            if answer.is_ok() {
                server.time_to_serving = started.elapsed();
                return Ok(server);
            }
        }
        if let Ok(Some(status)) = server.child.try_wait() {
            return Err(BenchError::Server(format!("the server exited: {status}")));
        }
        if Instant::now() > deadline {
            return Err(BenchError::Server(
                "the server did not answer in 300 s".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The addresses in the server's ready line. The rest of its output is drained on a thread
/// of its own, so that the server never blocks on a full pipe.
fn ready_address(stdout: std::process::ChildStdout) -> Result<Bound, BenchError> {
    use std::io::BufRead;
    let mut lines = std::io::BufReader::new(stdout).lines();
    for line in lines.by_ref() {
        let line = line.map_err(|e| BenchError::Server(format!("reading its output: {e}")))?;
        if let Some(bound) = Bound::from_ready_line(&line) {
            std::thread::spawn(move || lines.for_each(drop));
            return Ok(bound);
        }
    }
    Err(BenchError::Server(
        "the server ended before its ready line".into(),
    ))
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fresh temporary data directory, removed when dropped.
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    /// A new empty directory under the system temp dir.
    pub fn new(label: &str) -> Result<ScratchDir, BenchError> {
        let path = std::env::temp_dir().join(format!("sai-bench-{label}-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&path)
            .map_err(|e| BenchError::Io(format!("{}: {e}", path.display())))?;
        Ok(ScratchDir(path))
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// CPU time process `pid` ("self" for this one) has used so far (user + system), from
/// /proc; zero where it cannot be read.
pub fn process_cpu_time(pid: &str) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let after_name = stat.rsplit(')').next().unwrap_or_default();
    let ticks: u64 = after_name
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|t| t.parse::<u64>().ok())
        .sum();
    // Linux reports these in USER_HZ, 100 per second on every mainstream platform.
    Duration::from_millis(ticks * 10)
}
