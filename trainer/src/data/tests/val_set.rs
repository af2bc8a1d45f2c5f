//! The fixed validation set.

use mamba_shards::format::Split;

use super::*;
use crate::data::{load_val_chunks, load_val_set, DataError, ValChunks, ValSetState};

#[test]
fn val_chunks_are_the_first_chunks_of_val_shards_in_seq_order() {
    let dir = tempfile::tempdir().unwrap();
    assert!(load_val_chunks(dir.path(), SEQ_LEN, VOCAB as usize, 10).unwrap().is_empty(), "no val shard: empty set");
    write_shard(dir.path(), Split::Train, 0, 4); // not val
    write_shard(dir.path(), Split::Val, 3, 2);
    write_shard(dir.path(), Split::Val, 1, 3);
    let got = load_val_chunks(dir.path(), SEQ_LEN, VOCAB as usize, 4).unwrap();
    let expected: Vec<Vec<u32>> = [(1, 0), (1, 1), (1, 2), (3, 0)].iter().map(|&(s, k)| chunk(s, k)).collect();
    assert_eq!(got, expected);
    assert_eq!(load_val_chunks(dir.path(), SEQ_LEN, VOCAB as usize, 100).unwrap().len(), 5);
    assert!(load_val_chunks(dir.path(), SEQ_LEN, VOCAB as usize, 0).unwrap().is_empty());
}

#[test]
fn bad_val_shards_are_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_shard(dir.path(), Split::Val, 0, 3);
    let e = load_val_chunks(dir.path(), SEQ_LEN + 1, VOCAB as usize, 3).unwrap_err();
    assert!(
        matches!(e, DataError::WrongChunkTokens { .. }) && e.to_string().contains(&path.display().to_string()),
        "{e}"
    );
    corrupt_frame(&path, 1);
    let e = load_val_chunks(dir.path(), SEQ_LEN, VOCAB as usize, 3).unwrap_err();
    assert!(e.to_string().contains(&path.display().to_string()) && e.to_string().contains("chunk 1"), "{e}");
    // Only the chunks that are used are read.
    assert_eq!(load_val_chunks(dir.path(), SEQ_LEN, VOCAB as usize, 1).unwrap(), vec![chunk(0, 0)]);
}

/// Writes the pipeline's manifest with `val_set` (and `finished`).
fn manifest_with_set(dir: &std::path::Path, finished: bool, set: Option<mamba_shards::manifest::ValSet>) {
    write_manifest(dir, finished, params());
    let mut m = mamba_shards::Manifest::read(dir).unwrap().unwrap();
    m.val_set = set;
    m.fingerprint.val_tokens = 5 * SEQ_LEN as u64;
    m.write(dir).unwrap();
}

fn ready(state: ValSetState) -> ValChunks {
    match state {
        ValSetState::Ready(v) => v,
        ValSetState::Pending(why) => panic!("pending: {why}"),
    }
}

/// The manifest's set is used, whatever else was published: shards 0..S, its first K chunks.
#[test]
fn the_manifest_fixes_the_val_set_and_later_val_shards_do_not_change_it() {
    use mamba_shards::manifest::ValSet;
    let dir = tempfile::tempdir().unwrap();
    let load = |max| load_val_set(dir.path(), SEQ_LEN, VOCAB as usize, max).unwrap();
    // Nothing yet (a follow run before the pipeline started): pending.
    assert!(matches!(load(10), ValSetState::Pending(_)));
    write_shard(dir.path(), Split::Val, 0, 3);
    manifest_with_set(dir.path(), false, None);
    match load(10) {
        ValSetState::Pending(why) => assert!(why.contains("0 of the 5 val set chunks"), "{why}"),
        other => panic!("{other:?}"),
    }
    write_shard(dir.path(), Split::Val, 1, 2);
    manifest_with_set(dir.path(), false, Some(ValSet { chunks: 5, shards: 2 }));
    let set = ready(load(100));
    let expected: Vec<Vec<u32>> = [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)].iter().map(|&(s, k)| chunk(s, k)).collect();
    assert_eq!((set.chunks.clone(), set.set_chunks), (expected.clone(), Some(5)));
    assert_eq!(set.digest, crate::data::val_digest(&expected));
    // Later (hash-selected) val shards and the end of the pipeline change nothing.
    write_shard(dir.path(), Split::Val, 2, 4);
    manifest_with_set(dir.path(), true, Some(ValSet { chunks: 5, shards: 2 }));
    assert_eq!(ready(load(100)), set);
    let four = ready(load(4));
    assert_eq!((four.chunks.len(), four.set_chunks), (4, Some(5)));
    assert_ne!(four.digest, set.digest);
    // A finished directory without a recorded set (version 1): the val shards on disk.
    manifest_with_set(dir.path(), true, None);
    let old = ready(load(100));
    assert_eq!((old.chunks.len(), old.set_chunks), (9, None));
}

#[test]
fn a_val_set_missing_from_disk_is_an_error_naming_the_manifest() {
    use mamba_shards::manifest::ValSet;
    let dir = tempfile::tempdir().unwrap();
    write_shard(dir.path(), Split::Val, 0, 3);
    manifest_with_set(dir.path(), false, Some(ValSet { chunks: 5, shards: 2 }));
    let e = load_val_set(dir.path(), SEQ_LEN, VOCAB as usize, 100).unwrap_err().to_string();
    assert!(e.contains("manifest.json") && e.contains("val-00000001.shard does not exist"), "{e}");
    assert_eq!(
        ready(load_val_set(dir.path(), SEQ_LEN, VOCAB as usize, 3).unwrap()).chunks.len(),
        3,
        "only what is used is read"
    );
    write_shard(dir.path(), Split::Val, 1, 1);
    let e = load_val_set(dir.path(), SEQ_LEN, VOCAB as usize, 100).unwrap_err().to_string();
    assert!(e.contains("manifest.json") && e.contains("hold only 4"), "{e}");
}
