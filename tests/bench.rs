//! `sai bench` works end to end: each scenario, run tiny, starts its server child process,
//! drives it, and writes a JSON report with a row per configuration. (No figure is checked:
//! speed is measured by the benchmarks themselves, see BENCHMARKS.md.)

use std::path::Path;
use std::process::Command;

fn bench(out: &Path, args: &[&str]) -> serde_json::Value {
    let output = Command::new(env!("CARGO_BIN_EXE_sai"))
        .args(["bench", "--runs", "1", "--out"])
        .arg(out)
        .args(args)
        .env("RUST_LOG", "error")
        .output()
        .expect("run sai bench");
    assert!(
        output.status.success(),
        "sai bench {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let scenario = args[0];
    let report = std::fs::read_to_string(out.join(format!("{scenario}.json"))).expect("report");
    serde_json::from_str(&report).expect("JSON report")
}

#[test]
fn every_scenario_runs_and_reports() {
    let out = tempfile::tempdir().expect("tempdir");
    let invoke = bench(
        out.path(),
        &[
            "invoke",
            "--clients",
            "2",
            "--duration",
            "300ms",
            "--modes",
            "sync,memory",
        ],
    );
    // sync, in-memory, and the baseline.
    assert_eq!(invoke["rows"].as_array().expect("rows").len(), 3);
    assert!(invoke["machine"]["cores"].as_u64().expect("cores") >= 1);

    let get = bench(
        out.path(),
        &[
            "get",
            "--stored",
            "200",
            "--clients",
            "2",
            "--duration",
            "300ms",
        ],
    );
    assert_eq!(get["rows"].as_array().expect("rows").len(), 2);
    let list = bench(
        out.path(),
        &[
            "list",
            "--stored",
            "200",
            "--clients",
            "2",
            "--duration",
            "300ms",
        ],
    );
    assert_eq!(list["rows"].as_array().expect("rows").len(), 1);

    let e2e = bench(
        out.path(),
        &[
            "e2e",
            "--invocations",
            "300",
            "--producers",
            "4",
            "--workers",
            "2",
        ],
    );
    assert!(e2e["rows"][0]["completed/s"].as_u64().expect("rate") > 0);
    // Where the time went: every invocation was leased by some poll and invoked by a call.
    assert!(
        e2e["rows"][0]["leases/poll"]
            .as_f64()
            .expect("leases per poll")
            > 0.0
    );
    assert!(
        e2e["rows"][0]["invoke p50 ms"]
            .as_f64()
            .expect("invoke latency")
            > 0.0
    );
    // The load generator's and the whole machine's CPU beside the server's: a number each (a
    // very fast run may round to none).
    for column in [
        "load generator CPU µs/invocation",
        "machine CPU µs/invocation",
        "steal %",
    ] {
        assert!(
            e2e["rows"][0][column].as_f64().expect(column) >= 0.0,
            "{column}"
        );
    }
    let watch = bench(out.path(), &["watch", "--watchers", "50"]);
    assert_eq!(watch["rows"][0]["live deliveries"].as_u64(), Some(150));
    let history = bench(
        out.path(),
        &[
            "history",
            "--finished",
            "500",
            "--open",
            "20",
            "--functions",
            "2",
            "--clients",
            "2",
            "--duration",
            "300ms",
            "--server-threads",
            "1",
            "--idle",
            "100ms",
        ],
    );
    assert_eq!(history["params"]["server_threads"].as_u64(), Some(1));
    assert_eq!(history["params"]["idle_s"].as_f64(), Some(0.1));
    assert_eq!(history["rows"][0]["finished"].as_u64(), Some(500));
    assert!(history["rows"][0]["get/s"].as_u64().expect("gets") > 0);
    assert!(history["rows"][0]["% of baseline after idle"].is_number());
    assert!(history["rows"][0]["disk KiB/get after idle"].is_number());
    let soak = bench(
        out.path(),
        &[
            "soak",
            "--rate",
            "200",
            "--duration",
            "2s",
            "--every",
            "1s",
            "--retention",
            "1s",
        ],
    );
    assert_eq!(soak["params"]["retention"].as_str(), Some("1s"));
    let samples = soak["rows"].as_array().expect("rows");
    assert!(samples
        .iter()
        .all(|sample| sample["server CPU %"].as_f64().is_some()));
    for column in ["list oldest first ms", "list newest first ms"] {
        assert!(
            samples
                .iter()
                .all(|sample| sample[column].as_f64().is_some_and(|ms| ms > 0.0)),
            "{column}"
        );
    }
    assert!(samples.iter().all(|sample| sample["purged"].is_u64()));
    let after = samples.last().expect("after");
    assert_eq!(after["open"].as_u64(), Some(0));
    assert_eq!(after["timers"].as_u64(), Some(0));
    // Retention's first pass, at start, got through: how far behind it is is known.
    assert!(after["retention behind s"].as_f64().is_some(), "{after}");
}

#[test]
fn a_count_or_a_measured_time_of_zero_is_refused_by_name_before_any_server_starts() {
    let out = tempfile::tempdir().expect("temp dir");
    for (args, flag) in [
        (vec!["--runs", "0", "get"], "--runs"),
        (vec!["history", "--finished", "0"], "--finished"),
        (vec!["get", "--stored", "10,0"], "--stored"),
        (vec!["get", "--clients", "0"], "--clients"),
        (vec!["soak", "--rate", "0"], "--rate"),
        (vec!["e2e", "--workers", "0"], "--workers"),
        (vec!["get", "--duration", "0s"], "--duration"),
        (vec!["soak", "--every", "0ms"], "--every"),
    ] {
        let refused = Command::new(env!("CARGO_BIN_EXE_sai"))
            .args(["bench", "--out"])
            .arg(out.path())
            .args(&args)
            .output()
            .expect("run sai bench");
        assert_eq!(refused.status.code(), Some(2), "{args:?}: {refused:?}");
        let error = String::from_utf8_lossy(&refused.stderr);
        assert!(error.contains("invalid value '"), "{args:?}: {error}");
        assert!(error.contains(flag), "{args:?}: {error}");
    }
    assert_eq!(
        std::fs::read_dir(out.path()).expect("read dir").count(),
        0,
        "no report written"
    );
}
