//! TLS end to end with the real binary: `sai serve --tls-cert/--tls-key` and the CLI with
//! `--ca-cert` and an https:// server. A CA and a server certificate for 127.0.0.1 are made
//! by the openssl command for the test, so nothing is mocked.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn openssl(args: &[&str], dir: &Path) {
    let made = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
}

/// A CA (`ca.pem`) and a server certificate for 127.0.0.1 signed by it (`cert.pem`, `key.pem`).
fn make_certificates(dir: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509", "-days", "1", "-subj", "/CN=sai-test-ca"];
    ca.extend(ec);
    ca.extend(["-keyout", "ca.key", "-out", "ca.pem"]);
    openssl(&ca, dir);
    let mut request = vec!["req", "-subj", "/CN=127.0.0.1"];
    request.extend(ec);
    request.extend(["-keyout", "key.pem", "-out", "server.csr"]);
    openssl(&request, dir);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
         keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .expect("write extensions");
    openssl(
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "server.ext",
            "-out",
            "cert.pem",
        ],
        dir,
    );
}

fn sai(server: &str, ca: Option<&Path>, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sai"));
    command
        .args(args)
        .env("SAI_SERVER", server)
        .env_remove("SAI_CA_CERT")
        .env("RUST_LOG", "error");
    if let Some(ca) = ca {
        command.arg("--ca-cert").arg(ca);
    }
    command.output().expect("run sai")
}

#[test]
fn the_cli_talks_to_a_tls_server_with_its_ca_and_plaintext_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    make_certificates(dir.path());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let mut server = Command::new(env!("CARGO_BIN_EXE_sai"))
        .args([
            "serve",
            "--in-memory",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .arg("--tls-cert")
        .arg(dir.path().join("cert.pem"))
        .arg("--tls-key")
        .arg(dir.path().join("key.pem"))
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .spawn()
        .expect("start sai serve");
    let https = format!("https://127.0.0.1:{port}");
    let ca = dir.path().join("ca.pem");
    let checks = || {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !sai(&https, Some(&ca), &["functions"]).status.success() {
            assert!(Instant::now() < deadline, "the TLS server never answered");
            std::thread::sleep(Duration::from_millis(50));
        }
        let invoked = sai(
            &https,
            Some(&ca),
            &["invoke", "demo-service/demo-function", "--id", "over-tls"],
        );
        assert!(
            invoked.status.success(),
            "{}",
            String::from_utf8_lossy(&invoked.stderr)
        );
        let got = sai(
            &https,
            Some(&ca),
            &[
                "--output",
                "json",
                "get",
                "demo-service/demo-function",
                "over-tls",
            ],
        );
        assert!(
            got.status.success(),
            "{}",
            String::from_utf8_lossy(&got.stderr)
        );
        assert!(String::from_utf8_lossy(&got.stdout).contains("over-tls"));

        let plaintext = sai(&format!("http://127.0.0.1:{port}"), None, &["functions"]);
        assert!(
            !plaintext.status.success(),
            "plaintext must not get through"
        );
        let without_ca = sai(&https, None, &["functions"]);
        assert!(!without_ca.status.success());
        assert!(
            String::from_utf8_lossy(&without_ca.stderr).contains("--ca-cert"),
            "{}",
            String::from_utf8_lossy(&without_ca.stderr)
        );
    };
    let outcome = std::panic::catch_unwind(checks);
    let _ = server.kill();
    let _ = server.wait();
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}
