//! Test harness: a real sai server on 127.0.0.1:0 in this process, and generated clients.
#![allow(dead_code)]

use std::net::SocketAddr;

use sai::clock::ManualClock;
use sai::pb;
use sai::pb::stateful_async_invocation_service_client::StatefulAsyncInvocationServiceClient;
use sai::server::{self, ServerConfig};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

pub mod crash_load;
pub mod postgres;

/// The FC-mirror client.
pub type Client = StatefulAsyncInvocationServiceClient<Channel>;

/// Where every test server's clock starts: a fixed date, so that no test depends on the day
/// it runs. Nothing moves it but [`TestServer::advance`].
pub const TEST_EPOCH_MS: i64 = 1_893_456_000_000; // 2030-01-01T00:00:00Z

/// A running server. With `SAI_TEST_STORE=postgres` in the environment, a server asked for
/// in memory is instead three replicas on a PostgreSQL of its own, sharing one clock, and
/// each new client or worker connects to the next replica in turn: the same test then checks
/// that any replica answers any call.
pub struct TestServer {
    pub addr: SocketAddr,
    /// The server's clock: it stands still until the test advances it.
    pub clock: ManualClock,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<Result<(), server::ServerError>>>,
    /// The other replicas of a cluster.
    replicas: Vec<TestServer>,
    /// Which replica the next connection goes to.
    next: std::sync::atomic::AtomicUsize,
    /// The cluster's database, stopped last.
    database: Option<postgres::PgServer>,
}

/// Whether in-memory test servers run as PostgreSQL clusters.
pub fn on_postgres() -> bool {
    std::env::var("SAI_TEST_STORE").is_ok_and(|store| store == "postgres")
}

impl TestServer {
    /// Start a server with default settings.
    pub async fn start() -> Self {
        Self::start_with(ServerConfig::default()).await
    }

    /// Start a server with `config`, on a manual clock at [`TEST_EPOCH_MS`].
    pub async fn start_with(config: ServerConfig) -> Self {
        Self::start_on(config, &ManualClock::starting_at(TEST_EPOCH_MS)).await
    }

    /// Start a server with `config` on `clock` (a restart keeps its predecessor's clock; a
    /// fixture is opened at its own date).
    pub async fn start_on(mut config: ServerConfig, clock: &ManualClock) -> Self {
        if on_postgres() && config.storage == server::Storage::Memory {
            let database = tokio::task::spawn_blocking(postgres::PgServer::start)
                .await
                .expect("start PostgreSQL");
            config.storage = server::Storage::Postgres(server::PostgresConfig {
                url: database.database("sai").await,
            });
            let mut first = Box::pin(Self::start_on(config.clone(), clock)).await;
            for _ in 0..2 {
                let replica = Box::pin(Self::start_on(config.clone(), clock)).await;
                first.replicas.push(replica);
            }
            first.database = Some(database);
            return first;
        }
        config.clock = clock.clock();
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(server::serve(listener, config, async {
            let _ = rx.await;
        }));
        TestServer {
            addr,
            clock: clock.clone(),
            shutdown: Some(tx),
            handle: Some(handle),
            replicas: Vec::new(),
            next: std::sync::atomic::AtomicUsize::new(0),
            database: None,
        }
    }

    /// Move the server's time forward: leases, backoffs, grace periods, expiry and retention
    /// that come due fire, without the test sleeping.
    pub fn advance(&self, by: std::time::Duration) {
        self.clock.advance(by);
    }

    /// `http://127.0.0.1:PORT` (of the next replica in turn, in a cluster).
    pub fn url(&self) -> String {
        let turn = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            % (self.replicas.len() + 1);
        let addr = match turn {
            0 => self.addr,
            n => self.replicas[n - 1].addr,
        };
        format!("http://{addr}")
    }

    /// A new connection with a generated client.
    pub async fn client(&self) -> Client {
        StatefulAsyncInvocationServiceClient::connect(self.url())
            .await
            .expect("connect to test server")
    }

