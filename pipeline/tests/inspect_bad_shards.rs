//! `pipeline inspect` (the binary) on hostile shard files: every corruption gives a non-zero exit
//! and a message naming the file, never a panic or an abort (issue 19, item 8).
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use mamba_shards::format::Split;
use mamba_shards::testing::{hostile_shards, HostileShard};
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
    for HostileShard { what, bytes, word } in hostile_shards(&good) {
        std::fs::write(&path, &bytes).unwrap();
        for target in [dir.path(), path.as_path()] {
            let (ok, out) = inspect(target);
            assert!(!ok, "{what}: inspect {} succeeded: {out}", target.display());
            assert!(out.contains("train-00000000.shard") && out.contains(word), "{what}: {out}");
            assert!(!out.contains("panicked at"), "{what}: {out}");
        }
    }
}
