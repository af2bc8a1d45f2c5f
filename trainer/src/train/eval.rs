//! Validation loss: the mean next-token loss over a fixed set of val chunks, evaluated in
//! micro-batches (every chunk has the same length, so the mean of chunk means is the token mean).
//!
//! [`ValSource`] holds the fixed val set of the data dir (`data::load_val_set`). In follow mode
//! the pipeline may not have published it when training starts: then every eval waits for it,
//! saying so every [`LOG_EVERY`], and stops waiting on a signal. Outside follow mode a missing set
//! means no evaluation (said once at start).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use candle_core::{Device, Tensor};

use crate::data::{load_val_set, ValChunks, ValSetState};
use crate::model::MambaLM;

/// How often the data dir is checked while an eval waits for the val set.
const POLL: Duration = Duration::from_millis(200);
/// How often that wait is logged.
const LOG_EVERY: Duration = Duration::from_secs(10);

pub fn eval_loss(model: &MambaLM, chunks: &[Vec<u32>], micro_batch: usize, device: &Device) -> Result<Option<f64>> {
    if chunks.is_empty() {
        return Ok(None);
    }
    let mut sum = 0f64;
    for group in chunks.chunks(micro_batch.max(1)) {
        let chunk = group[0].len();
        let flat: Vec<u32> = group.iter().flat_map(|c| c.iter().copied()).collect();
        let all = Tensor::from_vec(flat, (group.len(), chunk), device)?; // (b, l+1)
        let inputs = all.narrow(1, 0, chunk - 1)?.contiguous()?; // (b, l)
        let targets = all.narrow(1, 1, chunk - 1)?.contiguous()?; // (b, l)
        let loss = model.loss(&inputs, &targets)?.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?;
        sum += loss * group.len() as f64;
    }
    Ok(Some(sum / chunks.len() as f64))
}

/// The fixed val set of a run, loaded once it exists.
pub struct ValSource {
    dir: PathBuf,
    seq_len: usize,
    vocab_size: usize,
    max_chunks: usize,
    follow: bool,
    /// `Some` once loaded (possibly empty: the data has no val chunk).
    loaded: Option<ValChunks>,
}

impl ValSource {
    /// Loads the set if it is there; in follow mode a set not yet published is waited for at the
    /// first eval, otherwise evaluation is skipped (with a warning).
    pub fn open(dir: PathBuf, seq_len: usize, vocab_size: usize, max_chunks: usize, follow: bool) -> Result<ValSource> {
        let mut v = ValSource { dir, seq_len, vocab_size, max_chunks, follow, loaded: None };
        if let Some(why) = v.try_load()? {
            if follow {
                tracing::info!(
                    "the fixed val set is not published in {} yet ({why}): evaluations will wait for it",
                    v.dir.display()
                );
            } else {
                tracing::warn!("no val set in {} ({why}): evaluation is skipped", v.dir.display());
                v.loaded =
                    Some(ValChunks { chunks: Vec::new(), set_chunks: Some(0), digest: crate::data::val_digest(&[]) });
            }
        }
        Ok(v)
    }

    /// Loads the set when it is there; `Some(why)` while it is not.
    fn try_load(&mut self) -> Result<Option<String>> {
        if self.loaded.is_some() {
            return Ok(None);
        }
        let state = load_val_set(&self.dir, self.seq_len, self.vocab_size, self.max_chunks)
            .with_context(|| format!("loading the fixed val set of {}", self.dir.display()))?;
        let set = match state {
            ValSetState::Pending(why) => return Ok(Some(why)),
            ValSetState::Ready(set) => set,
        };
        let n = set.chunks.len();
        let total = set.set_chunks.map_or(String::new(), |k| format!(" of its {k}"));
        if n == 0 {
            tracing::warn!("no val chunks in {}: evaluation is skipped", self.dir.display());
        } else if n < self.max_chunks {
            tracing::warn!(
                "--eval-chunks {} but the val set of {} holds {n} chunks: evaluating on {n}",
                self.max_chunks,
                self.dir.display()
            );
        } else {
            tracing::info!("val set: {n}{total} chunks of {} (digest {})", self.dir.display(), set.digest);
        }
        self.loaded = Some(set);
        Ok(None)
    }

    /// The set for the eval at `step`: waits (follow mode) until it is published, logging the
    /// wait; `None` when `stop` is raised first.
    pub fn wait(&mut self, step: usize, stop: &AtomicBool) -> Result<Option<&ValChunks>> {
        let started = Instant::now();
        let mut last_log: Option<Instant> = None;
        while let Some(why) = self.try_load()? {
            if stop.load(Ordering::SeqCst) {
                tracing::info!("eval at step {step} skipped: stopped while waiting for the val set");
                return Ok(None);
            }
            if last_log.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
                last_log = Some(Instant::now());
                tracing::info!(
                    "eval at step {step}: waiting for the pipeline to publish the fixed val set in {} ({:.0} s so far; {why})",
                    self.dir.display(),
                    started.elapsed().as_secs_f64()
                );
            }
            std::thread::sleep(POLL);
        }
        debug_assert!(self.follow || self.loaded.is_some());
        Ok(self.loaded.as_ref())
    }
}
