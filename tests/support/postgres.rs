//! A real PostgreSQL server for tests: a new cluster in a temporary directory, started from
//! the installed binaries on a free loopback port, stopped when dropped. Debian's `postgresql`
//! is installed when it is missing; a test that needs PostgreSQL never skips. As root, the
//! cluster runs as the `postgres` user (initdb refuses root).

use std::path::{Path, PathBuf};
use std::process::Command;

/// A running PostgreSQL cluster.
pub struct PgServer {
    dir: tempfile::TempDir,
    bin: PathBuf,
    /// Its port on 127.0.0.1.
    pub port: u16,
    as_postgres: bool,
}

fn binaries() -> PathBuf {
    let newest = || {
        let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|entry| entry.ok().map(|e| e.path().join("bin")))
            .filter(|bin| bin.join("initdb").exists())
            .collect();
        versions.sort();
        versions.pop()
    };
    if let Some(bin) = newest() {
        return bin;
    }
    super::apt_install("/usr/bin/pg_config", &["postgresql", "postgresql-common"]);
    newest().expect("PostgreSQL's binaries under /usr/lib/postgresql after installing it")
}

/// A free loopback port below the kernel's ephemeral range. A cluster stopped and started
/// again must find its port still free, and a port in that range is the local port of
/// whichever outgoing connection the kernel gives it to next (replicas reconnecting to a
/// stopped server open them by the hundred).
fn free_port() -> u16 {
    let ephemeral_from = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    let lowest = 10_000.min(ephemeral_from / 2);
    (0..10_000)
        .map(|_| rand::random_range(lowest..ephemeral_from))
        .find(|port| std::net::TcpListener::bind(("127.0.0.1", *port)).is_ok())
        .expect("a free loopback port below the ephemeral range")
}

impl PgServer {
    /// Create and start a cluster (blocking: call it before the runtime is busy, or in
    /// `spawn_blocking`).
    pub fn start() -> Self {
        let bin = binaries();
        let as_postgres = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|out| out.stdout.starts_with(b"0\n"));
        let dir = tempfile::Builder::new()
            .prefix("sai-pg-")
            .tempdir()
            .expect("temp dir");
        if as_postgres {
            run(Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path()))
            .expect("hand the cluster's directory to postgres");
        }
        let server = PgServer {
            dir,
            bin,
            port: free_port(),
            as_postgres,
        };
        let data = server.data();
        server.run_tool(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                "postgres",
                "--auth=trust",
                "--no-locale",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        server.start_again();
        server
    }

    /// A standby of `primary`: a base backup of it taken now, started streaming from it
    /// (blocking, as [`PgServer::start`]).
    pub fn standby_of(primary: &PgServer) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("sai-pg-standby-")
            .tempdir()
            .expect("temp dir");
        if primary.as_postgres {
            run(Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path()))
            .expect("hand the cluster's directory to postgres");
        }
        let standby = PgServer {
            dir,
            bin: primary.bin.clone(),
            port: free_port(),
            as_postgres: primary.as_postgres,
        };
        let data = standby.data();
        let port = primary.port.to_string();
        // -R writes standby.signal and the primary's address into the copy.
        standby.run_tool(
            "pg_basebackup",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "-D",
                &data,
                "-R",
                "-X",
                "stream",
                "--checkpoint=fast",
                "--no-sync",
            ],
        );
        standby.start_again();
        standby
    }

    /// Make every commit wait until a standby has it on disk (synchronous replication), and
    /// wait until a standby is streaming synchronously.
    pub async fn require_synchronous_standby(&self) {
        let (client, connection) =
            tokio_postgres::connect(&self.url("postgres"), tokio_postgres::NoTls)
                .await
                .expect("connect to the test PostgreSQL");
        tokio::spawn(connection);
        for statement in [
            "ALTER SYSTEM SET synchronous_standby_names = '*'",
            "SELECT pg_reload_conf()",
        ] {
            client
                .batch_execute(statement)
                .await
                .expect("require a synchronous standby");
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let synchronous: i64 = client
                .query_one(
                    "SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'",
                    &[],
                )
                .await
                .expect("read pg_stat_replication")
                .get(0);
            if synchronous > 0 {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no synchronous standby after 30 s"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Promote a standby to primary and wait until it takes writes.
    pub fn promote(&self) {
        let data = self.data();
        self.run_tool("pg_ctl", &["-D", &data, "-w", "promote"]);
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn run_tool(&self, tool: &str, args: &[&str]) {
        if let Err(failure) = self.try_tool(tool, args) {
            panic!("{failure}");
        }
    }

    fn try_tool(&self, tool: &str, args: &[&str]) -> Result<(), String> {
        run(self.tool(tool).args(args))
    }

    /// A command running PostgreSQL's `tool`, as the `postgres` user when the tests run as
    /// root.
    fn tool(&self, tool: &str) -> Command {
        let path = self.bin.join(tool);
        if self.as_postgres {
            let mut runuser = Command::new("runuser");
            runuser.args(["-u", "postgres", "--"]).arg(&path);
            runuser
        } else {
            Command::new(&path)
        }
    }

    /// Start the cluster (again, after [`PgServer::stop`]) and wait until it takes
    /// connections; a failure shows the server's log.
    pub fn start_again(&self) {
        let data = self.data();
        let log = self.dir.path().join("postgres.log").display().to_string();
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=300 \
             -c shared_buffers=128MB -c fsync=on",
            self.port,
            self.dir.path().display()
        );
        if let Err(failure) = self.try_tool(
            "pg_ctl",
            &["-D", &data, "-l", &log, "-w", "-o", &options, "start"],
        ) {
            panic!("{failure}\nserver log:\n{}", self.log());
        }
    }

    /// Stop the cluster at once, as a crash would (no checkpoint).
    pub fn stop(&self) {
        let data = self.data();
        self.run_tool("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"]);
    }

    /// The address of `database` for sai's `--store`.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Create a database and return its address.
    pub async fn database(&self, name: &str) -> String {
        let (client, connection) =
            tokio_postgres::connect(&self.url("postgres"), tokio_postgres::NoTls)
                .await
                .expect("connect to the test PostgreSQL");
        tokio::spawn(connection);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create a database");
        self.url(name)
    }

    /// The server log, for a failing test's message.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }

    /// Where the cluster lives.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let data = self.data();
        // Not `run_tool`: a drop while a failed test unwinds must not panic.
        let _ = self
            .tool("pg_ctl")
            .args(["-D", &data, "-m", "immediate", "stop"])
            .output();
    }
}

fn run(command: &mut Command) -> Result<(), String> {
    let out = command.output().expect("run a PostgreSQL tool");
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}
