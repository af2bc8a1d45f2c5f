//! The validation set: a fixed, deterministic list of chunks, the first chunks of the val shards
//! taken in seq order (shard 0 chunk 0, 1, …, then the next shard) up to `max_chunks`. The same
//! directory always gives the same set, so val losses of different runs and resumes compare.

use std::path::Path;

use mamba_shards::format::Split;
use mamba_shards::ring::list_shards;

use super::error::DataError;
use super::validate::open_for_model;

/// Up to `max_chunks` val chunks of `seq_len + 1` tokens each; empty when `dir` has no val shard
/// (the caller logs that and skips evaluation). Every shard used is checked against the model and
/// a bad chunk is an error naming the file and chunk.
pub fn load_val_chunks(dir: &Path, seq_len: usize, vocab_size: usize, max_chunks: usize) -> Result<Vec<Vec<u32>>, DataError> {
    let mut chunks = Vec::new();
    for (_, path) in list_shards(dir, Split::Val)? {
        if chunks.len() >= max_chunks {
            break;
        }
        let reader = open_for_model(&path, seq_len, vocab_size)?;
        let take = reader.n_chunks().min(max_chunks - chunks.len());
        for k in 0..take {
            chunks.push(reader.read_chunk(k)?);
        }
    }
    Ok(chunks)
}
