//! Writes one shard: its chunks are compressed in parallel (rayon), then appended in order to the
//! shard's temporary file and published by rename (mamba_shards::ShardWriter). A stop request or
//! an error abandons the shard: the temporary file is removed, nothing partial becomes visible.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{anyhow, Context, Result};
use mamba_shards::{shard_file_name, ChunkCompressor, ShardParams, ShardWriter, Split};
use rayon::prelude::*;

use crate::Interrupted;

pub struct ShardJob<'a> {
    pub split: Split,
    pub seq: u64,
    /// Stream index of the first chunk's first token.
    pub first_token: u64,
    /// `n_chunks · seq_len + 1` stream tokens: chunk k is `[k·seq_len, k·seq_len + seq_len + 1)`.
    pub tokens: &'a [u32],
    pub n_chunks: usize,
}

/// Compresses and publishes `job` into `dir`; returns the published path and its size in bytes.
pub fn write_shard(
    dir: &Path,
    params: &ShardParams,
    level: i32,
    job: &ShardJob,
    stop: &AtomicBool,
) -> Result<(PathBuf, u64)> {
    // Chunk k starts at token k · seq_len and holds chunk_tokens: consecutive chunks overlap by one.
    let (seq_len, chunk_tokens) = (params.seq_len(), params.chunk_tokens());
    let name = shard_file_name(job.split, job.seq);
    let final_path = dir.join(&name);
    // One zstd context per worker, not per chunk (creating one costs as much as a chunk).
    let frames: Vec<Vec<u8>> = (0..job.n_chunks)
        .into_par_iter()
        .map_init(
            || ChunkCompressor::new(level, &final_path),
            |zstd, k| match zstd {
                Ok(zstd) => {
                    Ok(zstd.compress(params, &job.tokens[k * seq_len..k * seq_len + chunk_tokens], &final_path)?)
                }
                Err(e) => Err(anyhow!("creating a zstd compressor: {e}")),
            },
        )
        .collect::<Result<_>>()
        .with_context(|| format!("compressing {name}"))?;
    if stop.load(Ordering::Relaxed) {
        return Err(Interrupted.into());
    }
    let mut writer = ShardWriter::create(dir, job.split, job.seq, job.first_token, *params, level)
        .with_context(|| format!("creating {name} (stream tokens from {})", job.first_token))?;
    for (k, frame) in frames.iter().enumerate() {
        writer.push_frame(frame).with_context(|| format!("writing chunk {k} of {name}"))?;
        if stop.load(Ordering::Relaxed) {
            return Err(Interrupted.into()); // dropping the writer removes its temporary file
        }
    }
    let path = writer.finish().with_context(|| format!("publishing {name}"))?;
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    Ok((path, size))
}

/// Removes temporaries a killed run left behind (`.train-….shard.tmp`, `.manifest.json.….tmp`, …).
/// The trainer's own temporaries are not touched.
pub fn remove_stale_temporaries(dir: &Path) -> Result<usize> {
    let mut removed = 0;
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let ours =
            [".train-", ".val-", ".manifest.json.", ".pipeline.config.json."].iter().any(|p| name.starts_with(p));
        if ours && name.ends_with(".tmp") {
            std::fs::remove_file(entry.path()).with_context(|| format!("removing stale {}", entry.path().display()))?;
            removed += 1;
        }
    }
    Ok(removed)
}
