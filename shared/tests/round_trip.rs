//! Writer → reader round trip and every corruption the reader must name.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use mamba_shards::format::{Split, HEADER_BYTES};
use mamba_shards::ring::{list_shards, read_release, write_release, Release};
use mamba_shards::{ShardError, ShardParams, ShardReader, ShardWriter};

const PARAMS: ShardParams = ShardParams::new(8, 50257, 50256);

fn chunk(k: u32) -> Vec<u32> {
    (0..PARAMS.chunk_tokens() as u32).map(|i| (k * 1000 + i * 37) % PARAMS.vocab_size).collect()
}

fn write_shard(dir: &Path, n: u32) -> std::path::PathBuf {
    let mut w = ShardWriter::create(dir, Split::Train, 3, 24, PARAMS, 3).unwrap();
    for k in 0..n {
        w.push_chunk(&chunk(k)).unwrap();
    }
    w.finish().unwrap()
}

#[test]
fn round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_shard(dir.path(), 5);
    assert_eq!(path.file_name().unwrap(), "train-00000003.shard");
    let r = ShardReader::open(&path).unwrap();
    assert_eq!(r.n_chunks(), 5);
    assert_eq!(r.header().seq, 3);
    assert_eq!(r.header().first_token, 24);
    for k in 0..5 {
        assert_eq!(r.read_chunk(k as usize).unwrap(), chunk(k));
    }
    r.verify().unwrap();
    assert!(matches!(r.read_chunk(5), Err(ShardError::ChunkOutOfRange { .. })));
    // Only the published file is left: the temporary was renamed.
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names.len(), 1);
}

#[test]
fn four_byte_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let params = ShardParams::new(3, 100_000, 0);
    let mut w = ShardWriter::create(dir.path(), Split::Val, 0, 0, params, 1).unwrap();
    w.push_chunk(&[99_999, 1, 70_000, 0]).unwrap();
    let path = w.finish().unwrap();
    let r = ShardReader::open(&path).unwrap();
    assert_eq!(r.read_chunk(0).unwrap(), vec![99_999, 1, 70_000, 0]);
}

#[test]
fn abandoned_writer_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut w = ShardWriter::create(dir.path(), Split::Train, 0, 0, PARAMS, 3).unwrap();
        w.push_chunk(&chunk(0)).unwrap();
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn rejects_bad_chunks_and_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = ShardWriter::create(dir.path(), Split::Train, 0, 0, PARAMS, 3).unwrap();
    assert!(matches!(w.push_chunk(&[1, 2]), Err(ShardError::WrongChunkLength { .. })));
    let mut c = chunk(0);
    c[4] = 60_000;
    assert!(matches!(w.push_chunk(&c), Err(ShardError::TokenTooLarge { position: 4, .. })));
}

#[test]
fn corruption_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_shard(dir.path(), 4);
    let good = std::fs::read(&path).unwrap();

    // Truncated file.
    std::fs::write(&path, &good[..good.len() - 3]).unwrap();
    let e = ShardReader::open(&path).err().unwrap();
    assert!(matches!(e, ShardError::Truncated { .. }), "{e}");
    assert!(e.to_string().contains("train-00000003.shard"), "{e}");

    // Bad magic.
    let mut bad = good.clone();
    bad[0] = b'X';
    std::fs::write(&path, &bad).unwrap();
    assert!(matches!(ShardReader::open(&path), Err(ShardError::BadMagic { .. })));

    // A flipped byte inside frame 2 fails that chunk's checksum and names it.
    let r = {
        std::fs::write(&path, &good).unwrap();
        ShardReader::open(&path).unwrap()
    };
    let idx = r.header().index_offset as usize;
    let off2 = u64::from_le_bytes(good[idx + 16..idx + 24].try_into().unwrap()) as usize;
    let off3 = u64::from_le_bytes(good[idx + 24..idx + 32].try_into().unwrap()) as usize;
    drop(r);
    let mut bad = good.clone();
    bad[(off2 + off3) / 2 + 1] ^= 0x5a;
    std::fs::write(&path, &bad).unwrap();
    let r = ShardReader::open(&path).unwrap();
    r.read_chunk(1).unwrap();
    let e = r.read_chunk(2).err().unwrap();
    assert!(matches!(e, ShardError::CorruptChunk { chunk: 2, .. }), "{e}");
    assert!(r.verify().is_err());

    // Broken index.
    let mut bad = good.clone();
    bad[idx] = 1;
    std::fs::write(&path, &bad).unwrap();
    assert!(matches!(ShardReader::open(&path), Err(ShardError::BadIndex { .. })));
    assert!(good.len() as u64 > HEADER_BYTES);
}

#[test]
fn release_cursor_only_moves_forward_and_listing_skips_temporaries() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(read_release(dir.path()).unwrap(), None);
    write_release(dir.path(), Release { train_released_below: 4 }).unwrap();
    write_release(dir.path(), Release { train_released_below: 2 }).unwrap();
    assert_eq!(read_release(dir.path()).unwrap(), Some(Release { train_released_below: 4 }));
    write_shard(dir.path(), 1);
    std::fs::write(dir.path().join(".train-00000009.shard.tmp"), b"partial").unwrap();
    let shards = list_shards(dir.path(), Split::Train).unwrap();
    assert_eq!(shards.len(), 1);
    assert_eq!(shards[0].0, 3);
    assert!(list_shards(dir.path(), Split::Val).unwrap().is_empty());
}
