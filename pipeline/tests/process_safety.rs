//! The `pipeline` binary as a process (issue 19, items 6, 7, 9): one SIGINT/SIGTERM stops it
//! within 2 s from every wait (a stalled listing, a stalled body, a retry backoff, a full ring)
//! with exit status 128 + signal and a consistent data dir; a second signal exits at once; a
//! second pipeline on a data dir is refused naming the first one's pid, and a `kill -9`ed one
//! leaves no stale lock; flags that overflow or cannot be allocated are refused by name.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::ExitStatus;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::time::{Duration, Instant};

use common::{p, pipeline, tiny, SMALL};
use mamba_shards::dir_lock::{DirLock, PIPELINE_LOCK};
use mamba_shards::testing::Running;
use mamba_shards::Manifest;

/// From the signal to the process's exit, at most.
const STOP_WITHIN: Duration = Duration::from_secs(2);

// ---- a running pipeline ----------------------------------------------------------------------

/// `pipeline ARGS` with `env` added, running (output collected: [`Running`]).
fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Running {
    let mut cmd = pipeline();
    cmd.args(args).envs(env.iter().copied());
    Running::start(cmd)
}

fn start(args: &[&str]) -> Running {
    start_with_env(args, &[])
}

fn assert_stopped_by(status: ExitStatus, elapsed: Duration, log: &str, code: i32) {
    assert_eq!(status.code(), Some(code), "exit status {status:?}:\n{log}");
    assert!(elapsed < STOP_WITHIN, "exited {elapsed:?} after the signal:\n{log}");
}

/// A data dir a stopped pipeline leaves: a readable manifest, no temporaries.
fn assert_consistent(dir: &Path) {
    Manifest::read(dir).unwrap().expect("manifest.json");
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!name.ends_with(".tmp"), "temporary file {name} left in {}", dir.display());
    }
}

// ---- a loopback Hub that stalls --------------------------------------------------------------

#[derive(Clone, Copy, PartialEq)]
enum Stall {
    /// The tree listing never answers.
    Listing,
    /// File reads answer 206, send 10 bytes, then nothing.
    Body,
    /// File reads answer 503 with `Retry-After: 30` (a 30 s backoff).
    Backoff,
    /// Every request but the listing never answers (a model-file download that stalls).
    Download,
}

/// The size the listing claims for its one parquet file.
const FILE_SIZE: u64 = 1 << 20;

/// Serves one dataset file whose reads misbehave as `stall` says; reports on the channel when a
/// request has reached its stall (or backoff answer). Connections are held for 60 s.
fn stalling_hub(stall: Stall) -> (SocketAddr, Receiver<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for sock in listener.incoming().map_while(Result::ok) {
            let tx = tx.clone();
            std::thread::spawn(move || serve(sock, stall, &tx));
        }
    });
    (addr, rx)
}

fn serve(mut sock: TcpStream, stall: Stall, reached: &Sender<()>) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
        match sock.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let target = head.split(' ').nth(1).unwrap_or("/").to_string();
    let hold = || std::thread::sleep(Duration::from_secs(60));
    if target.starts_with("/api/") {
        if stall == Stall::Listing {
            let _ = reached.send(());
            return hold();
        }
        let body = serde_json::json!([{ "type": "file", "oid": "1", "size": FILE_SIZE, "path": "sample/10BT/000_00000.parquet" }]).to_string();
        let _ = write!(sock, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
        return;
    }
    if stall == Stall::Download {
        let _ = reached.send(());
        return hold();
    }
    let range = head.lines().find_map(|l| l.to_ascii_lowercase().strip_prefix("range: bytes=").map(str::to_string));
    let (start, end) = range
        .and_then(|r| {
            r.trim().split_once('-').and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?)))
        })
        .unwrap_or((0, FILE_SIZE - 1));
    if stall == Stall::Backoff {
        let _ = sock.write_all(
            b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 30\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
        let _ = reached.send(());
        return hold();
    }
    let _ = write!(sock, "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {start}-{end}/{FILE_SIZE}\r\nConnection: close\r\n\r\n", end + 1 - start);
    let _ = sock.write_all(&[0u8; 10]);
    let _ = sock.flush();
    let _ = reached.send(());
    hold();
}

