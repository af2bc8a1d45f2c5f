//! What `--data` names: a shard directory (one split) or a single shard file. Parquet text is
//! not read here: the pipeline alone tokenizes and cuts text (`pipeline --input`), and the error
//! for a parquet path says how.

use std::path::Path;

use anyhow::{bail, Context, Result};
use mamba_shards::format::{parse_shard_file_name, Split};
use mamba_shards::ring::list_shards;

use super::shard_chunks::ShardChunks;

/// Opens `path` for a model with `model_vocab` (padded) rows. `split` picks the shards of a
/// shard directory (`None` = val); `seq_len`, when given, must match the shards' chunks.
pub fn open(path: &Path, split: Option<Split>, seq_len: Option<usize>, model_vocab: usize) -> Result<ShardChunks> {
    let meta = std::fs::metadata(path).with_context(|| format!("--data {}", path.display()))?;
    let is_shard_file =
        !meta.is_dir() && path.file_name().and_then(|n| n.to_str()).and_then(parse_shard_file_name).is_some();
    let is_shard_dir = meta.is_dir() && Split::ALL.iter().any(|&s| list_shards(path, s).is_ok_and(|l| !l.is_empty()));
    if is_shard_dir {
        return ShardChunks::open_split(path, split.unwrap_or(Split::Val), model_vocab, seq_len);
    }
    if is_shard_file {
        if split.is_some() {
            bail!("--split applies to a shard directory; {} is one shard file", path.display());
        }
        return ShardChunks::open_files(&[path.to_path_buf()], model_vocab, seq_len);
    }
    bail!(
        "{}: neither a shard directory (no train-/val-NNNNNNNN.shard) nor a shard file. To evaluate on \
         parquet text, cut it into val shards first: `pipeline --input {} --data-dir DIR --seq-len N \
         --val-tokens 1000000000000`, then `trainer eval --data DIR`",
        path.display(),
        path.display()
    )
}
