//! Bad requests against FC's REST API, over raw HTTP/1.1 so that anything can be sent: bad
//! signatures and dates, paths and methods no operation has, bad names, query types, JSON
//! bodies, sizes. Each gets FC's JSON error (`ErrorCode`/`ErrorMessage` and
//! `Code`/`Message`/`RequestId`, the request id header) with a 4xx status, and afterwards the
//! server holds exactly what the good requests made.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use sai::pb;
use support::SaiProcess;

const AK: &str = "LTAI5tBatteryKey";
const SECRET: &str = "battery-secret-0123456789";
const ACCOUNT: &str = "battery";

/// One request, signed with FC's scheme unless `authorization` says otherwise.
#[derive(Clone)]
struct Req {
    method: &'static str,
    /// Path as sent (percent-encoded), and query.
    path: String,
    query: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Sign at this offset from now.
    date_offset_s: i64,
    /// Replace the signature's Authorization header with this.
    authorization: Option<String>,
    /// Sign this path instead of the one sent.
    signed_path: Option<String>,
    /// Send no Date header.
    omit_date: bool,
}

impl Req {
    fn new(method: &'static str, path: &str) -> Req {
        Req {
            method,
            path: path.to_string(),
            query: String::new(),
            headers: Vec::new(),
            body: Vec::new(),
            date_offset_s: 0,
            authorization: None,
            signed_path: None,
            omit_date: false,
        }
    }

    fn query(mut self, query: &str) -> Req {
        self.query = query.to_string();
        self
    }

    fn header(mut self, name: &str, value: &str) -> Req {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    fn body(mut self, body: impl Into<Vec<u8>>) -> Req {
        self.body = body.into();
        self
    }

    fn invoke(function: &str) -> Req {
        Req::new(
            "POST",
            &format!("/2016-08-15/services/svc/functions/{function}/invocations"),
        )
        .header("x-fc-invocation-type", "Async")
    }

    fn date(&self) -> String {
        let now = SystemTime::now();
        let at = if self.date_offset_s >= 0 {
            now + Duration::from_secs(self.date_offset_s.unsigned_abs())
        } else {
            now - Duration::from_secs(self.date_offset_s.unsigned_abs())
        };
        httpdate::fmt_http_date(at)
    }

    /// FC's `FC id:signature` over method, Content-MD5, Content-Type, Date, x-fc-* headers
    /// and the decoded path.
    fn fc_authorization(&self, headers: &[(String, String)]) -> String {
        let get = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map_or("", |(_, v)| v.as_str())
        };
        let mut fc: Vec<(String, &str)> = headers
            .iter()
            .filter(|(n, _)| n.to_ascii_lowercase().starts_with("x-fc-"))
            .map(|(n, v)| (n.to_ascii_lowercase(), v.as_str()))
            .collect();
        fc.sort();
        let path = self.signed_path.as_deref().unwrap_or(&self.path);
        let mut to_sign = format!(
            "{}\n{}\n{}\n{}\n",
            self.method,
            get("content-md5"),
            get("content-type"),
            get("date")
        );
        for (name, value) in fc {
            to_sign.push_str(&format!("{name}:{value}\n"));
        }
        to_sign.push_str(&percent_encoding::percent_decode_str(path).decode_utf8_lossy());
        let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("key");
        mac.update(to_sign.as_bytes());
        let signature =
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        format!("FC {AK}:{signature}")
    }

    fn bytes(&self, host: SocketAddr) -> Vec<u8> {
        let mut headers = self.headers.clone();
        if !self.omit_date && !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("date")) {
            headers.push(("date".into(), self.date()));
        }
        let authorization = match &self.authorization {
            Some(value) => value.clone(),
            None => self.fc_authorization(&headers),
        };
        if !authorization.is_empty() {
            headers.push(("authorization".into(), authorization));
        }
        let target = if self.query.is_empty() {
            self.path.clone()
        } else {
            format!("{}?{}", self.path, self.query)
        };
        let mut out = format!("{} {target} HTTP/1.1\r\nhost: {host}\r\n", self.method).into_bytes();
        for (name, value) in &headers {
            out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        }
        out.extend_from_slice(
            format!(
                "content-length: {}\r\nconnection: close\r\n\r\n",
                self.body.len()
            )
            .as_bytes(),
        );
        out.extend_from_slice(&self.body);
        out
    }
}

