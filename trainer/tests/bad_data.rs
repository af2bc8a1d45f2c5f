//! Bad data reaches the user as a clear error naming the file (and the chunk), through
//! `trainer train`'s code path: wrong magic/version/vocab/seq-len, truncated file, corrupt frame.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};

use common::*;
use mamba_shards::format::Split;
use mamba_shards::testing::{hostile_shards, HostileShard};
use mamba_trainer::config::TrainConfig;

const SEQ: usize = 16;

fn setup() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    synthetic_shards(dir.path(), 64, SEQ, 60, 4, 20);
    let shard = dir.path().join("train-00000001.shard");
    assert!(shard.is_file());
    (dir, shard)
}

fn train_err(data: &Path, model: &str) -> String {
    init_tracing();
    let out = tempfile::tempdir().unwrap();
    let cfg = TrainConfig { steps: 40, ..tiny_config(data, out.path(), model) };
    format!("{:#}", mamba_trainer::train::run(&cfg, &no_stop()).expect_err("training on bad data must fail"))
}

fn patch(path: &Path, offset: usize, bytes: &[u8]) {
    let mut b = std::fs::read(path).unwrap();
    b[offset..offset + bytes.len()].copy_from_slice(bytes);
    std::fs::write(path, b).unwrap();
}

#[test]
fn wrong_magic() {
    let (dir, shard) = setup();
    patch(&shard, 0, b"NOTSHARD");
    let e = train_err(dir.path(), "micro");
    assert!(e.contains("train-00000001.shard") && e.contains("magic"), "{e}");
}

#[test]
fn wrong_version() {
    let (dir, shard) = setup();
    patch(&shard, 8, &9u32.to_le_bytes());
    let e = train_err(dir.path(), "micro");
    assert!(e.contains("train-00000001.shard") && e.contains("version"), "{e}");
}

#[test]
fn vocabulary_larger_than_the_model() {
    let dir = tempfile::tempdir().unwrap();
    synthetic_shards(dir.path(), 1000, SEQ, 8, 2, 20);
    let e = train_err(dir.path(), "micro");
    assert!(e.contains("train-00000000.shard") && e.contains("1000") && e.contains("64"), "{e}");
}

#[test]
fn mixed_sequence_lengths() {
    let (dir, _) = setup();
    let other = tempfile::tempdir().unwrap();
    synthetic_shards(other.path(), 64, SEQ * 2, 10, 2, 20);
    std::fs::copy(
        other.path().join(mamba_shards::shard_file_name(Split::Train, 0)),
        dir.path().join("train-00000007.shard"),
    )
    .unwrap();
    let e = train_err(dir.path(), "micro");
    assert!(e.contains("train-00000007.shard"), "{e}");
}

#[test]
fn truncated_file() {
    let (dir, shard) = setup();
    let len = std::fs::metadata(&shard).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&shard).unwrap();
    f.set_len(len - 20).unwrap();
    let e = train_err(dir.path(), "micro");
    assert!(e.contains("train-00000001.shard") && e.contains("truncated"), "{e}");
}

#[test]
fn corrupt_frame_names_file_and_chunk() {
    let (dir, shard) = setup();
    let reader = mamba_shards::ShardReader::open(&shard).unwrap();
    drop(reader);
    // Frame 3 starts after the header and frames 0..3; find it from the index at the end.
    let bytes = std::fs::read(&shard).unwrap();
    let index_offset = u64::from_le_bytes(bytes[32..40].try_into().unwrap()) as usize;
    let off = |k: usize| {
        u64::from_le_bytes(bytes[index_offset + 8 * k..index_offset + 8 * k + 8].try_into().unwrap()) as usize
    };
    let (start, end) = (off(3), off(4));
    let mid = (start + end) / 2;
    patch(&shard, mid, &[bytes[mid] ^ 0xff, bytes[mid + 1] ^ 0xff]);
    let e = train_err(dir.path(), "micro");
    assert!(e.contains("train-00000001.shard") && e.contains("chunk 3"), "{e}");
}

// ---- a corrupt chunk in static training: checkpoint, clear error, `--on-bad-chunk skip` -------

fn trainer(data: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_trainer"));
    c.env("RUST_LOG", "info").args(["train", "--data"]).arg(data).arg("--out").arg(out);
    c.args([
        "--model",
        "micro",
        "--steps",
        "30",
        "--micro-batch",
        "2",
        "--grad-accum",
        "1",
        "--eval-chunks",
        "2",
        "--eval-every",
        "0",
        "--save-every",
        "0",
        "--warmup",
        "1",
    ]);
    c.args(extra).output().unwrap()
}

