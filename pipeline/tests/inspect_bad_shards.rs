//! `pipeline inspect` (the binary) on hostile shard files: every corruption gives a non-zero exit
//! and a message naming the file, never a panic or an abort (issue 19, item 8).
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use mamba_shards::format::Split;
use mamba_shards::{ShardParams, ShardWriter};

const PARAMS: ShardParams = ShardParams::new(16, 50257, 50256);

fn good_shard(dir: &Path) -> PathBuf {
    let mut w = ShardWriter::create(dir, Split::Train, 0, 0, PARAMS, 3).unwrap();
    for k in 0..4u32 {
        let chunk: Vec<u32> = (0..PARAMS.chunk_tokens() as u32).map(|i| (k * 131 + i * 7) % 50000).collect();
        w.push_chunk(&chunk).unwrap();
    }
    w.finish().unwrap()
}

fn inspect(path: &Path) -> (bool, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_pipeline")).arg("inspect").arg(path).output().unwrap();
    (o.status.success(), format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))
}

#[test]
fn inspect_reports_hostile_shards_by_name_without_panicking() {
    let dir = tempfile::tempdir().unwrap();
    let path = good_shard(dir.path());
    let good = std::fs::read(&path).unwrap();
    let (ok, out) = inspect(dir.path());
    assert!(ok, "{out}");
    let index_offset = u64::from_le_bytes(good[32..40].try_into().unwrap()) as usize;
    let frame1 = u64::from_le_bytes(good[index_offset + 8..index_offset + 16].try_into().unwrap()) as usize;
    let set = |at: usize, v: &[u8]| {
        let mut b = good.clone();
        b[at..at + v.len()].copy_from_slice(v);
        b
    };
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("index_offset near 2^64", set(32, &(u64::MAX - 7).to_le_bytes()), "index_offset"),
        ("chunk_tokens 50,000,001", set(16, &50_000_001u32.to_le_bytes()), "chunk_tokens"),
        ("n_chunks 2^32 - 1", set(20, &u32::MAX.to_le_bytes()), "n_chunks"),
        ("vocab_size 2^32 - 1", set(24, &u32::MAX.to_le_bytes()), "vocab_size"),
        ("index entry past the file", set(index_offset + 8, &u64::MAX.to_le_bytes()), "entry 1"),
        ("corrupt frame", set(frame1 + 6, &[0xff, 0xff, 0xff]), "chunk 1"),
        ("3000-byte file", good[..3000].to_vec(), "truncated"),
    ];
    for (what, bytes, word) in cases {
        std::fs::write(&path, &bytes).unwrap();
        for target in [dir.path(), path.as_path()] {
            let (ok, out) = inspect(target);
            assert!(!ok, "{what}: inspect {} succeeded: {out}", target.display());
            assert!(out.contains("train-00000000.shard") && out.contains(word), "{what}: {out}");
            assert!(!out.contains("panicked at"), "{what}: {out}");
        }
    }
}
