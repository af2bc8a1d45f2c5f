//! The ring protocol between `pipeline` (producer) and `trainer --follow` (consumer), through files
//! in the data directory only, so either program can be restarted alone. See `docs/ring.md`.
//!
//! - The pipeline publishes `train-{seq:08}.shard` by renaming a finished temporary file into
//!   place: that rename is the commit point. A reader never sees a partial shard.
//! - The trainer writes [`RELEASE_FILE`] atomically: `{"train_released_below": S}` promises it
//!   will never read train shards with seq < S again. It only advances S once a checkpoint no
//!   longer needs those shards (so a killed trainer can always resume from its checkpoint).
//! - With `--ring-slots N > 0` the pipeline deletes released train shards and, before publishing
//!   shard `seq`, waits while `seq - max(released_below, oldest on disk)` ≥ N (backpressure).
//!   Val shards are never recycled. With N = 0 nothing is deleted.
//! - The pipeline's [`MANIFEST_FILE`] says which shards exist and whether it has finished.

use std::path::{Path, PathBuf};

use crate::error::{Result, ShardError};
use crate::format::{parse_shard_file_name, Split};
use crate::fsutil::atomic_write;

pub const RELEASE_FILE: &str = "trainer.release.json";

/// How long a program waiting on the other side of the ring sleeps between looks, having waited
/// `waited` so far: 20 ms for the first 5 s (the pipeline waiting for a release, the trainer for
/// the shard that release lets through: at GPU speed a release is due every few seconds, and at
/// 100 + 200 ms polls those two hand-offs cost 1.3% of the 130m model's step time on an H100,
/// docs/benchmarks.md), then 200 ms (a directory listing or a small file read per look).
pub fn poll_interval(waited: std::time::Duration) -> std::time::Duration {
    if waited < std::time::Duration::from_secs(5) {
        std::time::Duration::from_millis(20)
    } else {
        std::time::Duration::from_millis(200)
    }
}
pub const MANIFEST_FILE: &str = "manifest.json";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Release {
    /// Train shards with a smaller seq will never be read again by the trainer.
    pub train_released_below: u64,
}

/// The consumer's release cursor; `None` when no trainer has released anything yet.
pub fn read_release(dir: &Path) -> Result<Option<Release>> {
    let path = dir.join(RELEASE_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| ShardError::Json { path, what: format!("unreadable release file: {e}") }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ShardError::io(path, e)),
    }
}

/// Moves the release cursor forward (never back).
pub fn write_release(dir: &Path, release: Release) -> Result<()> {
    if let Some(old) = read_release(dir)? {
        if old.train_released_below >= release.train_released_below {
            return Ok(());
        }
    }
    let path = dir.join(RELEASE_FILE);
    let bytes =
        serde_json::to_vec(&release).map_err(|e| ShardError::Json { path: path.clone(), what: e.to_string() })?;
    atomic_write(&path, &bytes)
}

/// Published shards of one split in `dir`, sorted by seq. Temporary files are ignored.
pub fn list_shards(dir: &Path, split: Split) -> Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| ShardError::io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| ShardError::io(dir, e))?;
        let name = entry.file_name();
        if let Some((s, seq)) = name.to_str().and_then(parse_shard_file_name) {
            if s == split {
                out.push((seq, entry.path()));
            }
        }
    }
    out.sort();
    Ok(out)
}
