//! Training data from shard files (format v1, `mamba_shards`).
//!
//! # API used by the training loop
//! ```text
//! let mut data = TrainData::open(spec, resume_position)?;   // validates shards, starts the prefetch thread
//! data.set_batches_per_step(grad_accum);                     // follow mode: how far wants_checkpoint looks ahead
//! loop {
//!     // follow mode, at an optimizer-step boundary: if the loader is about to run dry while it
//!     // holds fully read shards the pipeline may not recycle yet, save a checkpoint now
//!     if data.wants_checkpoint() { save(checkpoint with data.position()); data.checkpoint_saved(&pos)?; }
//!     let Some(batch) = data.next_batch()? else { break };  // None: follow mode, pipeline finished, all read
//!     // batch.tokens: batch.micro_batch rows × (seq_len + 1) tokens, row-major;
//!     // inputs = row[..seq_len], targets = row[1..]; batch.wait = time blocked here
//!     // batch.position_after goes into the checkpoint of the step that consumed this batch
//! }
//! // after every checkpoint save: data.checkpoint_saved(&saved_position)?  (follow: releases shards)
//! let val = load_val_set(dir, seq_len, vocab_size, max_chunks)?;   // the manifest's fixed val set, or Pending
//! ```
//!
//! - [`DataSpec`], [`Batch`], [`TrainData`]: this file.
//! - [`DataPosition`] (`position.rs`): the exact place in the stream, saved in checkpoints;
//!   `TrainData::open(spec, Some(pos))` yields exactly the batches an uninterrupted run would have.
//! - Static mode (`static_order.rs`): all train shards present at start, one seeded permutation of
//!   all their chunks per epoch, epoch after epoch.
//! - Follow mode (`follow.rs`): train shards in seq order as the pipeline publishes them, each
//!   chunk once, corrupt shards reported and skipped; ends when the pipeline's manifest says it has
//!   finished and everything was read (`manifest.rs`).
//! - The loop's view of the ring for `wants_checkpoint` and status lines (`ring_watch.rs`; it
//!   reads the pipeline's ring size, `Manifest::ring_slots`, from its manifest).
//! - Background prefetch (`prefetch.rs`), seeded orders (`order.rs`), model-fit checks
//!   (`validate.rs`), the validation set (`val.rs`), errors (`error.rs`).
//! - Static mode's `--on-bad-chunk fail|skip` (`bad_chunk.rs`): after each step's batches,
//!   `data.take_skipped_chunks()` says which chunks were left out as corrupt.
//!
//! # Release protocol and `wants_checkpoint` (follow mode)
//! The trainer may tell the pipeline to recycle train shard S (release file,
//! `train_released_below > S`) only once a *saved checkpoint* no longer needs S, so a killed
//! trainer can always resume from its last checkpoint. [`TrainData::checkpoint_saved`] does that.
//! The pipeline blocks while its ring of N slots is full, so a trainer that is about to run out of
//! published data while holding fully read, unreleased shards must save a checkpoint to let the
//! pipeline go on: [`TrainData::wants_checkpoint`] says when (see its doc). This is deadlock free
//! when N ≥ 2 and one optimizer step (grad_accum × micro_batch chunks) spans at most N − 1 shard
//! boundaries (i.e. a shard holds at least one step's chunks when N = 2). Since only checkpoints
//! release shards, a ring of N shards lets the trainer run about (N − 1) shards past its last
//! checkpoint: make `--save-every` × step chunks small against that, or expect extra checkpoints.
//!
//! The last batch of follow mode may have fewer than `micro_batch` rows ([`Batch::micro_batch`]
//! says how many), so that every published chunk is trained on exactly once.

mod bad_chunk;
mod error;
mod follow;
mod manifest;
mod order;
mod position;
mod prefetch;
mod ring_watch;
mod static_order;
mod val;
mod validate;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use mamba_shards::format::Split;
use mamba_shards::ring::{list_shards, read_release, write_release, Release};
use mamba_shards::shard_params::chunk_tokens_for;
use mamba_shards::ShardParams;

