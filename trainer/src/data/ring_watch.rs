//! The training loop's view of the ring in follow mode (the loader thread reads shards; this side
//! looks at the directory): how much published data lies ahead of the position, whether the
//! pipeline may be blocked on a full ring, and the status text for log lines. Used by
//! `TrainData::wants_checkpoint` and `TrainData::ring_status`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use mamba_shards::format::Split;
use mamba_shards::ring::list_shards;
use mamba_shards::{Manifest, ShardReader};

use super::follow::SharedRingView;

pub(crate) struct RingWatch {
    dir: PathBuf,
    pub(crate) view: SharedRingView,
    /// Chunk counts of shards ahead, read from their headers once (0: unreadable).
    sizes: Mutex<BTreeMap<u64, u64>>,
}

/// The pipeline's ring size from its manifest (`Manifest::ring_slots`; 0 = no ring). `None`: no
/// manifest yet, an unreadable one, or one written before the field existed.
fn manifest_ring_slots(dir: &Path) -> Option<u64> {
    Manifest::read(dir).ok().flatten()?.ring_slots.map(u64::from)
}

/// Unreleased train shards on disk (seq >= `released_below`): the ring slots in use.
fn slots_used(dir: &Path, released_below: u64) -> u64 {
    list_shards(dir, Split::Train).map_or(0, |s| s.iter().filter(|(seq, _)| *seq >= released_below).count() as u64)
}

impl RingWatch {
    pub(crate) fn new(dir: &Path, view: SharedRingView) -> Self {
        RingWatch { dir: dir.into(), view, sizes: Mutex::new(BTreeMap::new()) }
    }

    fn shard_chunks(&self, seq: u64, path: &Path) -> u64 {
        if let Some(&n) = self.view.lock().shard_chunks.get(&seq) {
            return n;
        }
        let mut sizes = self.sizes.lock().unwrap_or_else(|p| p.into_inner());
        *sizes.entry(seq).or_insert_with(|| ShardReader::open(path).map_or(0, |r| r.n_chunks() as u64))
    }

    /// Published chunks not yet handed out from position (`shard`, `chunk`) on, counted up to
    /// `limit` (enough to decide).
    pub(crate) fn chunks_ahead(&self, shard: u64, chunk: u64, limit: u64) -> u64 {
        let Ok(shards) = list_shards(&self.dir, Split::Train) else { return 0 };
        let mut ahead = 0;
        for (seq, path) in shards.iter().filter(|(seq, _)| *seq >= shard) {
            let n = self.shard_chunks(*seq, path);
            ahead += if *seq == shard { n.saturating_sub(chunk) } else { n };
            if ahead >= limit {
                break;
            }
        }
        ahead
    }

    /// Whether the pipeline is blocked, or will be after publishing one more shard, on a full
    /// ring: its unreleased train shards on disk (seq >= `released_below`) fill all but one of its
    /// `ring_slots`. Without a ring size in the manifest this cannot be known: `true`.
    pub(crate) fn pipeline_may_block(&self, released_below: u64) -> bool {
        match manifest_ring_slots(&self.dir) {
            None => true,
            Some(0) => false,
            Some(slots) => slots_used(&self.dir, released_below) + 1 >= slots,
        }
    }

    /// Drops cached sizes of released shards.
    pub(crate) fn released(&self, below: u64) {
        self.view.lock().shard_chunks.retain(|&seq, _| seq >= below);
        self.sizes.lock().unwrap_or_else(|p| p.into_inner()).retain(|&seq, _| seq >= below);
    }

    /// `ring 3/3 full | shard 7 chunk 12/40, 2 ready ahead, released <6, waiting for pipeline`:
    /// the slots in use (unreleased train shards on disk) out of the pipeline's `--ring-slots`
    /// (`?` before its manifest says), where the trainer reads, and who waits on whom.
    pub(crate) fn status(&self, shard: u64, chunk: u64, released_below: u64, ended: bool) -> String {
        let ahead =
            list_shards(&self.dir, Split::Train).map_or(0, |s| s.iter().filter(|(seq, _)| *seq > shard).count());
        let used = slots_used(&self.dir, released_below);
        let slots = manifest_ring_slots(&self.dir);
        let full = slots.is_some_and(|n| n > 0 && used >= n);
        let slots_text = match slots {
            Some(0) => format!("ring {used} unreleased (no recycling)"),
            Some(n) => format!("ring {used}/{n}{}", if full { " full" } else { "" }),
            None => format!("ring {used}/?"),
        };
        let view = self.view.lock();
        let of = view.shard_chunks.get(&shard).map_or(String::new(), |n| format!("/{n}"));
        let mut s =
            format!("{slots_text} | shard {shard} chunk {chunk}{of}, {ahead} ready ahead, released <{released_below}");
        if ended {
            s.push_str(", all read");
        } else if view.waiting {
            s.push_str(", trainer waiting for pipeline");
        } else if view.pipeline_finished {
            s.push_str(", pipeline finished");
        } else if full {
            s.push_str(", pipeline waiting for trainer");
        }
        if !view.skipped.is_empty() {
            s.push_str(&format!(", {} corrupt skipped", view.skipped.len()));
        }
        s
    }
}