/// A pipeline reading from `hub` into `dir`, with timeouts far longer than the test.
fn hub_pipeline(addr: SocketAddr, dir: &Path) -> Running {
    let endpoint = format!("http://{addr}");
    start(&[
        "--endpoint",
        &endpoint,
        "--data-dir",
        p(dir),
        "--http-timeout",
        "600",
        "--retries",
        "5",
        "--quiet",
        "--threads=1",
    ])
}

fn stop_while(stall: Stall, sig: &str, code: i32) -> tempfile::TempDir {
    let (addr, reached) = stalling_hub(stall);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let run = hub_pipeline(addr, &dir);
    reached
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("the pipeline never reached the stall:\n{}", run.log()));
    std::thread::sleep(Duration::from_millis(300));
    let (status, elapsed, log) = run.stop(sig);
    assert_stopped_by(status, elapsed, &log, code);
    tmp
}

// ---- signals ---------------------------------------------------------------------------------

#[test]
fn sigterm_stops_a_stalled_listing_at_once_with_status_143() {
    let tmp = stop_while(Stall::Listing, "TERM", 143);
    assert!(!tmp.path().join("data/manifest.json").exists(), "nothing is written before the listing");
}

#[test]
fn sigterm_stops_a_stalled_body_read_at_once_with_status_143_and_a_consistent_dir() {
    let tmp = stop_while(Stall::Body, "TERM", 143);
    assert_consistent(&tmp.path().join("data"));
}

#[test]
fn sigint_stops_a_retry_backoff_at_once_with_status_130() {
    let tmp = stop_while(Stall::Backoff, "INT", 130);
    assert_consistent(&tmp.path().join("data"));
}

#[test]
fn sigterm_stops_a_stalled_tokenizer_download_at_once_with_status_143() {
    let (addr, reached) = stalling_hub(Stall::Download);
    let tmp = tempfile::tempdir().unwrap();
    let endpoint = format!("http://{addr}");
    let data = tmp.path().join("data");
    let run = start_with_env(
        &["--endpoint", &endpoint, "--tokenizer", "someone/tok", "--data-dir", p(&data), "--quiet", "--threads=1"],
        &[("HF_HOME", p(&tmp.path().join("hf-home")))],
    );
    reached
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("the pipeline never asked for tokenizer.json:\n{}", run.log()));
    std::thread::sleep(Duration::from_millis(300));
    let (status, elapsed, log) = run.stop("TERM");
    assert_stopped_by(status, elapsed, &log, 143);
}

/// A pipeline with a ring of one slot and no trainer: it publishes train shard 0 and waits.
fn full_ring(dir: &Path) -> Running {
    let mut args = vec!["--input", tiny(), "--data-dir", p(dir), "--ring-slots", "1"];
    args.extend(SMALL);
    let run = start(&args);
    run.wait_for_line("full, waiting for trainer");
    run
}

#[test]
fn sigint_stops_a_pipeline_waiting_on_a_full_ring_with_status_130() {
    let tmp = tempfile::tempdir().unwrap();
    let run = full_ring(tmp.path());
    let (status, elapsed, log) = run.stop("INT");
    assert_stopped_by(status, elapsed, &log, 130);
    assert_consistent(tmp.path());
    let m = Manifest::read(tmp.path()).unwrap().unwrap();
    assert_eq!((m.train.next_seq, m.finished), (1, false), "one published shard, resumable");
    assert!(tmp.path().join("train-00000000.shard").is_file());
}

#[test]
fn a_second_signal_exits_at_once_with_128_plus_that_signal() {
    let tmp = tempfile::tempdir().unwrap();
    let run = full_ring(tmp.path());
    // The second signal comes before the first one's orderly stop (up to a 100 ms poll) is done.
    let (status, elapsed, log) = run.stop_twice("INT", "TERM");
    assert_stopped_by(status, elapsed, &log, 143);
    assert!(log.contains("second stop signal"), "{log}");
}

