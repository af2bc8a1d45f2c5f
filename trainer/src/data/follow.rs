//! Follow mode (`--follow`): train on train shards as the pipeline publishes them (the ring
//! protocol of `mamba_shards::ring`). Shards are taken in seq order; each is verified completely
//! (every frame decompressed and checksummed) before any of its chunks is used, then its chunks
//! are read exactly once in an order seeded by (`--seed`, shard seq). A shard that cannot be
//! opened or has a corrupt frame is reported (`tracing::error!`, naming file and chunk) and
//! skipped whole: none of its chunks is trained on, and it counts as consumed, so it is released
//! like any other. A shard that does not fit the model (wrong seq_len or vocabulary) is a
//! configuration error and stops training.
//!
//! When no new shard is published the source polls the directory (`mamba_shards::ring::poll_interval`:
//! every 20 ms for the first 5 s, then every 200 ms) and logs every
//! [`LOG_EVERY`] that it waits for the pipeline. Once `manifest.json` says the pipeline finished
//! and no unread shard remains, the data has ended.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use mamba_shards::format::{shard_file_name, Split};
use mamba_shards::ring::list_shards;
use mamba_shards::{Manifest, ShardReader};

use super::error::DataError;
use super::manifest::pipeline_finished;
use super::order::{permutation, OrderKind};
use super::position::{Cursor, DataPosition};
use super::prefetch::ChunkSource;
use super::validate::check_fits_model;

/// How often the wait is logged.
pub(crate) const LOG_EVERY: Duration = Duration::from_secs(10);

/// What the loader thread knows about the ring, shared with `TrainData` for status lines.
#[derive(Debug, Default)]
pub(crate) struct RingView {
    /// The thread is waiting for the pipeline to publish the next train shard.
    pub waiting: bool,
    /// The pipeline's manifest says it has finished.
    pub pipeline_finished: bool,
    /// Shards skipped as unreadable or corrupt: (seq, the error naming file and chunk).
    pub skipped: Vec<(u64, String)>,
    /// Chunk counts of the shards opened so far (entries below the release cursor are pruned).
    pub shard_chunks: BTreeMap<u64, u64>,
}

#[derive(Clone, Default)]
pub(crate) struct SharedRingView(Arc<Mutex<RingView>>);

impl SharedRingView {
    /// The view; a thread that panicked while holding the lock left nothing half-updated that
    /// matters for status lines, so a poisoned lock is simply taken over.
    pub(crate) fn lock(&self) -> MutexGuard<'_, RingView> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The shard being read.
struct Current {
    seq: u64,
    reader: ShardReader,
    order: Vec<u32>,
    /// Entries of `order` already read.
    k: u64,
}

pub(crate) struct FollowSource {
    dir: PathBuf,
    seq_len: usize,
    vocab_size: usize,
    seed: u64,
    /// The seq of the next shard to take (the first published one >= this).
    next_shard: u64,
    /// Chunks of `next_shard` already consumed before a resume.
    resume_chunk: u64,
    /// The release cursor at start: shards below it may be gone.
    released_at_start: u64,
    current: Option<Current>,
    /// (shard seq, chunk index in the shard) of the chunk read last.
    last: Option<(u64, u64)>,
    view: SharedRingView,
}

impl FollowSource {
    /// Starts at `resume` or, in a fresh run, at the release cursor left by an earlier trainer
    /// (shards below it may already be deleted by the pipeline).
    pub(crate) fn new(
        dir: &Path,
        seq_len: usize,
        vocab_size: usize,
        seed: u64,
        resume: Option<&DataPosition>,
        released_below: u64,
        view: SharedRingView,
    ) -> Result<Self, DataError> {
        let (next_shard, resume_chunk) = match resume.map(|p| p.cursor) {
            None => (released_below, 0),
            Some(Cursor::Follow { shard, chunk }) => (shard, chunk),
            Some(Cursor::Static { .. }) => {
                return Err(DataError::ResumeMismatch {
                    what: "a static-mode position cannot resume a --follow run".into(),
                })
            }
        };
        if resume_chunk > 0 {
            let path = dir.join(shard_file_name(Split::Train, next_shard));
            if !path.exists() {
                return Err(DataError::MissingShard {
                    dir: dir.into(),
                    seq: next_shard,
                    what: format!(
                        "{} does not exist (was it released by a later checkpoint and recycled?)",
                        path.display()
                    ),
                });
            }
        }
        Ok(FollowSource {
            dir: dir.into(),
            seq_len,
            vocab_size,
            seed,
            next_shard,
            resume_chunk,
            released_at_start: released_below,
            current: None,
            last: None,
            view,
        })
    }

