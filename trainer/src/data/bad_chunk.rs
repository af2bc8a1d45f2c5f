//! `--on-bad-chunk`: what static training does with a chunk whose frame is corrupt (bad zstd
//! frame, checksum mismatch, token outside the vocabulary). `fail` (the default) stops the run
//! with an error naming the shard and chunk, after the training loop saved a checkpoint of the
//! last completed step; `skip` leaves the chunk out, logs a warning naming it, and counts it in
//! the metrics. Skipping does not change the order of the other chunks (the position still
//! advances over the skipped entry of the epoch's permutation), so a run that skips and a run
//! resumed with `--on-bad-chunk skip` from a checkpoint before the bad chunk read the same rows.
//! Follow mode verifies every shard before reading it and skips corrupt shards whole.

use std::path::PathBuf;

use mamba_shards::ShardError;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum OnBadChunk {
    /// Stop with an error naming the shard and chunk (a checkpoint is saved first).
    #[default]
    Fail,
    /// Leave the chunk out, warn, and count it (`skipped_chunks` in metrics.jsonl).
    Skip,
}

/// A chunk left out under `--on-bad-chunk skip`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedChunk {
    /// The shard file.
    pub shard: PathBuf,
    /// The chunk's index inside the shard.
    pub chunk: usize,
    /// Why it could not be read (names file, chunk and byte range).
    pub error: String,
}

/// The shard errors that make one chunk unreadable while the rest of its shard is fine.
pub(crate) fn bad_chunk(e: &ShardError) -> Option<SkippedChunk> {
    match e {
        ShardError::CorruptChunk { path, chunk, .. } => {
            Some(SkippedChunk { shard: path.clone(), chunk: *chunk, error: e.to_string() })
        }
        _ => None,
    }
}