    /// Ask the server to stop and wait until `serve` returns.
    pub async fn stop(mut self) -> Result<(), server::ServerError> {
        for replica in std::mem::take(&mut self.replicas) {
            Box::pin(replica.stop()).await?;
        }
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match self.handle.take() {
            Some(handle) => handle.await.expect("server task"),
            None => Ok(()),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// `message` sent as `account` (x-fc-account-id).
pub fn as_account<T>(account: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("x-fc-account-id", account.parse().expect("ascii account"));
    request
}

pub const SERVICE: &str = "demo-service";
pub const FUNCTION: &str = "demo-function";

/// Invoke `SERVICE/function` with `id` as `account`; returns the invocation id.
pub async fn invoke(client: &mut Client, account: &str, function: &str, id: &str) -> String {
    client
        .invoke_function(as_account(
            account,
            pb::InvokeFunctionRequest {
                service_name: SERVICE.into(),
                function_name: function.into(),
                qualifier: String::new(),
                invocation_id: id.into(),
                payload: format!("{{\"id\":\"{id}\"}}"),
            },
        ))
        .await
        .expect("invoke")
        .into_inner()
        .invocation_id
}

/// What the example workers are tested on: one retry allowed on `FUNCTION`, then one
/// invocation of it per (id, payload), as the default account.
pub async fn invoke_for_an_example_worker(client: &mut Client, invocations: &[(&str, &str)]) {
    configure(
        client,
        "default",
        FUNCTION,
        pb::AsyncInvokeConfig {
            max_async_retry_attempts: Some(1),
            ..Default::default()
        },
    )
    .await;
    for (id, payload) in invocations {
        client
            .invoke_function(pb::InvokeFunctionRequest {
                service_name: SERVICE.into(),
                function_name: FUNCTION.into(),
                qualifier: String::new(),
                invocation_id: (*id).into(),
                payload: (*payload).into(),
            })
            .await
            .expect("invoke");
    }
}

/// Get `SERVICE/function/id` as `account`.
pub async fn get(
    client: &mut Client,
    account: &str,
    function: &str,
    id: &str,
) -> Result<pb::StatefulAsyncInvocation, tonic::Status> {
    client
        .get_stateful_async_invocation(as_account(
            account,
            pb::GetStatefulAsyncInvocationRequest {
                service_name: SERVICE.into(),
                function_name: function.into(),
                qualifier: String::new(),
                invocation_id: id.into(),
            },
        ))
        .await
        .map(|r| r.into_inner())
}

/// Stop `SERVICE/function/id` as `account`.
pub async fn stop(
    client: &mut Client,
    account: &str,
    function: &str,
    id: &str,
) -> Result<pb::StatefulAsyncInvocation, tonic::Status> {
    client
        .stop_stateful_async_invocation(as_account(
            account,
            pb::StopStatefulAsyncInvocationRequest {
                service_name: SERVICE.into(),
                function_name: function.into(),
                qualifier: String::new(),
                invocation_id: id.into(),
            },
        ))
        .await
        .map(|r| {
            r.into_inner()
                .invocation
                .expect("stop answers the invocation")
        })
}

/// A list request for `SERVICE/function` with everything else default.
pub fn list_request(function: &str) -> pb::ListStatefulAsyncInvocationsRequest {
    pb::ListStatefulAsyncInvocationsRequest {
        service_name: SERVICE.into(),
        function_name: function.into(),
        ..Default::default()
    }
}

/// Every page of `request` as `account`, following next_token.
pub async fn list_all(
    client: &mut Client,
    account: &str,
    mut request: pb::ListStatefulAsyncInvocationsRequest,
) -> Vec<pb::StatefulAsyncInvocation> {
    let mut all = Vec::new();
    for _page in 0..100_000 {
        let page = client
            .list_stateful_async_invocations(as_account(account, request.clone()))
            .await
            .expect("list page")
            .into_inner();
        all.extend(page.invocations);
        if page.next_token.is_empty() {
            return all;
        }
        request.next_token = page.next_token;
    }
    panic!(
        "list did not end after 100,000 pages ({} records)",
        all.len()
    );
}

/// Status of an answer as the enum.
pub fn status_of(invocation: &pb::StatefulAsyncInvocation) -> pb::InvocationStatus {
    pb::InvocationStatus::try_from(invocation.status).expect("known status")
}

/// The worker client.
pub type Worker = sai::pb::worker_service_client::WorkerServiceClient<Channel>;

impl TestServer {
    /// A new connection with a generated worker client.
    pub async fn worker(&self) -> Worker {
        sai::pb::worker_service_client::WorkerServiceClient::connect(self.url())
            .await
            .expect("connect worker")
    }
}

/// Short lifecycle timing so tests do not sleep long.
pub fn fast_engine() -> sai::server::ServerConfig {
    sai::server::ServerConfig {
        engine: sai::server::EngineConfig {
            lease_timeout: std::time::Duration::from_millis(300),
            stop_grace: std::time::Duration::from_millis(300),
            backoff_initial: std::time::Duration::from_millis(10),
            backoff_max: std::time::Duration::from_millis(40),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Poll `function` once as `account`, waiting up to `wait_ms`.
pub async fn poll(
    worker: &mut Worker,
    account: &str,
    function: &str,
    max: i32,
    wait_ms: i32,
) -> Vec<pb::InvocationLease> {
    worker
        .poll_invocations(as_account(
            account,
            pb::PollInvocationsRequest {
                functions: vec![pb::FunctionRef {
                    service_name: SERVICE.into(),
                    function_name: function.into(),
                    qualifier: String::new(),
                }],
                worker_id: "test-worker".into(),
                max_invocations: max,
                wait_time_ms: wait_ms,
            },
        ))
        .await
        .expect("poll")
        .into_inner()
        .leases
}

/// Complete `token` as `account` with `outcome`.
pub async fn complete(
    worker: &mut Worker,
    account: &str,
    token: &str,
    outcome: pb::complete_invocation_request::Outcome,
) -> Result<pb::StatefulAsyncInvocation, tonic::Status> {
    worker
        .complete_invocation(as_account(
            account,
            pb::CompleteInvocationRequest {
                lease_token: token.into(),
                outcome: Some(outcome),
            },
        ))
        .await
        .map(|r| r.into_inner().invocation.expect("invocation"))
}

/// A success outcome.
pub fn success(payload: &str) -> pb::complete_invocation_request::Outcome {
    pb::complete_invocation_request::Outcome::Success(pb::CompleteSuccess {
        return_payload: payload.into(),
    })
}

/// A failure outcome, retried per the config (as a worker that says nothing more reports).
pub fn failure(message: &str) -> pb::complete_invocation_request::Outcome {
    pb::complete_invocation_request::Outcome::Failure(pb::CompleteFailure {
        error_message: message.into(),
        ..Default::default()
    })
}

/// A failure no retry can help: Failed at once.
pub fn permanent_failure(message: &str) -> pb::complete_invocation_request::Outcome {
    pb::complete_invocation_request::Outcome::Failure(pb::CompleteFailure {
        error_message: message.into(),
        permanent: true,
        ..Default::default()
    })
}

/// Put a config for `SERVICE/function`.
pub async fn configure(
    client: &mut Client,
    account: &str,
    function: &str,
    config: pb::AsyncInvokeConfig,
) {
    client
        .put_function_async_invoke_config(as_account(
            account,
            pb::PutFunctionAsyncInvokeConfigRequest {
                service_name: SERVICE.into(),
                function_name: function.into(),
                qualifier: String::new(),
                config: Some(config),
            },
        ))
        .await
        .expect("put config");
}

/// The statuses of an invocation's events, in order, by FC name.
pub fn statuses(invocation: &pb::StatefulAsyncInvocation) -> Vec<&'static str> {
    invocation
        .events
        .iter()
        .map(|e| {
            pb::InvocationStatus::try_from(e.status)
                .expect("known")
                .as_str_name()
                .trim_start_matches("INVOCATION_STATUS_")
        })
        .collect()
}

/// Get `id` once `done` holds for it: checked now and after each of its events, which a
/// `WatchInvocation` stream delivers as they are committed (so nothing here sleeps). Fails if
/// the invocation ends, or 30 s pass, without `done` holding.
pub async fn wait_for(
    client: &mut Client,
    account: &str,
    function: &str,
    id: &str,
    done: impl Fn(&pb::StatefulAsyncInvocation) -> bool,
) -> pb::StatefulAsyncInvocation {
    let mut events = client
        .watch_invocation(as_account(
            account,
            pb::WatchInvocationRequest {
                service_name: SERVICE.into(),
                function_name: function.into(),
                qualifier: String::new(),
                invocation_id: id.into(),
                from_event_id: 0,
            },
        ))
        .await
        .expect("watch")
        .into_inner();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let current = get(client, account, function, id).await.expect("get");
        if done(&current) {
            return current;
        }
        match tokio::time::timeout_at(deadline, events.message()).await {
            Ok(Ok(Some(_))) => {}
            Ok(Ok(None)) => {
                let last = get(client, account, function, id).await.expect("get");
                assert!(done(&last), "it ended as {:?}", statuses(&last));
                return last;
            }
            Ok(Err(status)) => panic!("watch failed: {status}"),
            Err(_) => panic!("gave up waiting; last state {:?}", statuses(&current)),
        }
    }
}

/// Run `check` until it returns `Some`, for what the server does on its own after the test
/// moved its clock (forgetting finished leases, purging old records). Fails after 30 s.
pub async fn eventually<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    mut check: impl FnMut() -> F,
) -> T {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting: {what}"
        );
        tokio::task::yield_now().await;
    }
}

/// `GET path` over HTTP/1.1 from the HTTP listener at `http`, blocking: the status code, the
/// head (lowercased, for matching headers) and the body.
pub fn http_get(http: SocketAddr, path: &str) -> (u16, String, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(http).expect("connect to the HTTP listener");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {http}\r\nConnection: close\r\n\r\n"
    )
    .expect("send the request");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read the answer");
    let (head, body) = answer.split_once("\r\n\r\n").expect("a head and a body");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("a status line");
    (status, head.to_ascii_lowercase(), body.to_string())
}

