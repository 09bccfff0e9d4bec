//! TLS end to end with the real binary: `sai serve --tls-cert/--tls-key` and the CLI with
//! `--ca-cert` and an https:// server. A CA and a server certificate for 127.0.0.1 are made
//! by the openssl command for the test, so nothing is mocked.

mod support;

use std::path::Path;
use std::process::{Command, Output};

use support::SaiProcess;

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
    let server = SaiProcess::start(
        Command::new(env!("CARGO_BIN_EXE_sai"))
            .args(["serve", "--in-memory", "--listen", "127.0.0.1:0"])
            .arg("--tls-cert")
            .arg(dir.path().join("cert.pem"))
            .arg("--tls-key")
            .arg(dir.path().join("key.pem"))
            .env("RUST_LOG", "error"),
    );
    let https = format!("https://{}", server.addr);
    let ca = dir.path().join("ca.pem");
    let checks = || {
        let listed = sai(&https, Some(&ca), &["functions"]);
        assert!(
            listed.status.success(),
            "{}",
            String::from_utf8_lossy(&listed.stderr)
        );
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

        let plaintext = sai(&server.url(), None, &["functions"]);
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
    checks();
}
