//! Tests of the data loader on small shards written with `mamba_shards::ShardWriter`.
//! Every chunk says where it comes from in its first two tokens (shard seq, chunk index), and its
//! remaining tokens are a function of both, so a test can check rows token for token.

mod bad_input;
mod follow_mode;
mod static_mode;
mod val_set;

use std::path::{Path, PathBuf};
use std::time::Duration;

use mamba_shards::format::Split;
use mamba_shards::{ShardParams, ShardWriter};

use super::{Batch, DataSpec, TrainData};

pub(crate) const SEQ_LEN: usize = 7;
pub(super) const CHUNK: usize = SEQ_LEN + 1;
pub(crate) const VOCAB: u32 = 1000;

pub(crate) fn params() -> ShardParams {
    ShardParams::new(SEQ_LEN as u32, VOCAB, VOCAB - 1)
}

/// The tokens of chunk `k` of shard `seq` (of either split; val chunks are offset by 500).
pub(super) fn chunk(seq: u64, k: usize) -> Vec<u32> {
    let mut v = vec![seq as u32, k as u32];
    v.extend((2..CHUNK).map(|i| ((seq as usize * 31 + k * 7 + i * 13) % (VOCAB as usize - 1)) as u32));
    v
}

/// Publishes `{split}-{seq:08}.shard` with `n` chunks made by [`chunk`].
pub(super) fn write_shard(dir: &Path, split: Split, seq: u64, n: usize) -> PathBuf {
    write_shard_with(dir, split, seq, n, params())
}

/// Train shards 0, 1, … with `chunks[i]` chunks in shard `i` ([`write_shard`]).
pub(super) fn write_train_shards(dir: &Path, chunks: &[usize]) {
    for (seq, &n) in (0u64..).zip(chunks) {
        write_shard(dir, Split::Train, seq, n);
    }
}

pub(super) fn write_shard_with(dir: &Path, split: Split, seq: u64, n: usize, p: ShardParams) -> PathBuf {
    let mut w = ShardWriter::create(dir, split, seq, 0, p, 3).unwrap();
    for k in 0..n {
        let mut c = chunk(seq, k);
        c.resize(p.chunk_tokens(), 1);
        w.push_chunk(&c).unwrap();
    }
    w.finish().unwrap()
}

/// Byte range of chunk `k`'s zstd frame, read from the shard's index.
pub(super) fn frame_range(path: &Path, k: usize) -> (usize, usize) {
    let b = std::fs::read(path).unwrap();
    let index_offset = u64::from_le_bytes(b[32..40].try_into().unwrap()) as usize;
    let at =
        |i: usize| u64::from_le_bytes(b[index_offset + 8 * i..index_offset + 8 * i + 8].try_into().unwrap()) as usize;
    (at(k), at(k + 1))
}

/// Flips one byte in the middle of chunk `k`'s frame.
pub(super) fn corrupt_frame(path: &Path, k: usize) {
    let (start, end) = frame_range(path, k);
    let mut b = std::fs::read(path).unwrap();
    b[(start + end) / 2] ^= 0x5a;
    std::fs::write(path, b).unwrap();
}

/// Writes the pipeline's manifest as the pipeline would (`finished` and the shard params matter).
pub(crate) fn write_manifest(dir: &Path, finished: bool, params: ShardParams) {
    let mut m = mamba_shards::Manifest::for_hand_written_shards(params, 4, "trainer data tests");
    if finished {
        m.finish("end of source");
    }
    m.write(dir).unwrap();
}

pub(super) fn write_manifest_finished(dir: &Path) {
    write_manifest(dir, true, params());
}

pub(super) fn spec(dir: &Path, follow: bool, micro_batch: usize, seed: u64) -> DataSpec {
    DataSpec {
        dir: dir.into(),
        seq_len: SEQ_LEN,
        vocab_size: VOCAB as usize,
        seed,
        follow,
        micro_batch,
        prefetch: 2,
        on_bad_chunk: Default::default(),
    }
}

/// (shard seq, chunk index) of every row, after checking each row token for token.
pub(super) fn rows(batch: &Batch) -> Vec<(u64, usize)> {
    assert_eq!(batch.tokens.len(), batch.micro_batch * CHUNK);
    batch
        .tokens
        .chunks_exact(CHUNK)
        .map(|row| {
            let id = (row[0] as u64, row[1] as usize);
            assert_eq!(row, chunk(id.0, id.1).as_slice(), "row is not an intact chunk");
            id
        })
        .collect()
}

/// The next `n` batches (panics if the data ends first).
pub(super) fn take(data: &mut TrainData, n: usize) -> Vec<Batch> {
    (0..n).map(|_| data.next_batch().unwrap().expect("data ended early")).collect()
}

/// Every batch until `next_batch` returns None, with a time limit so a bug cannot hang CI.
pub(super) fn take_all(data: &mut TrainData) -> Vec<Batch> {
    let started = std::time::Instant::now();
    let mut out = Vec::new();
    while let Some(b) = data.next_batch().unwrap() {
        out.push(b);
        assert!(started.elapsed() < Duration::from_secs(30), "follow mode did not end");
    }
    out
}

pub(super) fn all_rows(batches: &[Batch]) -> Vec<(u64, usize)> {
    batches.iter().flat_map(rows).collect()
}
