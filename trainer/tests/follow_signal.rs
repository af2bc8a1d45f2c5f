//! Follow mode and signals (issue 5): a trainer blocked waiting for the pipeline stops at once when
//! the stop flag (SIGINT/SIGTERM in the binary) is raised, without counting the half-gathered step
//! as trained, saves a checkpoint that resumes exactly there, and a trainer started before the
//! data directory exists waits for it and stops cleanly too. The binary does the same on SIGINT or
//! SIGTERM within 2 s, with exit status 128 + signal, also beside a pipeline holding its data dir
//! lock (following is reading, not a second writer).
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::child::{trainer, Running};
use common::*;
use mamba_shards::dir_lock::{DirLock, PIPELINE_LOCK};
use mamba_shards::format::Split;
use mamba_shards::{ShardParams, ShardReader};
use mamba_trainer::config::{MicroBatch, TrainConfig};
use mamba_trainer::train::{run, StopReason};

const SEQ: usize = 16;

fn write_manifest(dir: &Path, finished: bool, params: ShardParams) {
    let mut m = mamba_shards::Manifest::for_hand_written_shards(params, 6, "trainer signal test");
    if finished {
        m.finish("end of source");
    }
    m.ring_slots = Some(3);
    m.write(dir).unwrap();
}

fn publish(src: &Path, dst: &Path, split: Split, seq: u64) {
    let name = mamba_shards::shard_file_name(split, seq);
    std::fs::copy(src.join(&name), dst.join(format!(".{name}.tmp"))).unwrap();
    std::fs::rename(dst.join(format!(".{name}.tmp")), dst.join(&name)).unwrap();
}

/// Raises the returned flag after `after`; returns it and when it was raised.
fn stop_after(after: Duration) -> (Arc<AtomicBool>, std::thread::JoinHandle<Instant>) {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(after);
        flag.store(true, Ordering::SeqCst);
        Instant::now()
    });
    (stop, t)
}

/// (shard, chunk) of every step record in the run's metrics.jsonl.
fn trained_chunks(out: &Path) -> Vec<(u64, u64)> {
    let mut got = Vec::new();
    for r in mamba_trainer::metrics::read_jsonl(&out.join("metrics.jsonl")).unwrap() {
        if r["kind"] == "step" {
            got.extend(
                r["chunks"].as_array().unwrap().iter().map(|c| (c[0].as_u64().unwrap(), c[1].as_u64().unwrap())),
            );
        }
    }
    got
}

#[test]
fn a_trainer_waiting_mid_step_stops_at_once_and_resumes_without_losing_or_repeating_a_chunk() {
    init_tracing();
    let staging = tempfile::tempdir().unwrap();
    synthetic_shards(staging.path(), 64, SEQ, 12, 4, 6); // train shards 0 and 1, 6 chunks each
    let params = *ShardReader::open(&staging.path().join("train-00000000.shard")).unwrap().header();
    let params = ShardParams::from_header(&params);
    let data = tempfile::tempdir().unwrap();
    publish(staging.path(), data.path(), Split::Val, 0);
    publish(staging.path(), data.path(), Split::Train, 0);
    write_manifest(data.path(), false, params);

    // 4 chunks per step: step 1 takes chunks 0..4 of shard 0, step 2 gets one batch (2 chunks)
    // and then waits for shard 1, which the "pipeline" does not publish yet.
    let out = tempfile::tempdir().unwrap();
    let cfg = TrainConfig {
        follow: true,
        steps: 1000,
        micro_batch: MicroBatch::Fixed(2),
        grad_accum: Some(2),
        ..tiny_config(data.path(), out.path(), "micro")
    };
    let (stop, raised) = stop_after(Duration::from_millis(2500));
    let outcome = run(&cfg, &stop).unwrap();
    let raised = raised.join().unwrap();
    assert!(raised.elapsed() < Duration::from_secs(2), "stopped {:?} after the signal", raised.elapsed());
    assert_eq!((outcome.stop, outcome.step), (StopReason::Signal, 1));
    let state = mamba_trainer::checkpoint::TrainerState::load(&out.path().join("ckpt-000001")).unwrap();
    assert_eq!(
        state.data_position["cursor"],
        serde_json::json!({"mode": "follow", "shard": 0, "chunk": 4}),
        "the half-gathered step is not counted"
    );
    assert_eq!(mamba_shards::ring::read_release(data.path()).unwrap(), None, "shard 0 is still needed");
    assert_eq!(trained_chunks(out.path()).len(), 4);

    // The pipeline publishes the rest and finishes; the resumed trainer reads every chunk left.
    publish(staging.path(), data.path(), Split::Train, 1);
    write_manifest(data.path(), true, params);
    let outcome = run(&TrainConfig { resume: true, ..cfg }, &no_stop()).unwrap();
    assert_eq!(outcome.stop, StopReason::DataExhausted);
    let mut got = trained_chunks(out.path());
    got.sort();
    let want: Vec<(u64, u64)> = (0..2).flat_map(|s| (0..6).map(move |c| (s, c))).collect();
    assert_eq!(got, want, "every chunk once over both runs");
    assert_eq!(mamba_shards::ring::read_release(data.path()).unwrap().unwrap().train_released_below, 2);
}