/// (step, loss, skipped_chunks) of every step record in `out`'s metrics.jsonl.
fn step_records(out: &Path) -> Vec<(u64, f64, u64)> {
    let records = mamba_trainer::metrics::read_jsonl(&out.join("metrics.jsonl")).unwrap();
    records
        .iter()
        .filter(|r| r["kind"] == "step")
        .map(|r| {
            (
                r["step"].as_u64().unwrap(),
                r["loss"].as_f64().unwrap(),
                r.get("skipped_chunks").map_or(0, |n| n.as_u64().unwrap()),
            )
        })
        .collect()
}

fn checkpoints(out: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("ckpt-"))
        .collect();
    v.sort();
    v
}

#[test]
fn a_corrupt_chunk_saves_a_checkpoint_names_shard_and_chunk_and_can_be_skipped_on_resume() {
    // 60 train chunks in 3 shards: 30 steps of 2 chunks read every chunk once.
    let (dir, shard) = setup();
    let bytes = std::fs::read(&shard).unwrap();
    let index_offset = u64::from_le_bytes(bytes[32..40].try_into().unwrap()) as usize;
    let off = |k: usize| {
        u64::from_le_bytes(bytes[index_offset + 8 * k..index_offset + 8 * k + 8].try_into().unwrap()) as usize
    };
    let mid = (off(3) + off(4)) / 2;
    patch(&shard, mid, &[bytes[mid] ^ 0xff]);

    // Default (fail): non-zero exit naming shard and chunk, after a checkpoint of the last step.
    let out = tempfile::tempdir().unwrap();
    let o = trainer(dir.path(), out.path(), &[]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{stderr}");
    assert!(
        stderr.contains("train-00000001.shard") && stderr.contains("chunk 3") && stderr.contains("--on-bad-chunk skip"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked at"), "{stderr}");
    let done = step_records(out.path());
    let last = done.len();
    assert!(last < 30, "the corrupt chunk is read within the epoch");
    assert_eq!(checkpoints(out.path()), vec![format!("ckpt-{last:06}")], "a checkpoint of the last completed step");
    assert!(stderr.contains(&format!("checkpoint of step {last} is saved")), "{stderr}");

    // `--resume --on-bad-chunk skip`: gets past it, finishes, and counts the skip.
    let o = trainer(dir.path(), out.path(), &["--resume", "--on-bad-chunk", "skip"]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{stdout}{}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout.contains("left out 1 corrupt chunks"), "{stdout}");
    assert!(
        stdout.contains("leaving out chunk 3 of") && stdout.contains("train-00000001.shard"),
        "the warning names it: {stdout}"
    );
    let resumed = step_records(out.path());
    assert_eq!(resumed.len(), 30);
    assert_eq!(resumed.iter().map(|r| r.2).sum::<u64>(), 1, "skipped_chunks in metrics.jsonl");
    assert_eq!(resumed[last].2, 1, "counted in the step that would have read it");

    // The same run skipping from the start reads the very same rows: identical losses.
    let fresh = tempfile::tempdir().unwrap();
    let o = trainer(dir.path(), fresh.path(), &["--on-bad-chunk", "skip"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(step_records(fresh.path()), resumed, "skip, then resume, is the uninterrupted run");
}

// ---- `trainer eval` (the binary) on hostile shard files ------------------------------------------

#[test]
fn eval_reports_hostile_shards_by_name_without_panicking() {
    let (dir, _) = setup();
    let out = tempfile::tempdir().unwrap();
    mamba_trainer::train::run(&TrainConfig { steps: 1, ..tiny_config(dir.path(), out.path(), "micro") }, &no_stop())
        .unwrap();
    let val = dir.path().join("val-00000000.shard");
    let good = std::fs::read(&val).unwrap();
    for HostileShard { what, bytes, word } in hostile_shards(&good) {
        std::fs::write(&val, &bytes).unwrap();
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_trainer"))
            .args(["eval", "--checkpoint"])
            .arg(out.path())
            .arg("--data")
            .arg(dir.path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{what}: eval succeeded");
        assert!(stderr.contains("val-00000000.shard") && stderr.contains(word), "{what}: {stderr}");
        assert!(!stderr.contains("panicked at"), "{what}: {stderr}");
    }
}
