//! Streaming from a Hub-layout HTTP server on loopback: output identical to local `--input`,
//! Range requests only (never a whole file), retries through injected faults, persistent failures
//! under `--on-error fail|skip`, endpoint/token discovery.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::hub_server::{Faults, HubServer};
use common::*;
use mamba_shards::Split;

/// Three parquet files (Hub layout) of real text with small row groups, plus the server.
fn setup(tmp: &Path) -> (Vec<PathBuf>, HubServer) {
    let files = write_corpus(&tmp.join("src"), 3, 300, 25);
    let mut served = BTreeMap::new();
    for f in &files {
        let name = f.file_name().unwrap().to_string_lossy();
        served.insert(format!("sample/10BT/{name}"), std::fs::read(f).unwrap());
    }
    (files, HubServer::start(served))
}

fn local_run(tmp: &Path, files: &[PathBuf]) -> PathBuf {
    let data = tmp.join("local");
    let mut args: Vec<&str> = SMALL.to_vec();
    args.extend(["--data-dir", p(&data), "--input"]);
    args.extend(files.iter().map(|f| p(f)));
    run_ok(&args);
    data
}

fn remote_args<'a>(server: &'a str, data: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args: Vec<&str> = SMALL.to_vec();
    args.extend(["--endpoint", server, "--data-dir", p(data), "--retry-backoff-ms", "5"]);
    args.extend_from_slice(extra);
    args
}

#[test]
fn remote_output_equals_local_and_only_ranges_are_read() {
    let tmp = tempfile::tempdir().unwrap();
    let (files, server) = setup(tmp.path());
    let local = local_run(tmp.path(), &files);
    let remote = tmp.path().join("remote");
    let endpoint = server.endpoint();
    run_ok(&remote_args(&endpoint, &remote, &[]));

    assert_eq!(shard_bytes(&remote), shard_bytes(&local), "remote shards must be byte-identical to local ones");
    let m = manifest(&remote);
    assert!(m.finished);
    assert_eq!(
        m.fingerprint.files,
        vec!["sample/10BT/000_00000.parquet", "sample/10BT/001_00000.parquet", "sample/10BT/002_00000.parquet"]
    );

    let log = server.log();
    assert!(
        log.iter().filter(|r| r.path.contains("/tree/")).count() >= 2,
        "the paginated listing was followed: {log:?}"
    );
    for f in &files {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        let size = std::fs::metadata(f).unwrap().len();
        let reqs: Vec<_> = log.iter().filter(|r| r.path.ends_with(&name)).collect();
        assert!(reqs.len() >= 2, "footer, then column chunks: {reqs:?}");
        for r in &reqs {
            let (a, b) = r.range.unwrap_or_else(|| panic!("request without Range: {r:?}"));
            assert_eq!(r.status, 206);
            assert!(b - a < size, "a request covered the whole file: {r:?}");
        }
        // The first request is the footer (with a 64 KiB prefetch); after it, only `text` and
        // `id` column chunks: never a byte of the unused `url` column.
        assert_eq!(reqs[0].range.unwrap().1, size);
        let url_chunks = column_chunk_ranges(f, "url");
        assert!(
            url_chunks.iter().map(|(a, b)| b - a).sum::<u64>() > size / 3,
            "the url column is a large part of the file"
        );
        for r in &reqs[1..] {
            let (a, b) = r.range.unwrap();
            assert!(
                url_chunks.iter().all(|&(ua, ub)| b <= ua || a >= ub),
                "{name}: {r:?} reads the url column {url_chunks:?}"
            );
        }
    }
}

#[test]
fn transient_faults_are_retried_and_leave_the_output_unchanged() {
    let tmp = tempfile::tempdir().unwrap();
    let (files, server) = setup(tmp.path());
    let local = local_run(tmp.path(), &files);
    server.set_faults(Faults {
        status_503_every: Some(5),
        reset_every: Some(7),
        truncate_every: Some(11),
        stall_every: Some((13, Duration::from_millis(2500))),
        always_503: None,
        ..Faults::default()
    });
    let remote = tmp.path().join("remote");
    let endpoint = server.endpoint();
    let out = run_ok(&remote_args(&endpoint, &remote, &["--http-timeout", "1"]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("HTTP 503") && stderr.contains("retry"), "{stderr}");
    assert_eq!(shard_bytes(&remote), shard_bytes(&local));
    let log = server.log();
    assert!(log.iter().any(|r| r.status == 503));
    assert!(log.iter().any(|r| r.range.is_some_and(|(a, b)| r.sent < b - a)), "some bodies were cut");
    assert!(log.iter().all(|r| !r.path.contains("/resolve/") || r.range.is_some()));
}

#[test]
fn a_file_that_keeps_failing_fails_the_run_or_is_skipped() {
    let tmp = tempfile::tempdir().unwrap();
    let (files, server) = setup(tmp.path());
    server.set_faults(Faults { always_503: Some("001_00000".into()), ..Faults::default() });
    let endpoint = server.endpoint();

    let failed = tmp.path().join("failed");
    let err = run_err(&remote_args(&endpoint, &failed, &["--retries", "3"]));
    assert!(
        err.contains("sample/10BT/001_00000.parquet") && err.contains("HTTP 503") && err.contains("giving up after 3"),
        "{err}"
    );
    assert!(temporaries(&failed).is_empty());

    let skipped = tmp.path().join("skipped");
    run_ok(&remote_args(&endpoint, &skipped, &["--retries", "3", "--on-error", "skip"]));
    let m = manifest(&skipped);
    assert_eq!(m.skipped_files.len(), 1);
    assert_eq!((m.skipped_files[0].name.as_str(), m.skipped_files[0].from_row), ("sample/10BT/001_00000.parquet", 0));
    // Equal to a local run over the two other files.
    let others = local_run(tmp.path(), &[files[0].clone(), files[2].clone()]);
    for split in Split::ALL {
        assert_eq!(stream(&skipped, split), stream(&others, split));
    }
}

#[test]
fn endpoint_and_token_come_from_the_environment_and_the_token_is_never_printed() {
    let tmp = tempfile::tempdir().unwrap();
    let (_files, server) = setup(tmp.path());
    let data = tmp.path().join("data");
    let mut args: Vec<&str> = SMALL.to_vec();
    args.extend(["--data-dir", p(&data), "--max-tokens", "3000", "--log-every", "0"]);
    let secret = "hf_testsecret_0123456789";
    let out = pipeline()
        .args(&args)
        .env("HF_ENDPOINT", server.endpoint())
        .env("HF_TOKEN", secret)
        .env("RUST_LOG", "debug")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains(secret), "the token leaked into the log");
    let log = server.log();
    assert!(log.iter().all(|r| r.auth.as_deref() == Some(&format!("Bearer {secret}")[..])), "{log:?}");
}
