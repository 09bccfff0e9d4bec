//! Alibaba Cloud's official Function Compute SDKs against sai's REST API, unchanged but for
//! the endpoint, installed by this test from PyPI and npm (pinned in `examples/fc/`): each runs a
//! story through every task operation it has, signed with an access key, and checks its own
//! typed results; a sai worker runs the invocations over gRPC. Then gRPC sees what REST made,
//! and nothing a refused request carried (a wrong secret, a skewed date) was stored.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use sai::pb;
use support::SaiProcess;

const ACCESS_KEY_ID: &str = "LTAI5tSaiTestKey";
const ACCESS_KEY_SECRET: &str = "sai-test-secret-0123456789";
const ACCOUNT: &str = "fc-team";

fn stories() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fc")
}

/// The examples for FC users, whose package files pin the SDKs the stories use too.
fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/fc")
}

/// The Python SDKs, in a venv made once per target directory.
fn python() -> PathBuf {
    let requirements = examples().join("requirements.txt");
    let requirements = requirements.to_str().expect("utf-8 path");
    support::python_venv("fc-sdk-venv", &["-r", requirements])
        .join("bin")
        .join("python")
}

/// The Node SDKs, pinned by the examples' lockfile.
fn node_modules() -> PathBuf {
    support::npm_ci("examples/fc", "fc-sdk-node")
}

struct Server {
    process: SaiProcess,
    _keys: tempfile::TempDir,
}

impl Server {
    fn start() -> Server {
        let keys = tempfile::tempdir().expect("temp dir");
        let file = keys.path().join("access-keys");
        std::fs::write(
            &file,
            format!("# FC SDK tests\n{ACCESS_KEY_ID} {ACCESS_KEY_SECRET} {ACCOUNT}\n"),
        )
        .expect("write access keys");
        let process = SaiProcess::start(
            Command::new(env!("CARGO_BIN_EXE_sai"))
                .args(["serve", "--in-memory", "--listen", "127.0.0.1:0"])
                .args(["--http", "127.0.0.1:0", "--access-keys"])
                .arg(&file)
                .env("RUST_LOG", "warn")
                .stderr(Stdio::inherit()),
        );
        Server {
            process,
            _keys: keys,
        }
    }

    /// Run `program story` with the endpoint, key and server in its environment.
    fn run(&self, mut command: Command) -> Output {
        let http = self.process.http.expect("an HTTP listener");
        command
            .env("SAI_FC_ENDPOINT", http.to_string())
            .env("SAI_AK", ACCESS_KEY_ID)
            .env("SAI_SK", ACCESS_KEY_SECRET)
            .env("SAI_ACCOUNT", ACCOUNT)
            .env("SAI_BIN", env!("CARGO_BIN_EXE_sai"))
            .env("SAI_SERVER", self.process.url())
            .output()
            .expect("the story runs")
    }

    async fn client(
        &self,
    ) -> pb::stateful_async_invocation_service_client::StatefulAsyncInvocationServiceClient<
        tonic::transport::Channel,
    > {
        pb::stateful_async_invocation_service_client::StatefulAsyncInvocationServiceClient::connect(
            self.process.url(),
        )
        .await
        .expect("connect over gRPC")
    }
}