pub use bad_chunk::{OnBadChunk, SkippedChunk};
pub use error::DataError;
pub use position::{Cursor, DataPosition};
pub use val::{digest as val_digest, load_val_chunks, load_val_set, ValChunks, ValSetState};

use follow::{FollowSource, SharedRingView};
use prefetch::{ChunkSource, Prefetcher, Staged};
use ring_watch::RingWatch;
use static_order::StaticOrder;

/// The shard parameters (sequence length, vocabulary) of the train shards in `dir`, read from the
/// first one's header; `None` while there is no train shard.
pub fn train_shard_params(dir: &Path) -> Result<Option<ShardParams>, DataError> {
    match list_shards(dir, Split::Train)?.first() {
        Some((_, path)) => Ok(Some(ShardParams::from_header(mamba_shards::ShardReader::open(path)?.header()))),
        None => Ok(None),
    }
}

/// What to load and how.
#[derive(Debug, Clone)]
pub struct DataSpec {
    /// The shard directory (`--data`).
    pub dir: PathBuf,
    /// Tokens per training sequence; shard chunks hold seq_len + 1 tokens.
    pub seq_len: usize,
    /// The model's (padded) vocabulary: a shard's vocabulary must not be larger.
    pub vocab_size: usize,
    /// Seeds the chunk orders.
    pub seed: u64,
    /// Follow the pipeline's ring (`--follow`) instead of a static epoch loop.
    pub follow: bool,
    /// Sequences per batch.
    pub micro_batch: usize,
    /// Batches staged ahead by the background thread (e.g. 4).
    pub prefetch: usize,
    /// Static mode: stop at a corrupt chunk, or skip it (`--on-bad-chunk`).
    pub on_bad_chunk: OnBadChunk,
}

/// `micro_batch` sequences of `seq_len + 1` tokens: the batch carries its own shape.
#[derive(Debug, Clone)]
pub struct Batch {
    /// micro_batch × (seq_len + 1) token ids, row-major.
    pub tokens: Vec<u32>,
    /// Rows in `tokens`: `spec.micro_batch`, except possibly for follow mode's last batch.
    pub micro_batch: usize,
    /// Tokens per training sequence (each row holds `seq_len + 1`: inputs, then one more target).
    pub seq_len: usize,
    /// The position right after this batch: what a checkpoint taken after it must store.
    pub position_after: DataPosition,
    /// Follow mode: (train shard seq, chunk index inside that shard) of each row, in row order,
    /// so a run's metrics can show that every published chunk was trained on once. Empty in
    /// static mode.
    pub chunks: Vec<(u64, u64)>,
    /// How long `next_batch` blocked for this batch (0 when it was already staged).
    pub wait: Duration,
}

impl Batch {
    /// Tokens per row: `seq_len + 1` ([`mamba_shards::shard_params::chunk_tokens_for`]).
    pub fn row_tokens(&self) -> usize {
        chunk_tokens_for(self.seq_len)
    }
}

pub struct TrainData {
    spec: DataSpec,
    prefetch: Prefetcher,
    /// The position after the last batch handed out (or the start position).
    position: DataPosition,
    /// Follow mode: the release cursor written so far, and our view of the ring.
    released_below: u64,
    ring: Option<RingWatch>,
    /// Batches one optimizer step consumes (see `set_batches_per_step`).
    batches_per_step: usize,
    ended: bool,
    /// Chunks skipped as corrupt (`--on-bad-chunk skip`) and not yet taken.
    skipped: Vec<SkippedChunk>,
}

