//! The dashboard in a real browser: Debian's headless Chromium (packages `chromium` and
//! `chromium-driver`, installed by this test when missing) driven by playwright-core from npm
//! (no browser download), with `tests/dashboard/story.js` acting on the same server over gRPC:
//! the page loads, an invocation made over gRPC appears and reaches Succeeded while the page
//! is open, its timeline shows, the stop button stops a queued one, and filters and paging
//! show what the API answers. With `--auth-tokens` the page asks for a token first.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use support::SaiProcess;

const CHROMIUM: &str = "/usr/bin/chromium";

/// Debian's Chromium, installed with apt-get when it is missing.
fn chromium() -> PathBuf {
    support::apt_install(CHROMIUM, &["chromium", "chromium-driver"]);
    PathBuf::from(CHROMIUM)
}

/// node_modules of `tests/dashboard` (playwright-core, grpc-js).
fn node_modules() -> PathBuf {
    support::npm_ci("tests/dashboard", "dashboard-node")
}

/// Start `sai serve` with `extra` flags and run the story against it; `token` is what the
/// story types into the page and sends over gRPC.
fn run_story(extra: &[&str], token: Option<&str>, screenshot: Option<&Path>) {
    // Both tests run at once: one installs, the other waits for it.
    static SETUP: std::sync::OnceLock<(PathBuf, PathBuf)> = std::sync::OnceLock::new();
    let (chromium, modules) = SETUP.get_or_init(|| (chromium(), node_modules()));
    let server = SaiProcess::start(
        Command::new(env!("CARGO_BIN_EXE_sai"))
            .args(["serve", "--in-memory", "--listen", "127.0.0.1:0"])
            .args(["--http", "127.0.0.1:0"])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stderr(Stdio::inherit()),
    );
    let http = server.http.expect("the ready line names the HTTP listener");
    let story = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dashboard/story.js");
    let mut command = Command::new("node");
    command
        .arg(story)
        .env("NODE_PATH", modules)
        .env("CHROMIUM", chromium)
        .env("SAI_HTTP", format!("http://{http}"))
        .env("SAI_SERVER", server.addr.to_string());
    if let Some(token) = token {
        command.env("SAI_TOKEN", token);
    }
    if let Some(path) = screenshot {
        command.env("SAI_SCREENSHOT", path);
    }
    let out = command.output().expect("node runs");
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    assert!(
        out.status.success(),
        "the dashboard story failed:\n{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(text(&out.stdout).contains("dashboard story: ok"));
}

#[test]
fn the_dashboard_shows_invocations_live_stops_them_and_pages_like_the_api() {
    // SAI_DASHBOARD_SCREENSHOT=docs/dashboard.png refreshes the README's picture.
    let screenshot = std::env::var_os("SAI_DASHBOARD_SCREENSHOT").map(PathBuf::from);
    run_story(&[], None, screenshot.as_deref());
}

#[test]
fn with_auth_tokens_the_dashboard_asks_for_a_token_and_sends_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let tokens = dir.path().join("tokens");
    let token = "dashboard-token-0123456789";
    std::fs::write(&tokens, format!("{token} team-a\n")).expect("write tokens");
    let tokens = tokens.to_str().expect("utf-8 path");
    run_story(&["--auth-tokens", tokens], Some(token), None);
}
