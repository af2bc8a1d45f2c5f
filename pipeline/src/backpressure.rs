//! The producer side of the ring protocol (shared/src/ring.rs, docs/ring.md): with
//! `--ring-slots N > 0`, train shards the trainer has released are deleted, and before train shard
//! `seq` is published the pipeline waits while N unreleased train shards are on disk.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use mamba_shards::ring::{list_shards, read_release};
use mamba_shards::Split;

use crate::Interrupted;

pub struct Ring {
    dir: PathBuf,
    slots: u32,
    /// How often the "waiting for trainer" line is logged.
    log_every: Duration,
}

/// What the ring looks like now.
#[derive(Debug, Clone, Copy, Default)]
pub struct Occupancy {
    pub released_below: u64,
    /// Unreleased train shards on disk (below the one about to be published).
    pub used: usize,
    pub slots: u32,
}

impl Ring {
    pub fn new(dir: PathBuf, slots: u32) -> Ring {
        Ring { dir, slots, log_every: Duration::from_secs(5) }
    }

    pub fn enabled(&self) -> bool {
        self.slots > 0
    }

    /// Deletes released train shards (ring mode only) and counts the unreleased ones below `seq`.
    pub fn recycle(&self, seq: u64) -> Result<Occupancy> {
        let release = read_release(&self.dir)?.unwrap_or_default();
        let mut used = 0;
        for (s, path) in list_shards(&self.dir, Split::Train)? {
            if self.enabled() && s < release.train_released_below {
                match std::fs::remove_file(&path) {
                    Ok(()) => tracing::debug!("deleted released {}", path.display()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e).with_context(|| format!("deleting released shard {}", path.display())),
                }
            } else if s < seq && s >= release.train_released_below {
                used += 1;
            }
        }
        Ok(Occupancy { released_below: release.train_released_below, used, slots: self.slots })
    }

    /// Blocks until train shard `seq` may be published (a free slot), logging while it waits.
    /// `on_wait` sees the occupancy on every poll (for the progress display).
    pub fn wait_for_slot(&self, seq: u64, stop: &AtomicBool, mut on_wait: impl FnMut(Occupancy)) -> Result<Occupancy> {
        if !self.enabled() {
            return Ok(Occupancy::default());
        }
        let mut last_log: Option<Instant> = None;
        let started = Instant::now();
        loop {
            let occ = self.recycle(seq)?;
            if occ.used < self.slots as usize {
                if last_log.is_some() {
                    tracing::info!(
                        "ring {}/{}: trainer released shards below {}, going on",
                        occ.used,
                        occ.slots,
                        occ.released_below
                    );
                }
                return Ok(occ);
            }
            if last_log.is_none_or(|t| t.elapsed() >= self.log_every) {
                tracing::info!(
                    "ring {}/{} full, waiting for trainer (to publish train shard {seq}; {} says released below {})",
                    occ.used,
                    occ.slots,
                    mamba_shards::ring::RELEASE_FILE,
                    occ.released_below
                );
                last_log = Some(Instant::now());
            }
            on_wait(occ);
            if stop.load(Ordering::Relaxed) {
                return Err(Interrupted.into());
            }
            std::thread::sleep(mamba_shards::ring::poll_interval(started.elapsed()));
        }
    }
}