#[test]
fn a_trainer_started_before_the_data_dir_exists_waits_and_stops_cleanly() {
    init_tracing();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("not-yet");
    let out = tmp.path().join("run");
    let cfg = TrainConfig { follow: true, steps: 10, ..tiny_config(&data, &out, "micro") };
    let (stop, raised) = stop_after(Duration::from_millis(700));
    let outcome = run(&cfg, &stop).unwrap();
    assert!(raised.join().unwrap().elapsed() < Duration::from_secs(2));
    assert_eq!((outcome.stop, outcome.step), (StopReason::Signal, 0));
    // Without --follow a missing directory is an error naming it.
    let err = format!("{:#}", run(&TrainConfig { follow: false, ..cfg }, &no_stop()).unwrap_err());
    assert!(err.contains("not-yet"), "{err}");
}

#[test]
fn a_step_larger_than_the_ring_is_refused() {
    init_tracing();
    let staging = tempfile::tempdir().unwrap();
    synthetic_shards(staging.path(), 64, SEQ, 12, 4, 6);
    let params = *ShardReader::open(&staging.path().join("train-00000000.shard")).unwrap().header();
    let params = ShardParams::from_header(&params);
    let data = tempfile::tempdir().unwrap();
    publish(staging.path(), data.path(), Split::Train, 0);
    write_manifest(data.path(), false, params); // ring of 3 shards × 6 chunks
    let out = tempfile::tempdir().unwrap();
    let cfg = TrainConfig {
        follow: true,
        steps: 10,
        micro_batch: MicroBatch::Fixed(2),
        grad_accum: Some(10),
        ..tiny_config(data.path(), out.path(), "micro")
    };
    let err = format!("{:#}", run(&cfg, &no_stop()).unwrap_err());
    assert!(err.contains("20 chunks") && err.contains("--ring-slots"), "{err}");
}

/// `trainer train --follow` on `data` into `out`: 4 chunks per step of the micro model.
fn follow_binary(data: &Path, out: &Path) -> Running {
    let mut c = trainer();
    c.args(["train", "--follow", "--model", "micro", "--steps", "1000", "--micro-batch", "2", "--grad-accum", "2"]);
    c.args(["--eval-chunks", "4", "--eval-every", "0", "--save-every", "0", "--warmup", "2", "--data"])
        .arg(data)
        .arg("--out")
        .arg(out);
    Running::start(c)
}

#[test]
fn the_binary_waiting_for_shards_stops_on_sigint_within_2s_with_status_130_after_its_checkpoint() {
    let staging = tempfile::tempdir().unwrap();
    synthetic_shards(staging.path(), 64, SEQ, 12, 4, 6);
    let params = *ShardReader::open(&staging.path().join("train-00000000.shard")).unwrap().header();
    let params = ShardParams::from_header(&params);
    let data = tempfile::tempdir().unwrap();
    publish(staging.path(), data.path(), Split::Val, 0);
    publish(staging.path(), data.path(), Split::Train, 0);
    write_manifest(data.path(), false, params);
    // A running pipeline holds its lock on the data dir: a follower does not need it.
    let _pipeline = DirLock::acquire(data.path(), PIPELINE_LOCK, "pipeline").unwrap();

    // Step 1 trains on chunks 0..4 of shard 0; step 2 waits for shard 1.
    let out = tempfile::tempdir().unwrap();
    let run = follow_binary(data.path(), out.path());
    run.wait_for_line("trainer waiting for the pipeline to publish train shard 1");
    let (status, elapsed, log) = run.stop("INT");
    assert_eq!(status.code(), Some(130), "128 + SIGINT: {status:?}\n{log}");
    assert!(elapsed < Duration::from_secs(2), "stopped {elapsed:?} after the signal\n{log}");
    let state = mamba_trainer::checkpoint::TrainerState::load(&out.path().join("ckpt-000001")).unwrap();
    assert_eq!(state.data_position["cursor"], serde_json::json!({"mode": "follow", "shard": 0, "chunk": 4}), "{log}");
    assert!(!data.path().join(mamba_shards::ring::RELEASE_FILE).exists(), "shard 0 is still needed");
}

#[test]
fn the_binary_waiting_for_the_data_dir_stops_on_sigterm_within_2s_with_status_143() {
    let tmp = tempfile::tempdir().unwrap();
    let run = follow_binary(&tmp.path().join("not-yet"), &tmp.path().join("run"));
    run.wait_for_line("waiting for the pipeline to create the data directory");
    let (status, elapsed, log) = run.stop("TERM");
    assert_eq!(status.code(), Some(143), "128 + SIGTERM: {status:?}\n{log}");
    assert!(elapsed < Duration::from_secs(2), "stopped {elapsed:?} after the signal\n{log}");
    assert!(!tmp.path().join("not-yet").exists(), "the trainer creates no data dir");
}
