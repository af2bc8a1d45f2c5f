//! Static mode: train on the train shards that exist when training starts, epoch after epoch.
//! Each epoch reads every chunk of every shard exactly once, in a permutation seeded by
//! (`--seed`, epoch). Chunks are numbered globally (shard by shard in seq order), the permutation
//! maps entry `index` to a global chunk, and the chunk is decompressed from its memory-mapped
//! shard only when it is read. A corrupt chunk is an error, or is left out under
//! `--on-bad-chunk skip` (`bad_chunk.rs`).

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use mamba_shards::format::Split;
use mamba_shards::ring::list_shards;
use mamba_shards::ShardReader;

use super::bad_chunk::{bad_chunk, OnBadChunk, SkippedChunk};
use super::error::DataError;
use super::order::{permutation, OrderKind};
use super::position::{Cursor, DataPosition};
use super::prefetch::ChunkSource;
use super::validate::open_for_model;

pub(crate) struct StaticOrder {
    dir: PathBuf,
    seed: u64,
    shards: Vec<ShardReader>,
    /// `starts[i]` = global index of shard i's first chunk; `starts[n] = total`.
    starts: Vec<u64>,
    total: u64,
    epoch: u64,
    index: u64,
    /// Epoch `epoch`'s permutation of `0..total`.
    order: Vec<u32>,
    on_bad_chunk: OnBadChunk,
    /// Chunks skipped since the last `take_skipped`.
    skipped: Vec<SkippedChunk>,
    /// Chunks skipped since the last good one: a whole epoch of them means nothing is readable.
    bad_in_a_row: u64,
}

impl StaticOrder {
    /// Opens and validates every train shard in `dir`; starts at `resume` or at epoch 0.
    pub(crate) fn open(
        dir: &Path,
        seq_len: usize,
        vocab_size: usize,
        seed: u64,
        resume: Option<&DataPosition>,
        on_bad_chunk: OnBadChunk,
    ) -> Result<Self, DataError> {
        let paths: Vec<PathBuf> = list_shards(dir, Split::Train)?.into_iter().map(|(_, p)| p).collect();
        if paths.is_empty() {
            return Err(DataError::NoTrainShards { dir: dir.into() });
        }
        let mut shards = Vec::with_capacity(paths.len());
        let mut starts = vec![0u64];
        for path in &paths {
            let reader = open_for_model(path, seq_len, vocab_size)?;
            starts.push(starts[starts.len() - 1] + reader.n_chunks() as u64);
            shards.push(reader);
        }
        let total = starts[starts.len() - 1];
        if total == 0 {
            return Err(DataError::NoTrainShards { dir: dir.into() });
        }
        if total > u32::MAX as u64 {
            return Err(DataError::TooManyChunks { dir: dir.into(), total });
        }
        let n_shards = shards.len() as u64;
        let (epoch, index) = match resume.map(|p| p.cursor) {
            None => (0, 0),
            Some(Cursor::Static { epoch, index, total_chunks, n_shards: saved_shards }) => {
                if total_chunks != total || saved_shards != n_shards {
                    return Err(DataError::ResumeMismatch {
                        what: format!(
                            "the checkpoint was trained on {saved_shards} train shards with {total_chunks} chunks, {} now holds {n_shards} shards with {total} chunks (the static order would differ)",
                            dir.display()
                        ),
                    });
                }
                if index >= total {
                    return Err(DataError::ResumeMismatch {
                        what: format!("chunk index {index} is past the {total} chunks of an epoch"),
                    });
                }
                (epoch, index)
            }
            Some(Cursor::Follow { .. }) => {
                return Err(DataError::ResumeMismatch {
                    what: "a follow-mode position cannot resume a static run".into(),
                })
            }
        };
        let order = permutation(total as u32, seed, OrderKind::StaticEpoch, epoch);
        Ok(StaticOrder {
            dir: dir.into(),
            seed,
            shards,
            starts,
            total,
            epoch,
            index,
            order,
            on_bad_chunk,
            skipped: Vec::new(),
            bad_in_a_row: 0,
        })
    }

    /// Moves past entry `index` of the epoch's permutation; returns the position after it.
    fn advance(&mut self) -> DataPosition {
        let after = DataPosition::static_after(self.seed, self.epoch, self.index, self.total, self.shards.len() as u64);
        if let Cursor::Static { epoch, index, .. } = after.cursor {
            if epoch != self.epoch {
                self.order = permutation(self.total as u32, self.seed, OrderKind::StaticEpoch, epoch);
            }
            self.epoch = epoch;
            self.index = index;
        }
        after
    }
}

impl ChunkSource for StaticOrder {
    /// Where the next chunk comes from.
    fn position(&self) -> DataPosition {
        let cursor = Cursor::Static {
            epoch: self.epoch,
            index: self.index,
            total_chunks: self.total,
            n_shards: self.shards.len() as u64,
        };
        DataPosition { seed: self.seed, cursor }
    }

    fn next_chunk(&mut self, out: &mut Vec<u32>, _stop: &AtomicBool) -> Result<Option<DataPosition>, DataError> {
        loop {
            let global = self.order[self.index as usize] as u64;
            // The shard whose range [starts[i], starts[i+1]) holds `global` (empty shards are
            // skipped because partition_point finds the last start <= global).
            let i = self.starts.partition_point(|&s| s <= global) - 1;
            let k = (global - self.starts[i]) as usize;
            match self.shards[i].read_chunk_into(k, out) {
                Ok(()) => {
                    self.bad_in_a_row = 0;
                    return Ok(Some(self.advance()));
                }
                Err(e) => {
                    let Some(bad) = bad_chunk(&e).filter(|_| self.on_bad_chunk == OnBadChunk::Skip) else {
                        return Err(e.into());
                    };
                    self.skipped.push(bad);
                    self.advance();
                    self.bad_in_a_row += 1;
                    if self.bad_in_a_row >= self.total {
                        return Err(DataError::NoGoodChunk {
                            dir: self.dir.clone(),
                            total: self.total,
                            last: e.to_string(),
                        });
                    }
                }
            }
        }
    }

    fn take_skipped(&mut self) -> Vec<SkippedChunk> {
        std::mem::take(&mut self.skipped)
    }
}