/// A Python virtual environment under the target dir named `name`, with `pip install ARGS`
/// done once (a marker file records success, so an interrupted install is redone). Returns
/// the venv directory. Blocking: call it from `spawn_blocking`.
pub fn python_venv(name: &str, pip_args: &[&str]) -> std::path::PathBuf {
    use std::process::Command;
    // Tests of one binary run in parallel and may share a venv: one creates it, the others
    // wait and find it ready (two `venv` runs on one directory fail).
    static CREATING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _creating = CREATING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let venv = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let ready = venv.join(".installed");
    if ready.exists() {
        return venv;
    }
    let created = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .expect("python3 runs");
    assert!(created.success(), "python3 -m venv {name} failed");
    let installed = Command::new(venv.join("bin").join("python"))
        .args(["-m", "pip", "install", "--quiet"])
        .args(pip_args)
        .status()
        .expect("pip runs");
    assert!(installed.success(), "pip install {pip_args:?} failed");
    std::fs::write(&ready, b"ok").expect("mark the venv ready");
    venv
}

/// `fast_engine` timing with a data directory at `dir` (synced acks).
pub fn on_disk(dir: &std::path::Path) -> sai::server::ServerConfig {
    sai::server::ServerConfig {
        storage: sai::server::Storage::disk(dir, sai::server::Durability::Sync),
        ..fast_engine()
    }
}

