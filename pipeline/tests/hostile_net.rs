//! A hostile Hub endpoint (loopback only): the token goes to the endpoint's origin and nowhere
//! else, nothing a server sends decides a path on disk, and every listing and range read ends in
//! bounded time and memory with an error that names the file and byte. See docs/security.md.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use common::hub_server::{Faults, HubServer};
use common::*;

const SECRET: &str = "hf_hostile_test_secret_42";

/// Two small parquet files in the Hub layout, and the server.
fn server_on(ip: &'static str, tmp: &Path) -> HubServer {
    let files = write_corpus(&tmp.join(format!("src-{ip}")), 2, 120, 20);
    let served = files
        .iter()
        .map(|f| (format!("sample/10BT/{}", f.file_name().unwrap().to_string_lossy()), std::fs::read(f).unwrap()))
        .collect();
    HubServer::start_on(ip, served)
}

/// Runs the pipeline with `HF_TOKEN` set and `HF_HOME` in `tmp`; kills it (and fails the test)
/// if it runs longer than `limit`. Returns its output and how long it ran.
fn run_bounded(tmp: &Path, args: &[&str], limit: Duration) -> (Output, Duration) {
    let err_path = tmp.join(format!("stderr-{}.txt", std::process::id()));
    let mut child = pipeline()
        .args(args)
        .env("HF_TOKEN", SECRET)
        .env("HF_HOME", tmp.join("hf-home"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > limit {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!(
                "pipeline {args:?} still running after {limit:?}:\n{}",
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = std::fs::read(&err_path).unwrap();
    (Output { status, stdout: Vec::new(), stderr }, start.elapsed())
}

fn remote(endpoint: &str, data: &Path, extra: &[&'static str]) -> Vec<String> {
    let mut args: Vec<String> = SMALL.iter().map(|s| s.to_string()).collect();
    args.extend(["--endpoint", endpoint, "--data-dir", p(data), "--retry-backoff-ms", "5"].map(String::from));
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn expect_failure(tmp: &Path, args: &[String], limit: Duration) -> (String, Duration) {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (out, took) = run_bounded(tmp, &args, limit);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "should have failed:\n{stderr}");
    assert!(!stderr.contains(SECRET), "the token leaked into the log");
    (stderr, took)
}

#[test]
fn a_next_page_on_another_origin_is_refused_and_never_gets_the_token() {
    let tmp = tempfile::tempdir().unwrap();
    let a = server_on("127.0.0.1", tmp.path());
    let b = server_on("127.0.0.2", tmp.path());
    a.state().page_size = 1;
    a.state().next_page_base = Some(b.endpoint());
    let (err, _) =
        expect_failure(tmp.path(), &remote(&a.endpoint(), &tmp.path().join("d"), &[]), Duration::from_secs(60));
    assert!(err.contains("is not on the endpoint") && err.contains("127.0.0.2"), "{err}");
    assert!(b.log().is_empty(), "the other origin was asked: {:?}", b.log());
    assert!(a.log().iter().all(|r| r.auth.as_deref() == Some(&format!("Bearer {SECRET}")[..])));
}

#[test]
fn a_redirect_to_another_origin_gets_no_token_and_the_run_succeeds() {
    let tmp = tempfile::tempdir().unwrap();
    let a = server_on("127.0.0.1", tmp.path());
    // The same files on the other server (the "CDN").
    let b = HubServer::start_on("127.0.0.2", a.state().files.iter().map(|(k, v)| (k.clone(), v.to_vec())).collect());
    a.set_faults(Faults { redirect_resolve_to: Some(b.endpoint()), ..Faults::default() });
    let args = remote(&a.endpoint(), &tmp.path().join("d"), &["--max-tokens", "2000"]);
    let (out, _) =
        run_bounded(tmp.path(), &args.iter().map(String::as_str).collect::<Vec<_>>(), Duration::from_secs(60));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(a.log().iter().any(|r| r.status == 302) && !b.log().is_empty());
    assert!(a.log().iter().all(|r| r.auth.is_some()), "the endpoint gets the token: {:?}", a.log());
    assert!(b.log().iter().all(|r| r.auth.is_none()), "the token went to another origin: {:?}", b.log());
}

#[test]
fn a_stalled_listing_times_out_with_the_retry_policy() {
    let tmp = tempfile::tempdir().unwrap();
    let a = server_on("127.0.0.1", tmp.path());
    a.set_faults(Faults { stall_listing: Some(Duration::from_secs(120)), ..Faults::default() });
    let args = remote(&a.endpoint(), &tmp.path().join("d"), &["--http-timeout", "1", "--retries", "2"]);
    let (err, took) = expect_failure(tmp.path(), &args, Duration::from_secs(30));
    assert!(err.contains("/tree/main/sample/10BT") && err.contains("giving up after 2"), "{err}");
    assert_eq!(a.log().len(), 2, "two attempts: {:?}", a.log());
    assert!(took < Duration::from_secs(15), "{took:?}");
}

#[test]
fn an_endless_listing_stops_at_the_page_cap() {
    let tmp = tempfile::tempdir().unwrap();
    let a = server_on("127.0.0.1", tmp.path());
    a.set_faults(Faults { endless_listing: true, ..Faults::default() });
    let (err, _) =
        expect_failure(tmp.path(), &remote(&a.endpoint(), &tmp.path().join("d"), &[]), Duration::from_secs(60));
    assert!(err.contains("more than 1000 pages"), "{err}");
    assert_eq!(a.log().len(), 1000);
}

#[test]
fn a_trickling_server_fails_in_bounded_time_naming_the_file_and_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let a = server_on("127.0.0.1", tmp.path());
    // 10 bytes per request, then a stall: progress every time, so only a deadline ends it.
    a.set_faults(Faults { trickle: Some(10), ..Faults::default() });
    let args = remote(&a.endpoint(), &tmp.path().join("d"), &["--http-timeout", "1", "--retries", "3"]);
    let (err, took) = expect_failure(tmp.path(), &args, Duration::from_secs(40));
    assert!(
        err.contains("sample/10BT/000_00000.parquet") && err.contains("time budget") && err.contains("stopped at byte"),
        "{err}"
    );
    assert!(took < Duration::from_secs(20), "{took:?}");
}

#[test]
fn a_wrong_content_range_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let a = server_on("127.0.0.1", tmp.path());
    a.set_faults(Faults { shift_content_range: true, ..Faults::default() });
    let (err, _) =
        expect_failure(tmp.path(), &remote(&a.endpoint(), &tmp.path().join("d"), &[]), Duration::from_secs(60));
    assert!(
        err.contains("sample/10BT/000_00000.parquet") && err.contains("does not match the range asked for"),
        "{err}"
    );
}

#[test]
fn a_lying_footer_is_refused_before_it_is_fetched() {
    let tmp = tempfile::tempdir().unwrap();
    let footer = |len: u32| [len.to_le_bytes().as_slice(), b"PAR1"].concat();
    let cases = [
        // 80 MiB of metadata in a 100 MiB file: fits the file, not the cap.
        ((100u64 << 20), footer(80 << 20), "83886080 bytes of metadata, more than the 67108864 accepted"),
        // 4 GiB of metadata in a 1 MiB file.
        (1 << 20, footer(u32::MAX), "4294967295 bytes of metadata, more than the file's 1048576 bytes hold"),
    ];
    for (i, (size, tail, want)) in cases.into_iter().enumerate() {
        let a = HubServer::start(BTreeMap::new());
        a.state().virtual_files.insert("sample/10BT/000_lying.parquet".into(), (size, tail));
        let (err, _) = expect_failure(
            tmp.path(),
            &remote(&a.endpoint(), &tmp.path().join(format!("d{i}")), &[]),
            Duration::from_secs(60),
        );
        assert!(err.contains("sample/10BT/000_lying.parquet") && err.contains(want), "{err}");
        let reads: Vec<_> = a.log().into_iter().filter(|r| r.path.contains("/resolve/")).collect();
        assert_eq!(reads.len(), 1, "only the tail is read: {reads:?}");
        let (s, e) = reads[0].range.unwrap();
        assert_eq!((s, e), (size - 64 * 1024, size));
    }
}

/// GPT-2's tokenizer.json from ../shared, served as `owner/tok` with `headers`.
fn serve_tokenizer(server: &HubServer, headers: Vec<(String, String)>) {
    let bytes = std::fs::read(shared_dir().join("tokenizers/gpt2/tokenizer.json")).unwrap();
    server.state().model_files.insert("owner/tok/tokenizer.json".into(), (bytes, headers));
}

fn tokenizer_args(endpoint: &str, data: &Path) -> Vec<String> {
    let mut args: Vec<String> = SMALL.iter().map(|s| s.to_string()).collect();
    args.extend(
        [
            "--endpoint",
            endpoint,
            "--tokenizer",
            "owner/tok",
            "--data-dir",
            p(data),
            "--max-tokens",
            "2000",
            "--input",
            tiny(),
        ]
        .map(String::from),
    );
    args
}

#[test]
fn hub_tokenizer_headers_never_decide_a_path() {
    let tmp = tempfile::tempdir().unwrap();
    let a = HubServer::start(BTreeMap::new());
    let escape = tmp.path().join("escaped");
    let etag = tmp.path().join("etag-target");
    serve_tokenizer(
        &a,
        vec![
            ("X-Repo-Commit".into(), "../../../../escaped".into()),
            ("ETag".into(), format!("\"{}\"", etag.display())),
        ],
    );
    let (err, _) =
        expect_failure(tmp.path(), &tokenizer_args(&a.endpoint(), &tmp.path().join("d")), Duration::from_secs(60));
    assert!(err.contains("X-Repo-Commit") && err.contains("not a commit id"), "{err}");
    assert!(!escape.exists() && !etag.exists(), "a server header chose a path outside the cache");
    let hub = tmp.path().join("hf-home/hub/models--owner--tok");
    assert!(!hub.join("snapshots").exists() || std::fs::read_dir(hub.join("snapshots")).unwrap().count() == 0);
}

#[test]
fn a_hub_tokenizer_is_cached_under_its_commit_and_the_token_goes_only_to_the_endpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let a = HubServer::start(BTreeMap::new());
    let commit = "0123456789abcdef0123456789abcdef01234567";
    serve_tokenizer(&a, vec![("X-Repo-Commit".into(), commit.into()), ("ETag".into(), "\"/etc/passwd\"".into())]);
    for data in ["d1", "d2"] {
        let args = tokenizer_args(&a.endpoint(), &tmp.path().join(data));
        let (out, _) =
            run_bounded(tmp.path(), &args.iter().map(String::as_str).collect::<Vec<_>>(), Duration::from_secs(60));
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let cached = tmp.path().join(format!("hf-home/hub/models--owner--tok/snapshots/{commit}/tokenizer.json"));
    assert_eq!(
        std::fs::read(&cached).unwrap(),
        std::fs::read(shared_dir().join("tokenizers/gpt2/tokenizer.json")).unwrap()
    );
    assert_eq!(std::fs::read_to_string(tmp.path().join("hf-home/hub/models--owner--tok/refs/main")).unwrap(), commit);
    let log = a.log();
    assert_eq!(log.len(), 2, "{log:?}");
    assert!(log.iter().all(|r| r.path == "/owner/tok/resolve/main/tokenizer.json"
        && r.auth.as_deref() == Some(&format!("Bearer {SECRET}")[..])));
    // The second run used the cached copy: same shards.
    assert_eq!(shard_bytes(&tmp.path().join("d1")), shard_bytes(&tmp.path().join("d2")));
}
