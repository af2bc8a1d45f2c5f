//! What `--data` names, and the chunks it gives: a shard directory (one split), a single shard
//! file, a parquet file, or a folder of parquet files.

use std::path::Path;

use anyhow::{bail, Context, Result};
use mamba_shards::format::{parse_shard_file_name, Split};
use mamba_shards::ring::list_shards;

use super::parquet_docs::parquet_files;
use super::shard_chunks::ShardChunks;
use super::text_chunks::TextChunks;

/// Chunks of `chunk_tokens()` tokens, in a fixed order; inputs are `chunk[..n-1]`, targets
/// `chunk[1..]`.
pub trait ChunkSource {
    /// Tokens per chunk (seq_len + 1).
    fn chunk_tokens(&self) -> usize;
    /// Chunks in all, when known before reading (the progress bar's length).
    fn total_chunks(&self) -> Option<u64>;
    /// The next chunk, or `None` after the last.
    fn next_chunk(&mut self) -> Result<Option<Vec<u32>>>;
    /// Tokens at the end of the text that fill no whole chunk, once everything was read (text
    /// sources only).
    fn dropped_tokens(&self) -> Option<u64> {
        None
    }
    /// The split, for the shards of a shard directory.
    fn split(&self) -> Option<Split> {
        None
    }
    /// A line for the log about the input, before reading.
    fn describe(&self) -> String;
    /// A line for the log about what was read, after the evaluation.
    fn summary(&self) -> Option<String> {
        None
    }
}

/// Opens `path` for a model with `model_vocab` (padded) rows. `split` picks the shards of a
/// shard directory (`None` = val); `seq_len` is the chunk length of parquet text (`None` =
/// `default_seq_len`) and, when given, must match the shards' chunks.
pub fn open(path: &Path, split: Option<Split>, seq_len: Option<usize>, default_seq_len: usize, model_vocab: usize) -> Result<Box<dyn ChunkSource>> {
    let meta = std::fs::metadata(path).with_context(|| format!("--data {}", path.display()))?;
    let is_shard_file = !meta.is_dir() && path.file_name().and_then(|n| n.to_str()).and_then(parse_shard_file_name).is_some();
    let is_shard_dir = meta.is_dir() && Split::ALL.iter().any(|&s| list_shards(path, s).is_ok_and(|l| !l.is_empty()));
    if is_shard_dir {
        return Ok(Box::new(ShardChunks::open_split(path, split.unwrap_or(Split::Val), model_vocab, seq_len)?));
    }
    if is_shard_file {
        if split.is_some() {
            bail!("--split applies to a shard directory; {} is one shard file", path.display());
        }
        return Ok(Box::new(ShardChunks::open_files(&[path.to_path_buf()], model_vocab, seq_len)?));
    }
    let files = parquet_files(path)?;
    if files.is_empty() {
        bail!("{}: neither a shard directory (no train-/val-NNNNNNNN.shard) nor a folder with parquet files", path.display());
    }
    if split.is_some() {
        bail!("--split applies to a shard directory; {} is parquet text (all of it is evaluated)", path.display());
    }
    Ok(Box::new(TextChunks::open(files, seq_len.unwrap_or(default_seq_len), model_vocab)?))
}
