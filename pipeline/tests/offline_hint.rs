//! Without Hub access the pipeline says what failed (the root cause, the URL once) and what to do
//! (--input, HF_ENDPOINT/--endpoint), in bounded time. Only loopback traffic: a closed port.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

#[test]
fn an_unreachable_hub_gives_the_cause_and_the_offline_ways() {
    let tmp = tempfile::tempdir().unwrap();
    // A port nobody listens on: connection refused at once.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let t0 = Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pipeline"))
        .args(["--endpoint", &endpoint, "--retries", "2", "--retry-backoff-ms", "10", "--data-dir"])
        .arg(tmp.path().join("data"))
        .env_remove("HF_ENDPOINT")
        .env("HF_TOKEN", "")
        .output()
        .unwrap();
    assert!(t0.elapsed() < Duration::from_secs(120), "took {:?}", t0.elapsed());
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let err = stderr.lines().find(|l| l.starts_with("error:")).unwrap_or_else(|| panic!("no error line: {stderr}"));
    assert!(err.contains("cannot list the parquet files of dataset HuggingFaceFW/fineweb"), "{err}");
    assert!(
        err.contains("--input") && err.contains("pipeline/assets/sample-corpus") && err.contains("HF_ENDPOINT"),
        "{err}"
    );
    assert!(err.to_lowercase().contains("refused"), "the root cause: {err}");
    assert_eq!(err.matches(&endpoint).count(), 1, "the URL once: {err}");
    assert!(!err.contains('\u{1b}'), "no colour codes without a terminal: {err}");
}
