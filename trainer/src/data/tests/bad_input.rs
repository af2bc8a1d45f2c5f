//! Bad shards in static mode: each gives an error naming the file (and the chunk, for frames).

use mamba_shards::format::Split;
use mamba_shards::ShardError;

use super::*;
use crate::data::DataError;

/// A directory with one good shard and one shard at seq 1 that `spoil` damages.
fn with_bad_shard(spoil: impl FnOnce(&Path)) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    write_shard(dir.path(), Split::Train, 0, 3);
    let bad = write_shard(dir.path(), Split::Train, 1, 3);
    spoil(&bad);
    (dir, bad)
}

fn patch(path: &Path, at: usize, bytes: &[u8]) {
    let mut b = std::fs::read(path).unwrap();
    b[at..at + bytes.len()].copy_from_slice(bytes);
    std::fs::write(path, b).unwrap();
}

fn open_err(dir: &Path, seq_len: usize, vocab_size: usize) -> DataError {
    let s = DataSpec { seq_len, vocab_size, ..spec(dir, false, 1, 0) };
    TrainData::open(s, None).err().expect("open should fail")
}

fn assert_names(e: &DataError, path: &Path, words: &[&str]) {
    let msg = e.to_string();
    assert!(msg.contains(&path.display().to_string()), "message does not name {}: {msg}", path.display());
    for w in words {
        assert!(msg.contains(w), "message lacks {w:?}: {msg}");
    }
}

#[test]
fn wrong_magic_names_the_file() {
    let (dir, bad) = with_bad_shard(|p| patch(p, 0, b"NOTASHRD"));
    let e = open_err(dir.path(), SEQ_LEN, VOCAB as usize);
    assert!(matches!(e, DataError::Shard(ShardError::BadMagic { .. })), "{e:?}");
    assert_names(&e, &bad, &["magic"]);
}

#[test]
fn wrong_version_names_the_file() {
    let (dir, bad) = with_bad_shard(|p| patch(p, 8, &7u32.to_le_bytes()));
    let e = open_err(dir.path(), SEQ_LEN, VOCAB as usize);
    assert_names(&e, &bad, &["version 7"]);
}

#[test]
fn wrong_seq_len_names_the_file() {
    let (dir, _) = with_bad_shard(|_| {});
    let e = open_err(dir.path(), 15, VOCAB as usize);
    assert!(matches!(e, DataError::WrongChunkTokens { found: 8, expected: 16, seq_len: 15, .. }), "{e:?}");
    assert_names(&e, &dir.path().join("train-00000000.shard"), &["seq-len 15"]);
}

#[test]
fn vocab_larger_than_the_model_names_the_file() {
    let (dir, _) = with_bad_shard(|_| {});
    let e = open_err(dir.path(), SEQ_LEN, 999);
    assert!(matches!(e, DataError::VocabTooLarge { shard_vocab: 1000, model_vocab: 999, .. }), "{e:?}");
    assert_names(&e, &dir.path().join("train-00000000.shard"), &["1000", "999"]);
    // A model vocabulary padded above the shard's is fine.
    let s = DataSpec { vocab_size: 1008, ..spec(dir.path(), false, 1, 0) };
    assert!(TrainData::open(s, None).is_ok());
}

#[test]
fn truncated_file_names_the_file() {
    let (dir, bad) = with_bad_shard(|p| {
        let len = std::fs::metadata(p).unwrap().len();
        std::fs::OpenOptions::new().write(true).open(p).unwrap().set_len(len - 1).unwrap();
    });
    let e = open_err(dir.path(), SEQ_LEN, VOCAB as usize);
    assert_names(&e, &bad, &["truncated"]);
    // Shorter than a header, too.
    std::fs::write(&bad, b"MAMBASHD").unwrap();
    let e = open_err(dir.path(), SEQ_LEN, VOCAB as usize);
    assert_names(&e, &bad, &["truncated"]);
}

#[test]
fn corrupt_frame_names_file_and_chunk_when_it_is_read() {
    let (dir, bad) = with_bad_shard(|p| corrupt_frame(p, 2));
    // Static mode checks headers and indexes at open and frames when they are read.
    let mut data = TrainData::open(spec(dir.path(), false, 6, 0), None).unwrap();
    let Err(e) = data.next_batch() else { panic!("the batch holding the corrupt chunk must fail") };
    assert!(matches!(e, DataError::Shard(ShardError::CorruptChunk { chunk: 2, .. })), "{e:?}");
    assert_names(&e, &bad, &["chunk 2"]);
}

#[test]
fn skip_leaves_out_the_corrupt_chunk_keeps_the_order_and_resumes_identically() {
    use crate::data::OnBadChunk;
    // The reference: the same shards, intact, 3 epochs of 6 chunks.
    let good = tempfile::tempdir().unwrap();
    write_shard(good.path(), Split::Train, 0, 3);
    write_shard(good.path(), Split::Train, 1, 3);
    let reference = all_rows(&take(&mut TrainData::open(spec(good.path(), false, 1, 5), None).unwrap(), 18));
    let (dir, bad) = with_bad_shard(|p| corrupt_frame(p, 2));
    let expected: Vec<(u64, usize)> = reference.iter().copied().filter(|&id| id != (1, 2)).collect();
    assert_eq!(expected.len(), 15, "the bad chunk comes once per epoch");

    let skip = DataSpec { on_bad_chunk: OnBadChunk::Skip, ..spec(dir.path(), false, 1, 5) };
    let mut data = TrainData::open(skip.clone(), None).unwrap();
    let mut got = Vec::new();
    let mut skipped = Vec::new();
    let mut positions = Vec::new();
    for _ in 0..15 {
        let b = data.next_batch().unwrap().unwrap();
        got.extend(rows(&b));
        positions.push(b.position_after.clone());
        skipped.extend(data.take_skipped_chunks());
    }
    assert_eq!(got, expected, "skipping leaves the other chunks in their order");
    assert_eq!(skipped.len(), 3, "once per epoch: {skipped:?}");
    for s in &skipped {
        assert_eq!((s.shard.as_path(), s.chunk), (bad.as_path(), 2));
        assert!(s.error.contains("train-00000001.shard") && s.error.contains("chunk 2"), "{}", s.error);
    }
    // Resuming from any position gives the same continuation, skipping again where needed.
    for at in [2, 7, 11] {
        let mut resumed = TrainData::open(skip.clone(), Some(positions[at].clone())).unwrap();
        let rest = all_rows(&take(&mut resumed, 15 - at - 1));
        assert_eq!(rest, expected[at + 1..], "resume after batch {at}");
    }
}

#[test]
fn skip_gives_up_when_no_chunk_is_readable() {
    use crate::data::OnBadChunk;
    let dir = tempfile::tempdir().unwrap();
    let p = write_shard(dir.path(), Split::Train, 0, 2);
    corrupt_frame(&p, 0);
    corrupt_frame(&p, 1);
    let skip = DataSpec { on_bad_chunk: OnBadChunk::Skip, ..spec(dir.path(), false, 1, 0) };
    let e = TrainData::open(skip, None).unwrap().next_batch().unwrap_err().to_string();
    assert!(e.contains("none of the 2 train chunks can be read") && e.contains("train-00000000.shard"), "{e}");
}