    /// Waits for the next published shard and opens it. `false`: the data ended or `stop` was raised.
    fn take_next_shard(&mut self, stop: &AtomicBool) -> Result<bool, DataError> {
        let started = Instant::now();
        let mut last_log: Option<Instant> = None;
        loop {
            if stop.load(Ordering::SeqCst) {
                return Ok(false);
            }
            // Read the manifest before listing: a shard published before "finished" is then seen.
            let finished = pipeline_finished(&self.dir)?;
            let next = list_shards(&self.dir, Split::Train)?.into_iter().find(|(seq, _)| *seq >= self.next_shard);
            if let Some((seq, path)) = next {
                self.view.lock().waiting = false;
                self.open_shard(seq, &path)?;
                return Ok(true);
            }
            if finished {
                let mut view = self.view.lock();
                view.pipeline_finished = true;
                view.waiting = false;
                tracing::info!("pipeline finished and every published train shard was read");
                return Ok(false);
            }
            self.view.lock().waiting = true;
            if last_log.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
                last_log = Some(Instant::now());
                let pipeline = match Manifest::read(&self.dir) {
                    Ok(Some(m)) => format!(
                        "its manifest: {} train shards published, ring slots {}",
                        m.train.next_seq,
                        m.ring_slots.map_or("?".into(), |n| n.to_string())
                    ),
                    Ok(None) => "no manifest yet: is the pipeline running?".into(),
                    Err(e) => format!("{e}"),
                };
                tracing::info!(
                    "ring: trainer waiting for the pipeline to publish train shard {} in {} ({:.0} s so far; {pipeline})",
                    self.next_shard,
                    self.dir.display(),
                    started.elapsed().as_secs_f64()
                );
            }
            std::thread::sleep(mamba_shards::ring::poll_interval(started.elapsed()));
        }
    }

    /// Opens, checks and verifies shard `seq`; a bad shard is reported and skipped.
    fn open_shard(&mut self, seq: u64, path: &Path) -> Result<(), DataError> {
        if seq > self.next_shard {
            if self.next_shard < self.released_at_start {
                return Err(DataError::MissingShard {
                    dir: self.dir.clone(),
                    seq: self.next_shard,
                    what: format!(
                        "the release cursor is at {} and the oldest train shard left is {seq}",
                        self.released_at_start
                    ),
                });
            }
            if self.resume_chunk > 0 {
                return Err(DataError::MissingShard {
                    dir: self.dir.clone(),
                    seq: self.next_shard,
                    what: "it disappeared".into(),
                });
            }
            tracing::warn!(
                "train shards {}..{seq} were never published; continuing with {}",
                self.next_shard,
                path.display()
            );
        }
        let resume_chunk = std::mem::take(&mut self.resume_chunk);
        let verified = ShardReader::open(path).and_then(|reader| reader.verify().map(|()| reader));
        let reader = match verified {
            Ok(reader) => reader,
            Err(e) => {
                tracing::error!("skipping train shard {seq}, none of its chunks will be trained on: {e}");
                self.view.lock().skipped.push((seq, e.to_string()));
                self.next_shard = seq + 1;
                return Ok(());
            }
        };
        check_fits_model(&reader, self.seq_len, self.vocab_size)?;
        let n = reader.n_chunks() as u64;
        if resume_chunk >= n && n > 0 {
            return Err(DataError::ResumeMismatch {
                what: format!("{}: chunk {resume_chunk} is past its {n} chunks", path.display()),
            });
        }
        self.view.lock().shard_chunks.insert(seq, n);
        tracing::debug!("reading train shard {seq} ({n} chunks) from {}", path.display());
        self.next_shard = seq;
        let order = permutation(n as u32, self.seed, OrderKind::FollowShard, seq);
        self.current = Some(Current { seq, reader, order, k: resume_chunk });
        Ok(())
    }
}

impl ChunkSource for FollowSource {
    /// Where the next chunk comes from.
    fn position(&self) -> DataPosition {
        let cursor = match &self.current {
            Some(cur) => Cursor::Follow { shard: cur.seq, chunk: cur.k },
            None => Cursor::Follow { shard: self.next_shard, chunk: self.resume_chunk },
        };
        DataPosition { seed: self.seed, cursor }
    }

    fn last_chunk_id(&self) -> Option<(u64, u64)> {
        self.last
    }

    fn next_chunk(&mut self, out: &mut Vec<u32>, stop: &AtomicBool) -> Result<Option<DataPosition>, DataError> {
        loop {
            if let Some(cur) = &mut self.current {
                let n = cur.order.len() as u64;
                if cur.k < n {
                    let index = cur.order[cur.k as usize];
                    cur.reader.read_chunk_into(index as usize, out)?;
                    self.last = Some((cur.seq, u64::from(index)));
                    let after = DataPosition::follow_after(self.seed, cur.seq, cur.k, n);
                    cur.k += 1;
                    if let Cursor::Follow { shard, .. } = after.cursor {
                        self.next_shard = shard;
                    }
                    if cur.k == n {
                        self.current = None;
                    }
                    return Ok(Some(after));
                }
                // An empty shard: nothing to read.
                self.next_shard = cur.seq + 1;
                self.current = None;
            }
            if !self.take_next_shard(stop)? {
                return Ok(None);
            }
        }
    }
}
