//! Bad data reaches the user as a clear error naming the file (and the chunk), through
//! `trainer train`'s code path: wrong magic/version/vocab/seq-len, truncated file, corrupt frame.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};

use common::*;
use mamba_shards::format::Split;
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
    std::fs::copy(other.path().join(mamba_shards::shard_file_name(Split::Train, 0)), dir.path().join("train-00000007.shard")).unwrap();
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
    let off = |k: usize| u64::from_le_bytes(bytes[index_offset + 8 * k..index_offset + 8 * k + 8].try_into().unwrap()) as usize;
    let (start, end) = (off(3), off(4));
    let mid = (start + end) / 2;
    patch(&shard, mid, &[bytes[mid] ^ 0xff, bytes[mid + 1] ^ 0xff]);
    let e = train_err(dir.path(), "micro");
    assert!(e.contains("train-00000001.shard") && e.contains("chunk 3"), "{e}");
}
