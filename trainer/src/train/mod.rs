//! `trainer train`: the training loop. Reads top to bottom like nanoGPT's train.py: setup
//! (`setup.rs`: devices and run directory, the data's shard parameters, where training starts,
//! the ranks, the data) → the loop (`train_loop.rs`: data, forward/backward, update, log, eval,
//! checkpoint) → the finish (final eval and checkpoint).

pub mod batch_plan;
pub mod batch_share;
mod data_dir;
pub mod eval;
mod phase_clock;
pub mod rank_group;
pub mod replica;
mod report;
pub mod resume;
mod setup;
pub mod step;
mod train_loop;

use std::sync::atomic::AtomicBool;

use anyhow::Result;

use crate::config::TrainConfig;
use train_loop::TrainLoop;

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StopReason::StepsDone => "all --steps done",
            StopReason::DataExhausted => "the pipeline finished and every chunk was trained on",
            StopReason::Signal => "stopped by a signal; a checkpoint was saved",
        })
    }
}

/// How a run ended (a NaN/Inf loss is an error, see [`step::NonFinite`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// `--steps` reached.
    StepsDone,
    /// Follow mode: the pipeline finished and every chunk was trained on.
    DataExhausted,
    /// SIGINT/SIGTERM: the current step was finished and a checkpoint saved.
    Signal,
}

#[derive(Debug, Clone)]
pub struct TrainOutcome {
    pub stop: StopReason,
    /// Optimizer steps completed (including those before a resume).
    pub step: usize,
    /// Loss of every step this process ran, in order.
    pub losses: Vec<f64>,
    pub last_val_loss: Option<f64>,
    /// Corrupt chunks this process left out (`--on-bad-chunk skip`).
    pub skipped_chunks: u64,
}

impl TrainOutcome {
    /// A signal before anything was trained: nothing to save.
    fn stopped_before_training() -> TrainOutcome {
        TrainOutcome { stop: StopReason::Signal, step: 0, losses: Vec::new(), last_val_loss: None, skipped_chunks: 0 }
    }
}

/// Trains according to `cfg` until `--steps`, the end of the data, or `stop` turns true.
pub fn run(cfg: &TrainConfig, stop: &AtomicBool) -> Result<TrainOutcome> {
    // ---- setup: devices and run directory ----------------------------------------------------
    let devices = setup::Devices::parse(cfg)?;
    let world = devices.world;
    setup::prepare_run_dir(cfg)?;

    // ---- the data's shape (follow mode: waits for the pipeline's first train shard) -----------
    let Some(shard) = data_dir::discover_shard_params(cfg, stop)? else {
        tracing::info!("stopped before the pipeline published a train shard: nothing to train or save");
        return Ok(TrainOutcome::stopped_before_training());
    };
    let seq_len = shard.seq_len();

    // ---- where training starts: resumed, --init-from, or fresh weights ------------------------
    let Some(start) = setup::starting_point(cfg, stop, seq_len, world)? else {
        tracing::info!("stopped while fetching --init-from: nothing to train or save");
        return Ok(TrainOutcome::stopped_before_training());
    };
    let n_params = start.params.n_params();
    let resuming_from = start.resuming_from();

    // ---- the batch: --micro-batch auto resolved for this model, seq_len, dtype and device -----
    let resolved = setup::resolve_batch(cfg, &devices, &start.model, seq_len)?;
    let cfg = &resolved;
    let split = cfg.split()?;

    // ---- model replicas and optimizers: one per rank (one in all on a single device) ----------
    let ranks = setup::start_ranks(cfg, devices, &start.model, start.params, start.optimizer_state)?;
    let device = ranks.leader().device.clone();
    let model = start.model;
    tracing::info!(
        "model: d_model {} n_layer {} d_state {} vocab {} ({n_params} params), seq_len {seq_len}, batch {} × {} × {world} ranks = {} sequences = {} tokens/step",
        model.d_model, model.n_layer, model.d_state, model.padded_vocab(),
        split.micro_batch, split.grad_accum, split.micro_batch * split.grad_accum * world,
        split.micro_batch * split.grad_accum * world * seq_len
    );
    tracing::info!("optimizer groups:\n{}", ranks.leader().opt.groups_summary());

    // ---- data, the fixed val set (follow mode: waited for at the first eval), reporting -------
    let data = setup::open_data(cfg, seq_len, &model, world, start.position)?;
    let val = eval::ValSource::open(cfg.data.clone(), seq_len, model.padded_vocab(), cfg.eval_chunks, cfg.follow)?;
    let mut metrics = report::Report::open(cfg, resuming_from, n_params, &device, world)?;
    let sampler =
        if cfg.sample_every > 0 { Some(crate::generate::PromptSampler::new(&cfg.sample_prompt)?) } else { None };
    metrics.start_progress(cfg, start.step);

    // ---- the loop, then the finish: final eval (unless interrupted) and checkpoint ------------
    let mut train = TrainLoop {
        cfg,
        stop,
        model,
        seq_len,
        ranks,
        device,
        data,
        micro_batch: split.micro_batch,
        batches_per_step: split.grad_accum * world,
        val,
        metrics,
        sampler,
        start_step: start.step,
        step: start.step,
        tokens: start.tokens,
        last_val: start.last_val,
        saved_step: resuming_from,
        losses: Vec::new(),
        reason: StopReason::StepsDone,
        interrupted_at: None,
        skipped_chunks: 0,
        evaluated_at: None,
    };
    train.run()?;
    train.finish()
}