struct Answer {
    status: u16,
    head: String,
    body: String,
}

fn send(http: SocketAddr, request: &Req) -> Answer {
    let mut stream = TcpStream::connect(http).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    // A server may answer (and close) before it has read a large body: ignore a reset here.
    let _ = stream.write_all(&request.bytes(http));
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Answer {
        status,
        head: head.to_ascii_lowercase(),
        body: body.to_string(),
    }
}

fn acs3(fields: &str) -> Option<String> {
    Some(format!("ACS3-HMAC-SHA256 {fields}"))
}

/// An ACS3 request signed over `signed` headers, then changed by `spoil`.
fn acs3_request(spoil: impl Fn(&mut Req, &mut String)) -> Req {
    let date = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    let body = b"{\"maxAsyncRetryAttempts\":1}".to_vec();
    let hash: String = Sha256::digest(&body)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut req = Req::new(
        "PUT",
        "/2021-04-06/services/svc/functions/acs/async-invoke-config",
    )
    .header("x-acs-date", &date)
    .header("x-acs-content-sha256", &hash)
    .body(body);
    let mut fields = "Credential=LTAI5tBatteryKey,SignedHeaders=host;x-acs-content-sha256;x-acs-date,Signature=00".to_string();
    spoil(&mut req, &mut fields);
    req.authorization = acs3(&fields);
    req
}

