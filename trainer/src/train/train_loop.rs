//! The loop of `trainer train`, one optimizer step per iteration, in commented phases: stop?,
//! checkpoint for the ring, data, forward/backward/update, log, eval, sample, checkpoint; then
//! the finish: final eval and checkpoint. [`TrainLoop`] holds everything the loop touches.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use candle_core::Device;

use super::data_dir::nothing_left;
use super::rank_group::RankGroup;
use super::step::NonFinite;
use super::{eval, report, StopReason, TrainOutcome};
use crate::checkpoint::{save_checkpoint, CheckpointContents, TrainerState};
use crate::config::TrainConfig;
use crate::data::{Batch, DataPosition, TrainData};
use crate::generate::PromptSampler;
use crate::model::MambaConfig;

pub(super) struct TrainLoop<'a> {
    pub cfg: &'a TrainConfig,
    pub stop: &'a AtomicBool,
    pub model: MambaConfig,
    /// The data's sequence length, recorded in checkpoints.
    pub seq_len: usize,
    pub ranks: RankGroup,
    /// Rank 0's device: the loop's clock and evaluation run on it.
    pub device: Device,
    pub data: TrainData,
    /// Sequences per micro-batch (resolved; also the eval's batch).
    pub micro_batch: usize,
    /// Micro-batches per optimizer step over all ranks (grad_accum × world).
    pub batches_per_step: usize,
    pub val: eval::ValSource,
    pub metrics: report::Report,
    pub sampler: Option<PromptSampler>,
    /// The first step of this process (the resumed step, or 0).
    pub start_step: usize,
    /// Optimizer steps completed (including those before a resume).
    pub step: usize,
    pub tokens: u64,
    pub last_val: Option<f64>,
    /// The step of the last checkpoint saved (or resumed from).
    pub saved_step: Option<usize>,
    pub losses: Vec<f64>,
    pub reason: StopReason,
    /// Set when a signal arrives while a step's batches are being gathered: the position before
    /// that step, which the final checkpoint stores (its batches were not trained on).
    pub interrupted_at: Option<DataPosition>,
    pub skipped_chunks: u64,
    /// The step of the last eval (the final one is not repeated when the last step had one).
    pub evaluated_at: Option<usize>,
}

