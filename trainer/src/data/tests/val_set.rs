//! The fixed validation set.

use mamba_shards::format::Split;

use super::*;
use crate::data::{load_val_chunks, DataError};

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
    assert!(matches!(e, DataError::WrongChunkTokens { .. }) && e.to_string().contains(&path.display().to_string()), "{e}");
    corrupt_frame(&path, 1);
    let e = load_val_chunks(dir.path(), SEQ_LEN, VOCAB as usize, 3).unwrap_err();
    assert!(e.to_string().contains(&path.display().to_string()) && e.to_string().contains("chunk 1"), "{e}");
    // Only the chunks that are used are read.
    assert_eq!(load_val_chunks(dir.path(), SEQ_LEN, VOCAB as usize, 1).unwrap(), vec![chunk(0, 0)]);
}
