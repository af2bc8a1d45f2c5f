//! Crash-safe file writes: write a temporary, fsync, rename, fsync the directory.

use std::io::Write;
use std::path::Path;

use crate::error::{Result, ShardError};

/// Makes a rename in `dir` durable.
pub fn fsync_dir(dir: &Path) -> Result<()> {
    let d = std::fs::File::open(dir).map_err(|e| ShardError::io(dir, e))?;
    d.sync_all().map_err(|e| ShardError::io(dir, e))
}

/// Replaces `path` with `bytes` atomically: readers see the old or the new content, never a mix.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let res = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = res {
        let _ = std::fs::remove_file(&tmp);
        return Err(ShardError::io(path, e));
    }
    fsync_dir(dir)
}