// ---- the data dir lock -------------------------------------------------------------------------

#[test]
fn a_second_pipeline_on_a_data_dir_is_refused_with_the_first_ones_pid() {
    let tmp = tempfile::tempdir().unwrap();
    let first = full_ring(tmp.path());
    let before: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    let t = Instant::now();
    let mut args = vec!["--input", tiny(), "--data-dir", p(tmp.path()), "--ring-slots", "1"];
    args.extend(SMALL);
    let second = pipeline().args(&args).output().unwrap();
    let err = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("pid {}", first.child.id())) && err.contains("pipeline.lock"), "{err}");
    assert!(t.elapsed() < Duration::from_secs(30), "refused at once, not after waiting");
    let after: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(before, after, "the refused pipeline touched nothing");
    let (status, _, log) = first.stop("TERM");
    assert_eq!(status.code(), Some(143), "{log}");
}

#[test]
fn a_killed_pipeline_leaves_no_stale_lock() {
    let tmp = tempfile::tempdir().unwrap();
    let mut run = full_ring(tmp.path());
    let err = DirLock::acquire(tmp.path(), PIPELINE_LOCK, "pipeline").unwrap_err().to_string();
    assert!(err.contains(&format!("pid {}", run.child.id())), "{err}");
    run.signal("KILL");
    run.wait_at_most(Duration::from_secs(10));
    DirLock::acquire(tmp.path(), PIPELINE_LOCK, "pipeline").expect("the OS dropped the dead process's lock");
}

// ---- flags -------------------------------------------------------------------------------------

/// Runs the pipeline with `args` (nothing to read: it must fail before reading) and returns its
/// stderr after checking it failed within 30 s.
fn refused(args: &[&str]) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let mut all = vec!["--input", tiny(), "--data-dir", p(tmp.path()), "--quiet"];
    all.extend(args);
    let t = Instant::now();
    let out = pipeline().args(&all).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success() && t.elapsed() < Duration::from_secs(30), "{args:?}: {:?}\n{err}", out.status);
    assert!(!tmp.path().join("manifest.json").exists(), "{args:?}: nothing is written");
    err
}

#[test]
fn flags_that_overflow_or_cannot_be_allocated_are_refused_by_name() {
    let err = refused(&["--seq-len", "4294967295"]);
    assert!(err.contains("--seq-len") && err.contains("1..=1048576"), "{err}");
    let err = refused(&["--seq-len", "0"]);
    assert!(err.contains("--seq-len") && err.contains("1..=1048576"), "{err}");
    let err = refused(&["--chunks-per-shard", "4294967295"]);
    assert!(err.contains("--chunks-per-shard") && err.contains("1..=1048576"), "{err}");
    let err = refused(&["--chunks-per-shard", "1048576", "--seq-len", "1048576"]);
    assert!(err.contains("--chunks-per-shard 1048576 × --seq-len 1048576") && err.contains("134217728"), "{err}");
    let err = refused(&["--zstd-level", "1000"]);
    assert!(err.contains("--zstd-level 1000 is out of range"), "{err}");
    let err = refused(&["--threads", "1000000000"]);
    assert!(err.contains("--threads") && err.contains("1..=1024"), "{err}");
    let err = refused(&["--http-timeout", "0"]);
    assert!(err.contains("--http-timeout") && err.contains("1..=86400"), "{err}");
    let err = refused(&["--log-every", "18446744073709551615"]);
    assert!(err.contains("--log-every") && err.contains("0..=86400"), "{err}");
    let err = refused(&["--retries", "4294967295"]);
    assert!(err.contains("--retries") && err.contains("1..=1000"), "{err}");
    // The same bounds hold for values from a config file.
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("run.toml");
    std::fs::write(&file, "seq-len = 4294967295\n").unwrap();
    let err = refused(&["--config", p(&file)]);
    assert!(err.contains("run.toml") && err.contains("--seq-len") && err.contains("1..=1048576"), "{err}");
}
