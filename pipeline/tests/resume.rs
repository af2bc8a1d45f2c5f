//! Crash safety and the ring: kill -9 at several moments then rerun gives byte-identical shards;
//! SIGINT stops cleanly; with `--ring-slots N` the pipeline waits for the trainer's release file.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::*;
use mamba_shards::ring::{list_shards, write_release, Release};
use mamba_shards::Split;

fn spawn(args: &[&str]) -> Child {
    pipeline().args(args).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("spawn pipeline")
}

/// Waits until `cond` holds (or the process exits); true if the condition was met.
fn wait_until(child: &mut Child, timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    while t.elapsed() < timeout {
        if cond() {
            return true;
        }
        if child.try_wait().expect("try_wait").is_some() {
            return cond();
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

fn n_shards(dir: &Path) -> usize {
    Split::ALL.iter().map(|&s| list_shards(dir, s).map(|v| v.len()).unwrap_or(0)).sum()
}

fn signal(child: &Child, sig: &str) {
    let ok = std::process::Command::new("kill").args([sig, &child.id().to_string()]).status().expect("kill").success();
    assert!(ok || sig == "-9");
}

#[test]
fn kill_9_at_any_moment_then_rerun_is_byte_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let (reference, data) = (tmp.path().join("reference"), tmp.path().join("data"));
    let base = [&SMALL[..], &["--input", tiny()]].concat();
    let reference_args = [&base[..], &["--data-dir", p(&reference)]].concat();
    run_ok(&reference_args);
    let total = n_shards(&reference);
    assert!(total > 100, "{total} shards");

    let args = [&base[..], &["--data-dir", p(&data)]].concat();
    // Kill right at the start (before anything is published), then at growing shard counts,
    // and once a few milliseconds after a publish (mid-shard, between rename and manifest, …).
    let mut kills = 0;
    for (target, extra_ms) in
        [(0, 0), (0, 40), (3, 0), (total / 5, 1), (total / 3, 3), (total / 2, 0), (total * 3 / 4, 2)]
    {
        let mut child = spawn(&args);
        let reached = wait_until(&mut child, Duration::from_secs(60), || n_shards(&data) >= target);
        std::thread::sleep(Duration::from_millis(extra_ms));
        let running = child.try_wait().unwrap().is_none();
        signal(&child, "-9");
        let _ = child.wait();
        if running && reached {
            kills += 1;
        }
        let m = mamba_shards::Manifest::read(&data).expect("the manifest is always readable");
        if let Some(m) = m {
            // Everything the manifest lists is published and valid.
            for split in Split::ALL {
                let on_disk = list_shards(&data, split).unwrap();
                assert!(on_disk.len() as u64 >= m.split(split).next_seq);
            }
        }
    }
    assert!(kills >= 4, "the run was killed mid-way at least 4 times ({kills})");
    let out = run_ok(&args);
    assert!(String::from_utf8_lossy(&out.stderr).contains("resuming") || kills == 0);
    assert!(temporaries(&data).is_empty(), "{:?}", temporaries(&data));
    assert_eq!(shard_bytes(&data), shard_bytes(&reference));
    let (a, b) = (manifest(&data), manifest(&reference));
    assert_eq!((a.train, a.val, a.finished), (b.train, b.val, b.finished));
}

#[test]
fn sigint_stops_cleanly_and_the_run_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let (reference, data) = (tmp.path().join("reference"), tmp.path().join("data"));
    let base = [&SMALL[..], &["--input", tiny()]].concat();
    run_ok(&[&base[..], &["--data-dir", p(&reference)]].concat());
    let args = [&base[..], &["--data-dir", p(&data)]].concat();
    let mut child = spawn(&args);
    assert!(wait_until(&mut child, Duration::from_secs(60), || n_shards(&data) >= 20));
    signal(&child, "-INT");
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.code() != Some(0) {
        assert_eq!(out.status.code(), Some(130), "{stderr}");
        assert!(stderr.contains("rerun the same command to resume"), "{stderr}");
        let m = manifest(&data);
        assert!(!m.finished);
        assert_eq!(list_shards(&data, Split::Train).unwrap().len() as u64, m.train.next_seq);
    }
    assert!(temporaries(&data).is_empty(), "{:?}", temporaries(&data));
    run_ok(&args);
    assert_eq!(shard_bytes(&data), shard_bytes(&reference));
}

#[test]
fn ring_waits_for_the_trainer_to_release_shards() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    write_corpus(&src, 1, 120, 20);
    let (offline, ring) = (tmp.path().join("offline"), tmp.path().join("ring"));
    let base = ["--seq-len", "64", "--chunks-per-shard", "8", "--val-tokens", "64", "--threads=2", "--input", p(&src)];
    run_ok(&[&base[..], &["--quiet", "--data-dir", p(&offline)]].concat());
    let total_train = list_shards(&offline, Split::Train).unwrap().len() as u64;
    assert!(total_train > 10);

    let mut child = spawn(&[&base[..], &["--data-dir", p(&ring), "--ring-slots", "3", "--log-every", "1"]].concat());
    let train =
        |d: &Path| list_shards(d, Split::Train).unwrap_or_default().into_iter().map(|(s, _)| s).collect::<Vec<_>>();
    assert!(wait_until(&mut child, Duration::from_secs(60), || train(&ring).len() >= 3));
    std::thread::sleep(Duration::from_millis(1500));
    assert!(child.try_wait().unwrap().is_none(), "the pipeline must wait, not finish");
    assert_eq!(train(&ring), vec![0, 1, 2], "backpressure: no fourth train shard before a release");

    // The trainer releases shards 0 and 1: they are deleted and 3, 4 appear.
    write_release(&ring, Release { train_released_below: 2 }).unwrap();
    assert!(wait_until(&mut child, Duration::from_secs(30), || train(&ring) == vec![2, 3, 4]));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(train(&ring), vec![2, 3, 4]);

    // A consumer that checks every shard against the offline corpus and releases it.
    let mut next = 2u64;
    let deadline = Instant::now() + Duration::from_secs(60);
    while next < total_train && Instant::now() < deadline {
        let path = ring.join(mamba_shards::shard_file_name(Split::Train, next));
        if path.exists() {
            assert_eq!(std::fs::read(&path).unwrap(), std::fs::read(offline.join(path.file_name().unwrap())).unwrap());
            next += 1;
            write_release(&ring, Release { train_released_below: next }).unwrap();
        } else {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    assert_eq!(next, total_train);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("ring 3/3 full, waiting for trainer"), "{stderr}");
    let m = manifest(&ring);
    assert!(m.finished && m.train.next_seq == total_train);
    // Val shards are never recycled.
    assert!(!list_shards(&ring, Split::Val).unwrap().is_empty());
    assert_eq!(list_shards(&ring, Split::Val).unwrap().len(), list_shards(&offline, Split::Val).unwrap().len());
}