/// Run an example of `examples/fc/` (`program script`) against `server` while a sai worker
/// runs its task over gRPC; what it printed.
fn run_example(server: &Server, mut example: Command, target: &str, task_id: &str) -> String {
    let http = server.process.http.expect("an HTTP listener");
    let mut worker = Command::new(env!("CARGO_BIN_EXE_sai"))
        .args([
            "--server",
            &server.process.url(),
            "--account",
            ACCOUNT,
            "worker",
        ])
        .args([
            "--function",
            target,
            "--exec",
            "tr a-z A-Z",
            "--max-invocations",
            "1",
        ])
        .spawn()
        .expect("start a worker");
    let out = example
        .args([target, "hello", task_id])
        .env("ALIBABA_CLOUD_ACCESS_KEY_ID", ACCESS_KEY_ID)
        .env("ALIBABA_CLOUD_ACCESS_KEY_SECRET", ACCESS_KEY_SECRET)
        .env("FC_ENDPOINT", http.to_string())
        .env("FC_PROTOCOL", "http")
        .output()
        .expect("the example runs");
    let status = worker.wait().expect("the worker ends");
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    assert!(
        out.status.success() && status.success(),
        "the example failed:\n{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn assert_story(out: &Output, done: &str) {
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    assert!(
        out.status.success() && text(&out.stdout).contains(done),
        "the story failed:\n{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// Over gRPC, as the key's account: the invocation `id` of `service/function`, if stored.
async fn grpc_get(
    server: &Server,
    service: &str,
    function: &str,
    id: &str,
) -> Result<pb::StatefulAsyncInvocation, tonic::Status> {
    let mut client = server.client().await;
    let mut request = tonic::Request::new(pb::GetStatefulAsyncInvocationRequest {
        service_name: service.into(),
        function_name: function.into(),
        invocation_id: id.into(),
        ..Default::default()
    });
    request
        .metadata_mut()
        .insert("x-fc-account-id", ACCOUNT.parse().expect("ascii"));
    client
        .get_stateful_async_invocation(request)
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdks_run_every_operation_unchanged_but_for_the_endpoint() {
    let python = tokio::task::spawn_blocking(python).await.expect("venv");
    support::apt_install("/usr/bin/faketime", &["faketime"]);
    let server = Server::start();

    let mut open = Command::new(&python);
    open.arg(stories().join("pyopen_story.py"));
    let out = tokio::task::block_in_place(|| server.run(open));
    assert_story(&out, "pyopen story: ok");

    let mut fc2 = Command::new(&python);
    fc2.arg(stories().join("pyfc2_story.py"));
    let out = tokio::task::block_in_place(|| server.run(fc2));
    assert_story(&out, "pyfc2 story: ok");

    // The SDKs' clock 20 minutes ahead of the server's: refused, with either scheme.
    for (story, done) in [
        ("pyfc2_story.py", "pyfc2 skewed: ok"),
        ("pyopen_story.py", "pyopen skewed: ok"),
    ] {
        let mut skewed = Command::new("faketime");
        skewed
            .args(["-f", "+20m"])
            .arg(&python)
            .arg(stories().join(story))
            .env("SAI_FC_SKEWED", "1");
        let out = tokio::task::block_in_place(|| server.run(skewed));
        assert_story(&out, done);
    }

    let mut example = Command::new(&python);
    example.arg(examples().join("invoke_and_wait.py"));
    let printed = tokio::task::block_in_place(|| {
        run_example(&server, example, "examples/python", "example-py")
    });
    assert!(printed.contains("example-py Succeeded: HELLO"), "{printed}");

    // gRPC sees what REST made, as REST left it.
    let made = grpc_get(&server, "pysvc", "pyopen", "py-1")
        .await
        .expect("py-1 over gRPC");
    assert_eq!(made.status, pb::InvocationStatus::Succeeded as i32);
    assert_eq!(made.invocation_payload, "hello");
    assert_eq!(made.return_payload, "HELLO");
    let queued = grpc_get(&server, "pysvc", "pyfc2", "fc2-1")
        .await
        .expect("fc2-1 over gRPC");
    assert_eq!(queued.status, pb::InvocationStatus::Enqueued as i32);
    assert_eq!(queued.invocation_payload, "{\"a\":1}");
    // Refused requests stored nothing.
    for (function, id) in [
        ("pyopen", "py-forged"),
        ("pyopen", "py-skewed"),
        ("pyfc2", "fc2-forged"),
        ("pyfc2", "fc2-skewed"),
    ] {
        let missing = grpc_get(&server, "pysvc", function, id)
            .await
            .expect_err("not stored");
        assert_eq!(missing.code(), tonic::Code::NotFound, "{id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_sdks_run_every_operation_unchanged_but_for_the_endpoint() {
    let modules = tokio::task::spawn_blocking(node_modules)
        .await
        .expect("npm ci");
    support::apt_install("/usr/bin/faketime", &["faketime"]);
    let server = Server::start();
    let mut story = Command::new("node");
    story
        .arg(stories().join("node_story.js"))
        .env("NODE_PATH", &modules);
    let out = tokio::task::block_in_place(|| server.run(story));
    assert_story(&out, "node story: ok");

    // The SDK's clock 20 minutes behind the server's: refused.
    let mut skewed = Command::new("faketime");
    skewed
        .args(["-f", "-20m", "node"])
        .arg(stories().join("node_story.js"))
        .env("NODE_PATH", &modules)
        .env("SAI_FC_SKEWED", "1");
    let out = tokio::task::block_in_place(|| server.run(skewed));
    assert_story(&out, "node skewed: ok");

    let mut example = Command::new("node");
    example
        .arg(examples().join("invoke-and-wait.js"))
        .env("NODE_PATH", &modules);
    let printed = tokio::task::block_in_place(|| {
        run_example(&server, example, "examples/node", "example-node")
    });
    assert!(
        printed.contains("example-node Succeeded: HELLO"),
        "{printed}"
    );

    let made = grpc_get(&server, "nodesvc", "nodeopen", "node-1")
        .await
        .expect("node-1 over gRPC");
    assert_eq!(made.status, pb::InvocationStatus::Succeeded as i32);
    assert_eq!(made.return_payload, "HELLO");
    let queued = grpc_get(&server, "nodesvc", "nodefc2", "fc2node-1")
        .await
        .expect("fc2node-1 over gRPC");
    assert_eq!(queued.invocation_payload, "hi");
    for (function, id) in [
        ("nodeopen", "node-forged"),
        ("nodeopen", "node-skewed"),
        ("nodefc2", "fc2node-forged"),
        ("nodefc2", "fc2node-skewed"),
    ] {
        let missing = grpc_get(&server, "nodesvc", function, id)
            .await
            .expect_err("not stored");
        assert_eq!(missing.code(), tonic::Code::NotFound, "{id}");
    }
}
