//! One writer per directory: an exclusive lock on a file in the directory, held by the OS
//! (`flock(2)` through `File::try_lock`) for as long as the process keeps the [`DirLock`]. The OS
//! drops it when the process ends in any way, `kill -9` included, so a lock is never stale and
//! nothing has to be cleaned up. The lock file stays in the directory; its content (the holder's
//! pid and program) is only for the message a refused second writer prints.
//!
//! `pipeline` locks its data dir ([`PIPELINE_LOCK`]), `trainer train` its run dir
//! ([`TRAINER_LOCK`]). A trainer that follows a pipeline's data dir does not take the pipeline's
//! lock: reading (and writing `trainer.release.json`) there is the ring protocol's business.
//! Local filesystems only: on a network filesystem the lock is as good as its `flock` emulation.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The pipeline's lock in its data dir (`--data-dir`).
pub const PIPELINE_LOCK: &str = "pipeline.lock";
/// The trainer's lock in its run dir (`trainer train --out`).
pub const TRAINER_LOCK: &str = "trainer.lock";

/// How long a refused writer waits for a holder that has just locked to write its pid.
const PID_WAIT: Duration = Duration::from_millis(200);

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("{dir} is in use by another {program} (pid {pid}, lock {lock}); stop it first, or use another directory")]
    Held { dir: PathBuf, lock: PathBuf, program: String, pid: String },
    #[error("locking {lock}: {source}")]
    Io {
        lock: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The held lock; dropping it (or the process ending) releases it.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
    path: PathBuf,
}

impl DirLock {
    /// Takes the exclusive lock `dir/name` (creating the file if needed) for `program`, or fails at
    /// once with [`LockError::Held`] naming the holder's pid. `dir` must exist.
    pub fn acquire(dir: &Path, name: &str, program: &str) -> Result<DirLock, LockError> {
        let path = dir.join(name);
        let io = |source| LockError::Io { lock: path.clone(), source };
        // Not truncated on open: the holder's pid must survive a refused writer's open.
        let mut file =
            OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let (program_held, pid) = read_holder(&mut file);
                return Err(LockError::Held {
                    dir: dir.into(),
                    lock: path,
                    program: program_held.unwrap_or_else(|| program.into()),
                    pid,
                });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        let record = format!("{} {program}\n", std::process::id());
        (|| {
            file.set_len(0)?;
            file.seek(SeekFrom::Start(0))?;
            file.write_all(record.as_bytes())?;
            file.flush()
        })()
        .map_err(io)?;
        Ok(DirLock { _file: file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// (program, pid) the holder wrote; it writes them right after locking, so an empty file is
/// retried for a moment. The pid reads `unknown` when it never appears.
fn read_holder(file: &mut File) -> (Option<String>, String) {
    let started = Instant::now();
    loop {
        let mut text = String::new();
        let read = file.seek(SeekFrom::Start(0)).and_then(|_| (&mut *file).take(256).read_to_string(&mut text));
        let mut words = text.split_whitespace();
        if let (Ok(_), Some(pid)) = (read, words.next().filter(|p| p.bytes().all(|b| b.is_ascii_digit()))) {
            return (words.next().map(str::to_string), pid.to_string());
        }
        if started.elapsed() >= PID_WAIT {
            return (None, "unknown".into());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_second_writer_is_refused_with_the_holders_pid_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let held = DirLock::acquire(dir.path(), PIPELINE_LOCK, "pipeline").unwrap();
        assert_eq!(std::fs::read_to_string(held.path()).unwrap(), format!("{} pipeline\n", std::process::id()));
        // flock locks belong to the open file, so a second open in this process is refused too.
        let err = DirLock::acquire(dir.path(), PIPELINE_LOCK, "pipeline").unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, LockError::Held { .. }), "{text}");
        assert!(text.contains(&format!("pid {}", std::process::id())) && text.contains("pipeline.lock"), "{text}");
        // The refused open left the holder's record alone.
        assert_eq!(std::fs::read_to_string(held.path()).unwrap(), format!("{} pipeline\n", std::process::id()));
        // Another lock name in the same directory is independent.
        let _trainer = DirLock::acquire(dir.path(), TRAINER_LOCK, "trainer").unwrap();
        drop(held);
        let again = DirLock::acquire(dir.path(), PIPELINE_LOCK, "pipeline").unwrap();
        assert_eq!(again.path(), dir.path().join(PIPELINE_LOCK));
    }

    #[test]
    fn a_holder_that_wrote_no_pid_is_named_unknown() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(TRAINER_LOCK);
        let f = File::create(&path).unwrap();
        f.try_lock().unwrap();
        let err = DirLock::acquire(dir.path(), TRAINER_LOCK, "trainer").unwrap_err().to_string();
        assert!(err.contains("pid unknown") && err.contains("another trainer"), "{err}");
    }

    #[test]
    fn a_missing_directory_is_an_error_naming_the_lock_file() {
        let dir = tempfile::tempdir().unwrap();
        let err = DirLock::acquire(&dir.path().join("nope"), PIPELINE_LOCK, "pipeline").unwrap_err().to_string();
        assert!(err.contains("nope/pipeline.lock"), "{err}");
    }
}