impl TrainLoop<'_> {
    /// Runs optimizer steps until `--steps`, the end of the data, or a signal.
    pub fn run(&mut self) -> Result<()> {
        while self.step < self.cfg.steps {
            if self.stop.load(Ordering::SeqCst) {
                self.reason = StopReason::Signal;
                break;
            }
            // Follow mode: the pipeline needs shards released, which needs a checkpoint.
            if self.data.wants_checkpoint() && self.saved_step != Some(self.step) {
                self.checkpoint(self.data.position().clone())?;
            }

            // -- data: this step's micro-batches (the last ones of follow mode may be short)
            let Some((batches, wait)) = self.gather_batches()? else { break };

            // -- forward, backward, (all-reduce,) update on every rank (timed; rank 0's device
            //    synchronised around the clock reads)
            let chunks = batches.iter().flat_map(|b| b.chunks.iter().map(|&(shard, chunk)| [shard, chunk])).collect();
            let step_tokens: usize = batches.iter().map(|b| b.micro_batch * b.seq_len).sum();
            self.device.synchronize()?;
            let t0 = Instant::now();
            let result = match self.ranks.step(batches, self.step) {
                Ok(r) => r,
                Err(e) if e.is::<NonFinite>() => {
                    let kept = crate::checkpoint::latest_checkpoint(&self.cfg.out)?;
                    let kept = kept.map_or("none saved yet".to_string(), |p| p.display().to_string());
                    return Err(e.context(format!("training diverged; the last good checkpoint is kept: {kept}")));
                }
                Err(e) => return Err(e),
            };
            self.device.synchronize()?;
            let elapsed = t0.elapsed();
            self.step += 1;
            let step_tokens = step_tokens as u64;
            self.tokens += step_tokens;
            self.losses.push(result.loss);

            // -- log (rank 0; tokens/s over all ranks)
            self.metrics.step(
                self.step,
                self.tokens,
                &result,
                step_tokens,
                elapsed,
                wait,
                &self.data.ring_status(),
                chunks,
            )?;

            // -- eval (outside the timed region)
            if self.cfg.eval_every > 0 && self.step.is_multiple_of(self.cfg.eval_every) && self.step < self.cfg.steps {
                self.eval()?;
                self.evaluated_at = Some(self.step);
            }
            // -- sample from the fixed prompt (outside the timed region)
            if let Some(sampler) = self.sampler.as_ref().filter(|_| self.step.is_multiple_of(self.cfg.sample_every)) {
                let text = sampler.sample(&self.ranks.leader().model, &self.device)?;
                self.metrics.sample(self.step, &self.cfg.sample_prompt, &text)?;
            }
            // -- checkpoint
            if self.cfg.save_every > 0 && self.step.is_multiple_of(self.cfg.save_every) && self.step < self.cfg.steps {
                self.checkpoint(self.data.position().clone())?;
            }
        }
        Ok(())
    }

    /// The end: a final eval (unless interrupted or just done) and checkpoint (unless just saved).
    pub fn finish(mut self) -> Result<TrainOutcome> {
        if self.reason != StopReason::Signal && self.step > self.start_step && self.evaluated_at != Some(self.step) {
            self.eval()?;
        }
        if self.saved_step != Some(self.step) {
            let pos = self.interrupted_at.take().unwrap_or_else(|| self.data.position().clone());
            self.save(&pos)?;
            self.data.checkpoint_saved(&pos)?;
        }
        self.metrics.flush()?;
        let TrainLoop { metrics, step, reason, losses, last_val, skipped_chunks, .. } = self;
        drop(metrics);
        tracing::info!("stopped at step {step}: {reason}");
        if skipped_chunks > 0 {
            tracing::warn!("--on-bad-chunk skip: {skipped_chunks} corrupt chunks were left out (see the warnings above and skipped_chunks in metrics.jsonl)");
        }
        Ok(TrainOutcome { stop: reason, step, losses, last_val_loss: last_val, skipped_chunks })
    }

    /// This step's `batches_per_step` micro-batches and the time spent waiting for them; `None`
    /// when the loop ends here (a signal while the loader waits for the pipeline stops at once,
    /// without this step; follow mode's data may be exhausted).
    fn gather_batches(&mut self) -> Result<Option<(Vec<Batch>, Duration)>> {
        let step_start = self.data.position().clone();
        let mut batches = Vec::with_capacity(self.batches_per_step);
        let mut wait = Duration::ZERO;
        while batches.len() < self.batches_per_step {
            let next = match self.data.next_batch_or_stop(self.stop) {
                Ok(next) => next,
                Err(e) => {
                    // A corrupt chunk (or other bad data): keep every completed step before failing.
                    let saved = if self.saved_step == Some(self.step) { Ok(()) } else { self.checkpoint(step_start) };
                    return Err(data_error(e, self.step, self.cfg, saved));
                }
            };
            match next {
                Some(b) => {
                    wait += b.wait;
                    batches.push(b);
                }
                None => break,
            }
        }
        if self.stop.load(Ordering::SeqCst) && batches.len() < self.batches_per_step {
            if !batches.is_empty() {
                tracing::info!(
                    "signal while waiting for data: the {} of {} micro-batches gathered for step {} are not trained on; the checkpoint keeps the position before them ({step_start})",
                    batches.len(), self.batches_per_step, self.step + 1
                );
            }
            self.reason = StopReason::Signal;
            self.interrupted_at = Some(step_start);
            return Ok(None);
        }
        if batches.is_empty() {
            if self.step == self.start_step {
                bail!("{}", nothing_left(self.cfg, self.data.position()));
            }
            self.reason = StopReason::DataExhausted;
            return Ok(None);
        }
        let skipped = self.data.take_skipped_chunks();
        self.skipped_chunks += skipped.len() as u64;
        self.metrics.skipped_chunks(skipped.len());
        let rows: usize = batches.iter().map(|b| b.micro_batch).sum();
        if rows < self.batches_per_step * self.micro_batch {
            tracing::info!(
                "step {} is short: {rows} of {} chunks, the last the pipeline published (it has finished)",
                self.step + 1,
                self.batches_per_step * self.micro_batch
            );
        }
        Ok(Some((batches, wait)))
    }

    /// Evaluates on the fixed val set (waiting for it in follow mode) and logs the result.
    fn eval(&mut self) -> Result<()> {
        let Some(set) = self.val.wait(self.step, self.stop)? else { return Ok(()) };
        let t0 = Instant::now();
        let loss = eval::eval_loss(&self.ranks.leader().model, &set.chunks, self.micro_batch, &self.device)?;
        if let Some(loss) = loss {
            self.metrics.eval(self.step, self.tokens, loss, set, t0.elapsed())?;
            self.last_val = Some(loss);
        }
        Ok(())
    }

    /// Saves a checkpoint at data position `pos`, then lets the data loader release what it no
    /// longer needs (follow mode).
    fn checkpoint(&mut self, pos: DataPosition) -> Result<()> {
        self.save(&pos)?;
        self.metrics.flush()?;
        self.data.checkpoint_saved(&pos)?;
        self.saved_step = Some(self.step);
        Ok(())
    }

    /// Writes the checkpoint of the current step with data position `pos`. Rank 0's replica is
    /// saved: every rank holds the same weights and optimizer state.
    fn save(&self, pos: &DataPosition) -> Result<()> {
        let cfg = self.cfg;
        let state = TrainerState {
            version: crate::VERSION.into(),
            git_hash: crate::GIT_HASH.into(),
            step: self.step,
            tokens: self.tokens,
            seed: cfg.seed,
            data_position: serde_json::to_value(pos)?,
            seq_len: self.seq_len,
            model: self.model.clone(),
            config: cfg.clone(),
            last_val_loss: self.last_val,
        };
        let leader = self.ranks.leader();
        let contents = CheckpointContents {
            model: &self.model,
            params: &leader.params,
            optimizer_state: leader.opt.state_tensors()?,
            state: &state,
        };
        let dir = save_checkpoint(&cfg.out, contents, cfg.keep_checkpoints)?;
        tracing::info!("saved checkpoint {}", dir.display());
        Ok(())
    }
}

/// The error of a step whose data could not be read, once the checkpoint of `step` was saved
/// (`saved`): what failed (for a corrupt chunk: the shard file and chunk), where the run stands,
/// and how to go on.
fn data_error(e: crate::data::DataError, step: usize, cfg: &TrainConfig, saved: Result<()>) -> anyhow::Error {
    let corrupt_chunk = matches!(&e, crate::data::DataError::Shard(mamba_shards::ShardError::CorruptChunk { .. }));
    let hint = if corrupt_chunk && !cfg.follow {
        "; `--resume --on-bad-chunk skip` continues from it and leaves out corrupt chunks"
    } else {
        ""
    };
    let status = match saved {
        Ok(()) => format!("the checkpoint of step {step} is saved in {}{hint}", cfg.out.display()),
        Err(save_error) => format!("saving the checkpoint of step {step} failed too: {save_error:#}"),
    };
    anyhow::Error::new(e).context(format!("step {}: cannot read its data ({status})", step + 1))
}