impl TrainData {
    /// Validates the data (static: every train shard's header and index, naming the bad file) and
    /// starts the prefetch thread at `resume` (a checkpoint's position) or at the beginning.
    pub fn open(spec: DataSpec, resume: Option<DataPosition>) -> Result<Self, DataError> {
        if spec.seq_len == 0 || spec.micro_batch == 0 || spec.vocab_size == 0 {
            return Err(DataError::BadSpec {
                what: format!(
                    "seq_len {}, micro_batch {} and vocab_size {} must all be positive",
                    spec.seq_len, spec.micro_batch, spec.vocab_size
                ),
            });
        }
        if let Some(pos) = &resume {
            pos.check_resume(spec.seed, spec.follow)?;
        }
        let (source, position, released_below, ring): (Box<dyn ChunkSource>, _, _, _) = if spec.follow {
            manifest::check_manifest_fits_model(&spec.dir, spec.seq_len, spec.vocab_size)?;
            let released_below = read_release(&spec.dir)?.map_or(0, |r| r.train_released_below);
            let ring = SharedRingView::default();
            let source = FollowSource::new(
                &spec.dir,
                spec.seq_len,
                spec.vocab_size,
                spec.seed,
                resume.as_ref(),
                released_below,
                ring.clone(),
            )?;
            let position = source.position();
            if resume.is_none() && released_below > 0 {
                tracing::info!("follow mode starts at train shard {released_below}: an earlier trainer released the shards below it");
            }
            (Box::new(source), position, released_below, Some(RingWatch::new(&spec.dir, ring)))
        } else {
            let source = StaticOrder::open(
                &spec.dir,
                spec.seq_len,
                spec.vocab_size,
                spec.seed,
                resume.as_ref(),
                spec.on_bad_chunk,
            )?;
            let position = source.position();
            (Box::new(source), position, 0, None)
        };
        let prefetch = Prefetcher::spawn(source, spec.micro_batch, spec.seq_len, spec.prefetch)?;
        let batches_per_step = spec.prefetch.max(1);
        Ok(TrainData {
            spec,
            prefetch,
            position,
            released_below,
            ring,
            batches_per_step,
            ended: false,
            skipped: Vec::new(),
        })
    }

    /// Tells follow mode how many batches one optimizer step consumes (the gradient-accumulation
    /// count): [`TrainData::wants_checkpoint`] asks for a checkpoint while less than one step of
    /// published data is left, because a checkpoint can only be taken between steps. Default:
    /// `spec.prefetch` (at least 1). Call it once after `open`.
    pub fn set_batches_per_step(&mut self, batches: usize) {
        self.batches_per_step = batches.max(1);
    }

    /// The next batch, blocking until it is staged. `None` only in follow mode, once the pipeline's
    /// manifest says it finished and every published chunk was handed out.
    pub fn next_batch(&mut self) -> Result<Option<Batch>, DataError> {
        self.next_batch_inner(None)
    }

    /// Like [`TrainData::next_batch`], but gives up waiting (`Ok(None)`, nothing consumed) as
    /// soon as `stop` turns true, e.g. on SIGINT while follow mode waits for the pipeline. The
    /// caller tells this apart from the end of the data by looking at `stop`.
    pub fn next_batch_or_stop(&mut self, stop: &AtomicBool) -> Result<Option<Batch>, DataError> {
        self.next_batch_inner(Some(stop))
    }

    fn next_batch_inner(&mut self, stop: Option<&AtomicBool>) -> Result<Option<Batch>, DataError> {
        if self.ended {
            return Ok(None);
        }
        let started = Instant::now();
        loop {
            let Some(staged) = self.prefetch.recv(stop)? else { return Ok(None) };
            match staged {
                Staged::Skipped(bad) => {
                    tracing::warn!(
                        "--on-bad-chunk skip: leaving out chunk {} of {}: {}",
                        bad.chunk,
                        bad.shard.display(),
                        bad.error
                    );
                    self.skipped.push(bad);
                }
                Staged::Batch(mut batch) => {
                    batch.wait = started.elapsed();
                    self.position = batch.position_after.clone();
                    return Ok(Some(batch));
                }
                Staged::End(position) => {
                    self.ended = true;
                    self.position = position;
                    return Ok(None);
                }
                Staged::Failed(e) => return Err(e),
            }
        }
    }

    /// The chunks left out as corrupt (`--on-bad-chunk skip`) since the last call: those that
    /// stood before or among the rows of the batches handed out since.
    pub fn take_skipped_chunks(&mut self) -> Vec<SkippedChunk> {
        std::mem::take(&mut self.skipped)
    }

