//! The dashboard's JSON API (`/api/v1`) of a running `sai serve`: a request it refuses, a
//! query parameter that does not parse included, is answered as JSON naming the parameter,
//! never as a plain-text rejection.

mod support;

use std::process::{Command, Stdio};

use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_is_json_naming_the_parameter() {
    let server = SaiProcess::start(
        Command::new(env!("CARGO_BIN_EXE_sai"))
            .args(["serve", "--in-memory", "--listen", "127.0.0.1:0"])
            .args(["--http", "127.0.0.1:0"])
            .env("RUST_LOG", "error")
            .stderr(Stdio::null()),
    );
    let http = server.http.expect("the ready line names the HTTP listener");
    let list = "/api/v1/invocations?service_name=s&function_name=f";
    let checked = tokio::task::spawn_blocking(move || {
        let (status, _, body) = http_get(http, list);
        assert_eq!(status, 200, "{body}");
        for (path, parameter) in [
            (
                "/api/v1/changes?from_sequence=abc".to_string(),
                "from_sequence",
            ),
            (format!("{list}&limit=1.5"), "limit"),
            (format!("{list}&include_payload=maybe"), "include_payload"),
            (
                format!("{list}&started_time_begin=yesterday"),
                "started_time_begin",
            ),
            (format!("{list}&limit=500"), "limit"),
            (format!("{list}&sort_order=up"), "sort_order"),
            (
                "/api/v1/functions?next_token=forged".to_string(),
                "next_token",
            ),
        ] {
            let (status, head, body) = http_get(http, &path);
            assert_eq!(status, 400, "{path}: {body}");
            assert!(
                head.contains("content-type: application/json"),
                "{path}: {head}"
            );
            let error: serde_json::Value = serde_json::from_str(&body).expect("a JSON body");
            assert_eq!(error["code"], "INVALID_ARGUMENT", "{path}: {body}");
            assert_eq!(error["error_code"], "InvalidArgument", "{path}: {body}");
            let message = error["message"].as_str().expect("a message");
            assert!(
                message.contains(&format!("invalid {parameter}: ")),
                "{path}: {message}"
            );
        }
    })
    .await;
    checked.expect("the requests ran");
}