/// A `sai` child process started with `--listen 127.0.0.1:0`, at the address its ready line
/// names; killed when dropped.
pub struct SaiProcess {
    pub child: std::process::Child,
    pub addr: SocketAddr,
    /// The HTTP listener's address, when started with `--http`.
    pub http: Option<SocketAddr>,
}

impl SaiProcess {
    /// Spawn `command` (a `sai serve ...` with `--listen 127.0.0.1:0`) and wait for its ready
    /// line. Its standard output is drained on a thread for as long as it runs.
    pub fn start(command: &mut std::process::Command) -> Self {
        use std::io::BufRead;
        let mut child = command
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start sai");
        let stdout = child.stdout.take().expect("piped stdout");
        let (ready_tx, ready) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = std::io::BufReader::new(stdout).lines();
            for line in lines.by_ref().map_while(Result::ok) {
                if let Some(bound) = sai::server::Bound::from_ready_line(&line) {
                    let _ = ready_tx.send(bound);
                    break;
                }
            }
            lines.for_each(drop);
        });
        // Generous: the only wait is for the data directory to load on a busy machine.
        let bound = match ready.recv_timeout(std::time::Duration::from_secs(120)) {
            Ok(bound) => bound,
            Err(err) => {
                let _ = child.kill();
                let status = child.wait();
                panic!("sai printed no ready line ({err}); it ended with {status:?}");
            }
        };
        SaiProcess {
            child,
            addr: bound.grpc,
            http: bound.http,
        }
    }

    /// `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Kill it (`kill -9`) and reap it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for SaiProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Make sure `binary` exists, installing Debian's `packages` with apt-get (through sudo when
/// not root) when it does not. Tests that need an outside program install it this way rather
/// than skip.
pub fn apt_install(binary: &str, packages: &[&str]) {
    use std::process::Command;
    static INSTALLING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _installing = INSTALLING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if std::path::Path::new(binary).exists() {
        return;
    }
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.stdout.starts_with(b"0\n"));
    let apt = |args: &[&str]| {
        let mut command = if root {
            Command::new("apt-get")
        } else {
            let mut sudo = Command::new("sudo");
            sudo.arg("apt-get");
            sudo
        };
        command
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|status| status.success())
    };
    let mut install = vec!["install", "-y", "-q"];
    install.extend_from_slice(packages);
    if !apt(&install) {
        assert!(apt(&["update", "-q"]), "apt-get update failed");
        assert!(apt(&install), "apt-get install {packages:?} failed");
    }
    assert!(
        std::path::Path::new(binary).exists(),
        "no {binary} after installing {packages:?}"
    );
}

/// `npm ci` of the package files in `source` (a directory of the repository, relative to its
/// root) into `CARGO_TARGET_TMPDIR/name`, once per target directory (a marker records
/// success, so an interrupted install is redone); its node_modules. Blocking.
pub fn npm_ci(source: &str, name: &str) -> std::path::PathBuf {
    use std::process::Command;
    static INSTALLING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _installing = INSTALLING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(source);
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let ready = dir.join(".installed");
    if !ready.exists() {
        std::fs::create_dir_all(&dir).expect("install dir");
        for file in ["package.json", "package-lock.json"] {
            std::fs::copy(source.join(file), dir.join(file)).expect("copy the package files");
        }
        let installed = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(&dir)
            // No package here downloads a browser; this says so to any install script.
            .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
            .status()
            .expect("npm runs (Node.js and npm are needed)");
        assert!(installed.success(), "npm ci of {} failed", source.display());
        std::fs::write(&ready, b"ok").expect("mark node_modules ready");
    }
    dir.join("node_modules")
}