    /// The position after the last batch handed out (the start position before the first).
    pub fn position(&self) -> &DataPosition {
        &self.position
    }

    /// Call after a checkpoint holding `saved` is durably written. Follow mode: releases (through
    /// `trainer.release.json`) the train shards below `saved`'s shard, which no checkpoint needs
    /// any more. Static mode: nothing to do.
    pub fn checkpoint_saved(&mut self, saved: &DataPosition) -> Result<(), DataError> {
        if !self.spec.follow {
            return Ok(());
        }
        let Some(shard) = saved.follow_shard() else {
            return Err(DataError::BadSpec {
                what: format!("checkpoint_saved got a static-mode position ({saved}) in follow mode"),
            });
        };
        if shard > self.released_below {
            write_release(&self.spec.dir, Release { train_released_below: shard })?;
            tracing::info!("released train shards below {shard} to the pipeline");
            self.released_below = shard;
            if let Some(ring) = &self.ring {
                ring.released(shard);
            }
        }
        Ok(())
    }

    /// Follow mode, checked by the training loop at every optimizer-step boundary: `true` when
    /// saving a checkpoint now (then calling [`TrainData::checkpoint_saved`]) is needed to keep
    /// the pipeline going, namely when all of these hold:
    /// - some train shards were fully read (the last batch's position is past them) but are not
    ///   released yet;
    /// - less than one step of published data ([`TrainData::set_batches_per_step`]) is left
    ///   ahead of the position (staged batches included);
    /// - the pipeline may be blocked on its full ring (decided from `ring_slots` in its manifest
    ///   when it is there, assumed otherwise) and has not finished.
    ///
    /// A checkpoint can only be taken between steps, so waiting until the next batch blocks would
    /// be too late: the step would block half way while the pipeline waits for a release. After the
    /// checkpoint this is `false` again until more shards are read, so it costs at most one extra
    /// checkpoint per ring's worth of shards (per shard while the pipeline is the bottleneck and
    /// the manifest does not give the ring size). Always `false` in static mode.
    pub fn wants_checkpoint(&self) -> bool {
        let (Some(ring), Cursor::Follow { shard, chunk }) = (&self.ring, self.position.cursor) else {
            return false;
        };
        if self.ended || shard <= self.released_below {
            return false;
        }
        if ring.view.lock().pipeline_finished {
            return false;
        }
        let step_chunks = (self.batches_per_step * self.spec.micro_batch) as u64;
        let running_dry = ring.chunks_ahead(shard, chunk, step_chunks) < step_chunks;
        running_dry && ring.pipeline_may_block(self.released_below)
    }

    /// A short text for log lines, e.g. `static 1234/5678 chunks epoch 2` or
    /// `ring 3/3 full | shard 7 chunk 12/40, 2 ready ahead, released <6, pipeline waiting for trainer`.
    pub fn ring_status(&self) -> String {
        match (self.position.cursor, &self.ring) {
            (Cursor::Static { epoch, index, total_chunks, .. }, _) => {
                format!("static {index}/{total_chunks} chunks epoch {epoch}")
            }
            (Cursor::Follow { shard, chunk }, Some(ring)) => ring.status(shard, chunk, self.released_below, self.ended),
            (Cursor::Follow { shard, chunk }, None) => format!("follow shard {shard} chunk {chunk}"),
        }
    }

    /// Follow mode: the train shards skipped so far as unreadable or corrupt, each with its error
    /// (which names the file and chunk). Empty in static mode, where a bad chunk is an error.
    pub fn skipped_shards(&self) -> Vec<(u64, String)> {
        self.ring.as_ref().map_or(Vec::new(), |ring| ring.view.lock().skipped.clone())
    }

    /// Static mode: the epoch of the next chunk (0 in follow mode).
    pub fn epoch(&self) -> u64 {
        self.position.epoch()
    }

    /// The settings this loader was opened with.
    pub fn spec(&self) -> &DataSpec {
        &self.spec
    }
}
