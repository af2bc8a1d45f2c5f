//! The validation set: a fixed, deterministic list of chunks. The pipeline's manifest records the
//! fixed val set (`mamba_shards::manifest::ValSet`: val shards `0..S` holding the first K chunks
//! of the val stream, made from the first documents of the source and published before any train
//! shard); evaluations use its first `min(--eval-chunks, K)` chunks in seq order (shard 0 chunk
//! 0, 1, …, then the next shard). The same source always gives the same set, whatever the pipeline
//! published later, so val losses of live and static runs and of resumes compare.
//!
//! Without a manifest (shards made by other tools) or with a finished manifest that records no set
//! (version 1), the set is the first chunks of the val shards on disk. While a live pipeline is still filling the set
//! the result is [`ValSetState::Pending`], and the trainer waits for it at its next eval.

use std::path::Path;

use mamba_shards::format::{shard_file_name, Split};
use mamba_shards::manifest::ValSet;
use mamba_shards::ring::{list_shards, MANIFEST_FILE};
use mamba_shards::Manifest;

use super::error::DataError;
use super::validate::open_for_model;

/// The chunks an evaluation runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValChunks {
    /// `min(max_chunks, set_chunks)` chunks of `seq_len + 1` tokens.
    pub chunks: Vec<Vec<u32>>,
    /// Chunks in the whole fixed set (`None` without a manifest: the val shards on disk).
    pub set_chunks: Option<u64>,
    /// FNV-1a 64 over the little-endian bytes of every token of `chunks`, as 16 hex digits: equal
    /// digests mean the same evaluation chunks (recorded with every eval in metrics.jsonl).
    pub digest: String,
}

/// The fixed val set, or why it is not there yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValSetState {
    Ready(ValChunks),
    /// The pipeline has not published (all of) it yet; the text says what its manifest shows.
    Pending(String),
}

/// Loads the fixed val set of `dir` (up to `max_chunks` of its chunks). Every shard used is
/// checked against the model and a bad chunk is an error naming the file and chunk; a set shard
/// that is missing or shorter than the manifest says is an error naming the manifest.
pub fn load_val_set(
    dir: &Path,
    seq_len: usize,
    vocab_size: usize,
    max_chunks: usize,
) -> Result<ValSetState, DataError> {
    let manifest = Manifest::read(dir)?;
    let Some(m) = manifest else {
        if dir.is_dir() && !list_shards(dir, Split::Val)?.is_empty() {
            // Shards without a pipeline manifest: the val shards on disk are the set.
            let chunks = load_val_chunks(dir, seq_len, vocab_size, max_chunks)?;
            return Ok(ValSetState::Ready(ValChunks { digest: digest(&chunks), chunks, set_chunks: None }));
        }
        return Ok(ValSetState::Pending(format!("no {MANIFEST_FILE} and no val shard in {} yet", dir.display())));
    };
    let Some(set) = m.val_set else {
        if m.finished {
            // A finished directory without a recorded set (version 1): the val shards on disk.
            let chunks = load_val_chunks(dir, seq_len, vocab_size, max_chunks)?;
            return Ok(ValSetState::Ready(ValChunks { digest: digest(&chunks), chunks, set_chunks: None }));
        }
        let target = m.fingerprint.val_tokens.div_ceil(m.params.seq_len().max(1) as u64).max(1);
        return Ok(ValSetState::Pending(format!(
            "its manifest: {} of the {target} val set chunks published",
            m.val.chunks
        )));
    };
    let chunks = read_set(dir, set, seq_len, vocab_size, max_chunks)?;
    Ok(ValSetState::Ready(ValChunks { digest: digest(&chunks), chunks, set_chunks: Some(set.chunks) }))
}

/// The first `min(max_chunks, set.chunks)` chunks of val shards `0..set.shards`, in order.
fn read_set(
    dir: &Path,
    set: ValSet,
    seq_len: usize,
    vocab_size: usize,
    max_chunks: usize,
) -> Result<Vec<Vec<u32>>, DataError> {
    let want = (set.chunks.min(max_chunks as u64)) as usize;
    let mut chunks = Vec::with_capacity(want);
    for seq in 0..set.shards {
        if chunks.len() >= want {
            break;
        }
        let path = dir.join(shard_file_name(Split::Val, seq));
        if !path.exists() {
            return Err(DataError::Manifest {
                path: dir.join(MANIFEST_FILE),
                what: format!(
                    "the fixed val set is val shards 0..{} ({} chunks), but {} does not exist",
                    set.shards,
                    set.chunks,
                    path.display()
                ),
            });
        }
        let reader = open_for_model(&path, seq_len, vocab_size)?;
        let take = reader.n_chunks().min(want - chunks.len());
        for k in 0..take {
            chunks.push(reader.read_chunk(k)?);
        }
    }
    if chunks.len() < want {
        return Err(DataError::Manifest {
            path: dir.join(MANIFEST_FILE),
            what: format!(
                "the fixed val set is {} chunks in val shards 0..{}, but those shards hold only {}",
                set.chunks,
                set.shards,
                chunks.len()
            ),
        });
    }
    Ok(chunks)
}

/// Up to `max_chunks` val chunks of `seq_len + 1` tokens each, the first chunks of the val shards
/// on disk in seq order (no manifest consulted); empty when `dir` has no val shard.
pub fn load_val_chunks(
    dir: &Path,
    seq_len: usize,
    vocab_size: usize,
    max_chunks: usize,
) -> Result<Vec<Vec<u32>>, DataError> {
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

/// FNV-1a 64 over the tokens' little-endian bytes, as 16 hex digits.
pub fn digest(chunks: &[Vec<u32>]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in chunks.iter().flatten().flat_map(|t| t.to_le_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}