fn cases() -> Vec<(String, Req, u16, &'static str)> {
    let mut cases: Vec<(String, Req, u16, &'static str)> = Vec::new();
    let mut case = |name: &str, req: Req, status: u16, code: &'static str| {
        cases.push((name.to_string(), req, status, code));
    };
    let get_config = || {
        Req::new(
            "GET",
            "/2016-08-15/services/svc/functions/fn/async-invoke-config",
        )
    };

    // Signatures and dates.
    let mut unsigned = get_config();
    unsigned.authorization = Some(String::new());
    case("no authorization", unsigned, 403, "AccessDenied");
    for (name, value, code) in [
        ("basic auth", "Basic dXNlcjpwYXNz", "AccessDenied"),
        ("FC without a colon", "FC LTAI5tBatteryKey", "AccessDenied"),
        (
            "FC unknown key",
            "FC someoneElse:c2lnbmF0dXJl",
            "InvalidAccessKeyID",
        ),
        (
            "FC garbage signature",
            "FC LTAI5tBatteryKey:garbage",
            "SignatureNotMatch",
        ),
        (
            "FC empty signature",
            "FC LTAI5tBatteryKey:",
            "SignatureNotMatch",
        ),
        ("lower-case scheme", "fc LTAI5tBatteryKey:x", "AccessDenied"),
        ("ACS3 no fields", "ACS3-HMAC-SHA256 ", "AccessDenied"),
        (
            "ACS3 unknown field",
            "ACS3-HMAC-SHA256 Foo=bar",
            "AccessDenied",
        ),
    ] {
        let mut req = get_config();
        req.authorization = Some(value.into());
        case(name, req, 403, code);
    }
    let mut other_path = get_config();
    other_path.signed_path =
        Some("/2016-08-15/services/svc/functions/other/async-invoke-config".into());
    case(
        "signed for another path",
        other_path,
        403,
        "SignatureNotMatch",
    );
    let mut changed = Req::invoke("fn").header("x-fc-stateful-async-invocation-id", "signed-id");
    let signed = changed.fc_authorization(&{
        let mut h = changed.headers.clone();
        h.push(("date".into(), changed.date()));
        h
    });
    changed.headers[1].1 = "changed-id".into();
    changed.authorization = Some(signed);
    case(
        "header changed after signing",
        changed,
        403,
        "SignatureNotMatch",
    );
    let mut undated = get_config();
    undated.omit_date = true;
    case("date missing", undated, 403, "AccessDenied");
    case(
        "date garbage",
        get_config().header("date", "yesterday"),
        403,
        "AccessDenied",
    );
    case(
        "date ISO instead of RFC 1123",
        get_config().header("date", "2026-01-01T00:00:00Z"),
        403,
        "AccessDenied",
    );
    for (name, offset) in [
        ("date 16 min ago", -16 * 60),
        ("date 16 min ahead", 16 * 60),
        ("date a day ago", -86_400),
        ("date a year ahead", 365 * 86_400),
    ] {
        let mut req = get_config();
        req.date_offset_s = offset;
        case(name, req, 403, "RequestTimeTooSkewed");
    }
    case(
        "Content-MD5 of another body",
        Req::invoke("fn")
            .header("content-md5", "1B2M2Y8AsgTpgAmY7PhCfg==")
            .body("not empty"),
        403,
        "SignatureNotMatch",
    );
    case(
        "another account",
        get_config().header("x-fc-account-id", "someone-else"),
        403,
        "AccessDenied",
    );
    case(
        "ACS3 unknown key",
        acs3_request(|_, f| *f = f.replace("LTAI5tBatteryKey", "nobody")),
        403,
        "InvalidAccessKeyID",
    );
    case(
        "ACS3 wrong signature",
        acs3_request(|_, _| {}),
        403,
        "SignatureNotMatch",
    );
    case(
        "ACS3 host not signed",
        acs3_request(|_, f| *f = f.replace("host;", "")),
        403,
        "AccessDenied",
    );
    case(
        "ACS3 body hash of another body",
        acs3_request(|r, _| r.body = b"{}".to_vec()),
        403,
        "SignatureNotMatch",
    );
    case(
        "ACS3 date garbage",
        acs3_request(|r, _| r.headers[0].1 = "noon".into()),
        403,
        "AccessDenied",
    );
    case(
        "ACS3 date skewed",
        acs3_request(|r, _| r.headers[0].1 = "2001-01-01T00:00:00Z".into()),
        403,
        "RequestTimeTooSkewed",
    );
    case(
        "ACS3 missing signature",
        acs3_request(|_, f| *f = f.replace(",Signature=00", "")),
        403,
        "AccessDenied",
    );

    // Paths and methods no operation has.
    for (method, path) in [
        ("GET", "/2021-04-06/"),
        ("GET", "/2021-04-06/services"),
        ("GET", "/2021-04-06/services/svc"),
        ("GET", "/2021-04-06/services/svc/functions"),
        ("GET", "/2021-04-06/services/svc/functions/fn"),
        ("GET", "/2021-04-06/services/svc/functions/fn/unknown"),
        (
            "DELETE",
            "/2021-04-06/services/svc/functions/fn/invocations",
        ),
        ("GET", "/2016-08-15/services/svc/functions/fn/invocations"),
        (
            "PATCH",
            "/2021-04-06/services/svc/functions/fn/async-invoke-config",
        ),
        (
            "POST",
            "/2021-04-06/services/svc/functions/fn/stateful-async-invocations",
        ),
        (
            "DELETE",
            "/2021-04-06/services/svc/functions/fn/stateful-async-invocations/id-1",
        ),
        (
            "GET",
            "/2021-04-06/services/svc/functions/fn/stateful-async-invocations/a/b",
        ),
        ("GET", "/2016-08-15/stateful-async-invocation-functions"),
        ("POST", "/2021-04-06/stateful-async-invocation-functions"),
        ("GET", "/2021-04-06/tags"),
        ("GET", "/2021-04-06/functions/fn/services/svc/invocations"),
        (
            "PUT",
            "/2016-08-15/services/svc/functions/fn/async-invoke-configs",
        ),
    ] {
        case(
            &format!("{method} {path}"),
            Req::new(method, path),
            400,
            "PathNotSupported",
        );
    }

    // Names, ids and qualifiers.
    let long = "a".repeat(200);
    for bad in [
        "bad%20name",
        "-lead",
        "%C3%BC",
        "a%2Fb",
        long.as_str(),
        "dot.name.x",
    ] {
        case(
            &format!("service {bad:.20}"),
            Req::new(
                "GET",
                &format!("/2021-04-06/services/{bad}/functions/fn/async-invoke-config"),
            ),
            400,
            "InvalidArgument",
        );
        case(
            &format!("function {bad:.20}"),
            Req::new(
                "GET",
                &format!("/2021-04-06/services/svc/functions/{bad}/async-invoke-config"),
            ),
            400,
            "InvalidArgument",
        );
    }
    for bad in ["bad%20id", "%21bang", long.as_str(), "..", "%00"] {
        case(
            &format!("invocation id {bad:.20}"),
            Req::new(
                "GET",
                &format!("/2021-04-06/services/svc/functions/fn/stateful-async-invocations/{bad}"),
            ),
            400,
            "InvalidArgument",
        );
    }
    // A header the signature cannot cover is refused before anything reads it.
    case(
        "invoke id not ASCII",
        Req::invoke("fn").header("x-fc-stateful-async-invocation-id", "üml"),
        403,
        "AccessDenied",
    );
    for bad in ["bad id!", "-x", long.as_str()] {
        case(
            &format!("invoke id {bad:.20}"),
            Req::invoke("fn").header("x-fc-stateful-async-invocation-id", bad),
            400,
            "InvalidArgument",
        );
    }
    case(
        "2021 qualifier with a bang",
        Req::new(
            "GET",
            "/2021-04-06/services/svc/functions/fn/async-invoke-config",
        )
        .query("qualifier=bad%21"),
        400,
        "InvalidArgument",
    );
    case(
        "2016 empty qualifier",
        Req::new(
            "GET",
            "/2016-08-15/services/svc./functions/fn/async-invoke-config",
        ),
        400,
        "InvalidArgument",
    );

    // Invoke.
    case(
        "no invocation type",
        Req::new("POST", "/2016-08-15/services/svc/functions/fn/invocations"),
        400,
        "InvalidArgument",
    );
    for kind in ["Sync", "Later", ""] {
        case(
            &format!("invocation type {kind:?}"),
            Req::new("POST", "/2016-08-15/services/svc/functions/fn/invocations")
                .header("x-fc-invocation-type", kind),
            400,
            "InvalidArgument",
        );
    }
    case(
        "body not UTF-8",
        Req::invoke("fn").body(vec![0xff, 0xfe, 0x00]),
        400,
        "InvalidArgument",
    );
    case(
        "payload over 128 KiB",
        Req::invoke("fn").body(vec![b'x'; 128 * 1024 + 1]),
        400,
        "EntityTooLarge",
    );
    case(
        "body over 2 MiB",
        Req::invoke("fn").body(vec![b'x'; 3 * 1024 * 1024]),
        400,
        "EntityTooLarge",
    );
    case(
        "duplicate id",
        Req::invoke("good").header("x-fc-stateful-async-invocation-id", "good-1"),
        409,
        "StatefulAsyncInvocationAlreadyExists",
    );

    // Query types.
    let list = || {
        Req::new(
            "GET",
            "/2021-04-06/services/svc/functions/good/stateful-async-invocations",
        )
    };
    for query in [
        "limit=abc",
        "limit=-1",
        "limit=101",
        "limit=99999999999",
        "limit=1.5",
        "startedTimeBegin=x",
        "startedTimeEnd=1.5",
        "startedTimeBegin=-5",
        "startedTimeBegin=2000&startedTimeEnd=1000",
        "includePayload=maybe",
        "includePayload=1",
        "sortOrderByTime=up",
        "status=Sleeping",
        "status=99",
        "nextToken=garbage",
        "nextToken=%FF%FE",
        "invocationIdPrefix=bad%20prefix",
    ] {
        case(
            &format!("list {query}"),
            list().query(query),
            400,
            "InvalidArgument",
        );
    }
    for query in ["limit=abc", "limit=1000", "nextToken=garbage"] {
        case(
            &format!("functions {query}"),
            Req::new("GET", "/2021-04-06/stateful-async-invocation-functions").query(query),
            400,
            "InvalidArgument",
        );
    }
    for query in ["limit=x", "nextToken=garbage"] {
        case(
            &format!("configs {query}"),
            Req::new(
                "GET",
                "/2021-04-06/services/svc/functions/fn/async-invoke-configs",
            )
            .query(query),
            400,
            "InvalidArgument",
        );
    }

    // Put config bodies.
    let put = || {
        Req::new(
            "PUT",
            "/2016-08-15/services/svc/functions/fn/async-invoke-config",
        )
    };
    for (name, body) in [
        ("truncated JSON", "{"),
        ("an array", "[]"),
        ("a string", "\"config\""),
        ("a number", "7"),
        ("empty", ""),
        ("retries as a string", r#"{"maxAsyncRetryAttempts":"2"}"#),
        ("retries 9", r#"{"maxAsyncRetryAttempts":9}"#),
        ("retries -1", r#"{"maxAsyncRetryAttempts":-1}"#),
        ("retries 1.5", r#"{"maxAsyncRetryAttempts":1.5}"#),
        ("age 0", r#"{"maxAsyncEventAgeInSeconds":0}"#),
        ("age over a week", r#"{"maxAsyncEventAgeInSeconds":604801}"#),
        ("age huge", r#"{"maxAsyncEventAgeInSeconds":1e30}"#),
        ("stateful as a string", r#"{"statefulInvocation":"yes"}"#),
        ("destinations an array", r#"{"destinationConfig":[]}"#),
        (
            "onSuccess a string",
            r#"{"destinationConfig":{"onSuccess":"x"}}"#,
        ),
        (
            "destination a number",
            r#"{"destinationConfig":{"onFailure":{"destination":5}}}"#,
        ),
        (
            "destination not an ARN",
            r#"{"destinationConfig":{"onSuccess":{"destination":"not-an-arn"}}}"#,
        ),
        (
            "destination of another account",
            r#"{"destinationConfig":{"onSuccess":{"destination":"acs:fc:cn-hangzhou:999:services/s/functions/f"}}}"#,
        ),
        ("retries a boolean", r#"{"maxAsyncRetryAttempts":true}"#),
        (
            "destination itself",
            r#"{"destinationConfig":{"onSuccess":{"destination":"acs:fc:::services/svc.prod/functions/fn"}}}"#,
        ),
    ] {
        case(
            &format!("put config {name}"),
            put().body(body),
            400,
            "InvalidArgument",
        );
    }
    case(
        "put config not UTF-8",
        put().body(vec![b'{', 0xff, b'}']),
        400,
        "InvalidArgument",
    );
    case(
        "put config over 2 MiB",
        put().body(vec![b' '; 3 * 1024 * 1024]),
        400,
        "EntityTooLarge",
    );

    // Things that do not exist.
    case(
        "get missing config",
        get_config(),
        404,
        "AsyncConfigNotExists",
    );
    case(
        "delete missing config",
        Req::new(
            "DELETE",
            "/2016-08-15/services/svc/functions/fn/async-invoke-config",
        ),
        404,
        "AsyncConfigNotExists",
    );
    case(
        "get missing invocation",
        Req::new(
            "GET",
            "/2021-04-06/services/svc/functions/fn/stateful-async-invocations/none",
        ),
        404,
        "StatefulAsyncInvocationNotFound",
    );
    case(
        "stop missing invocation",
        Req::new(
            "PUT",
            "/2021-04-06/services/svc/functions/fn/stateful-async-invocations/none",
        ),
        404,
        "StatefulAsyncInvocationNotFound",
    );
    cases
}

/// `sai serve` with FC's REST API and an access key file holding `keys`.
fn start(keys: &str) -> (tempfile::TempDir, std::path::PathBuf, SaiProcess) {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("keys");
    std::fs::write(&file, keys).expect("keys");
    let server = SaiProcess::start(
        Command::new(env!("CARGO_BIN_EXE_sai"))
            .args([
                "serve",
                "--in-memory",
                "--listen",
                "127.0.0.1:0",
                "--http",
                "127.0.0.1:0",
            ])
            .arg("--access-keys")
            .arg(&file)
            .env("RUST_LOG", "error")
            .stderr(Stdio::null()),
    );
    (dir, file, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_request_gets_a_clear_fc_error_and_changes_nothing() {
    let (_dir, _keys, server) = start(&format!("{AK} {SECRET} {ACCOUNT}\n"));
    let http = server.http.expect("HTTP listener");
    let good = Req::invoke("good").header("x-fc-stateful-async-invocation-id", "good-1");
    let accepted = tokio::task::block_in_place(|| send(http, &good));
    assert_eq!(accepted.status, 202, "{}", accepted.body);

    let cases = cases();
    assert!(cases.len() >= 100, "{} cases", cases.len());
    let mut failures = Vec::new();
    for (name, req, status, code) in &cases {
        let answer = tokio::task::block_in_place(|| send(http, req));
        let body: serde_json::Value = serde_json::from_str(&answer.body).unwrap_or_default();
        let ok = answer.status == *status
            && body["ErrorCode"] == *code
            && body["Code"] == *code
            && body["ErrorMessage"].as_str().is_some_and(|m| !m.is_empty())
            && body["Message"] == body["ErrorMessage"]
            && body["RequestId"]
                .as_str()
                .is_some_and(|id| answer.head.contains(id))
            && answer.head.contains("content-type: application/json");
        if !ok {
            failures.push(format!(
                "{name}: expected {status} {code}, got {} {}",
                answer.status, answer.body
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {}:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );

    // Nothing changed: one function, one invocation, no config.
    let mut client = pb::stateful_async_invocation_service_client::StatefulAsyncInvocationServiceClient::connect(server.url())
        .await
        .expect("connect");
    let functions = client
        .list_stateful_async_invocation_functions(support::as_account(
            ACCOUNT,
            pb::ListStatefulAsyncInvocationFunctionsRequest::default(),
        ))
        .await
        .expect("functions")
        .into_inner();
    let names: Vec<_> = functions
        .data
        .iter()
        .map(|f| f.function_name.as_str())
        .collect();
    assert_eq!(names, ["good"]);
    let invocations = client
        .list_stateful_async_invocations(support::as_account(
            ACCOUNT,
            pb::ListStatefulAsyncInvocationsRequest {
                service_name: "svc".into(),
                function_name: "good".into(),
                ..Default::default()
            },
        ))
        .await
        .expect("list")
        .into_inner();
    let ids: Vec<_> = invocations
        .invocations
        .iter()
        .map(|i| i.invocation_id.as_str())
        .collect();
    assert_eq!(ids, ["good-1"]);
    let configs = client
        .list_function_async_invoke_configs(support::as_account(
            ACCOUNT,
            pb::ListFunctionAsyncInvokeConfigsRequest {
                service_name: "svc".into(),
                function_name: "fn".into(),
                ..Default::default()
            },
        ))
        .await
        .expect("configs")
        .into_inner();
    assert!(configs.configs.is_empty());
}

/// A refusal names the field as the REST request gave it (query parameter, body key or
/// header), not as the gRPC service behind it calls it, and does not repeat FC's code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_names_the_field_as_the_request_gave_it() {
    let (_dir, _keys, server) = start(&format!("{AK} {SECRET} {ACCOUNT}\n"));
    let http = server.http.expect("HTTP listener");
    let list = |query: &str| {
        Req::new(
            "GET",
            "/2021-04-06/services/svc/functions/fn/stateful-async-invocations",
        )
        .query(query)
    };
    let put = |body: &str| {
        Req::new(
            "PUT",
            "/2021-04-06/services/svc/functions/fn/async-invoke-config",
        )
        .body(body)
    };
    let cases = [
        (
            list("startedTimeBegin=2000&startedTimeEnd=1000"),
            "invalid startedTimeBegin: must be <= startedTimeEnd",
        ),
        (
            list("status=queued_up"),
            "invalid status: \"queued_up\" is not a status (Enqueued, Dequeued, Running, \
             Succeeded, Failed, Stopped, Stopping, Expired, Invalid, Retrying)",
        ),
        (
            list("nextToken=garbage"),
            "invalid nextToken: is not a token this server issued for this list",
        ),
        (
            list("invocationIdPrefix=bad%20prefix"),
            "invalid invocationIdPrefix: must be at most 128 of letters, digits, '_' and '-'",
        ),
        (
            put(r#"{"maxAsyncRetryAttempts":9}"#),
            "invalid maxAsyncRetryAttempts: must be between 0 and 8",
        ),
        (
            put(r#"{"destinationConfig":{"onSuccess":{"destination":"elsewhere"}}}"#),
            "invalid destinationConfig.onSuccess.destination: must be \
             acs:fc:{region}:{account}:services/{service}[.{qualifier}]/functions/{function}",
        ),
        (
            Req::invoke("fn").header("x-fc-stateful-async-invocation-id", "9lives"),
            "invalid X-Fc-Stateful-Async-Invocation-Id: must match ^[A-Za-z_][A-Za-z0-9_-]{0,127}$",
        ),
        (
            Req::invoke("fn").body(vec![b'x'; 128 * 1024 + 1]),
            "invalid body: must be at most 131072 bytes",
        ),
    ];
    for (request, message) in cases {
        let answer = tokio::task::block_in_place(|| send(http, &request));
        let body: serde_json::Value = serde_json::from_str(&answer.body).unwrap_or_default();
        assert_eq!(body["ErrorMessage"], message, "{}", answer.body);
        assert_eq!(body["Message"], message, "{}", answer.body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_keys_are_read_again_on_sighup() {
    let (_dir, keys, server) = start("LTAI5tSomeoneElse someone-elses-secret-0123 other\n");
    let http = server.http.expect("HTTP listener");
    let get_config = Req::new(
        "GET",
        "/2016-08-15/services/svc/functions/fn/async-invoke-config",
    );
    let before = tokio::task::block_in_place(|| send(http, &get_config));
    assert_eq!(before.status, 403, "{}", before.body);
    assert!(
        before.body.contains("InvalidAccessKeyID"),
        "{}",
        before.body
    );

    // A file that does not parse changes nothing.
    std::fs::write(&keys, "not a key line\n").expect("keys");
    let hangup = || {
        let sent = Command::new("kill")
            .args(["-HUP", &server.child.id().to_string()])
            .status()
            .expect("kill -HUP");
        assert!(sent.success());
    };
    hangup();
    std::fs::write(&keys, format!("{AK} {SECRET} {ACCOUNT}\n")).expect("keys");
    hangup();
    // The reload runs on the server's own time: wait for it, with a deadline for failure only.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let answer = tokio::task::block_in_place(|| send(http, &get_config));
        if answer.status == 404 && answer.body.contains("AsyncConfigNotExists") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the new key is not accepted: {} {}",
            answer.status,
            answer.body
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
