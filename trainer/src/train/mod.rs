//! `trainer train`: the training loop. Reads top to bottom like nanoGPT's train.py:
//! config → device → data → model → optimizer → loop { data, forward/backward, update, log, eval,
//! checkpoint } → final eval and checkpoint.

pub mod batch_share;
pub mod eval;
mod phase_clock;
pub mod rank_group;
pub mod replica;
pub mod resume;
pub mod step;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use candle_core::Device;
use mamba_shards::ShardParams;

use crate::checkpoint::{load_model, params_from_loaded, resolve_init_from, save_checkpoint, CheckpointContents, TrainerState};
use crate::config::TrainConfig;
use crate::data::{train_shard_params, DataPosition, DataSpec, TrainData};
use crate::device::{parse_device, parse_dtype};
use crate::parallel::{parse_devices, Placement};
use crate::model::{MambaConfig, MambaLM, Params};
use rank_group::RankGroup;
use replica::{Replica, ReplicaInit};
use step::NonFinite;

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StopReason::StepsDone => "all --steps done",
            StopReason::DataExhausted => "the pipeline finished and every chunk was trained on",
            StopReason::Signal => "stopped by a signal; a checkpoint was saved",
        })
    }
}

/// How a run ended (a NaN/Inf loss is an error, see [`NonFinite`]).
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

/// Trains according to `cfg` until `--steps`, the end of the data, or `stop` turns true.
pub fn run(cfg: &TrainConfig, stop: &AtomicBool) -> Result<TrainOutcome> {
    // ---- devices and run directory: one device (--device), or one rank per --devices entry ------
    let placement = cfg.devices.as_deref().map(parse_devices).transpose()?;
    let world = placement.as_ref().map_or(1, Placement::world);
    let device = match &placement {
        None => parse_device(&cfg.device)?,
        Some(_) => Device::Cpu, // each rank opens its own device in its own thread
    };
    let dtype = parse_dtype(&cfg.dtype, &device)?;
    crate::checkpoint::prepare_run_dir(&cfg.out, cfg.resume, cfg.overwrite)?;
    std::fs::create_dir_all(&cfg.out).with_context(|| format!("creating run directory {}", cfg.out.display()))?;
    std::fs::write(cfg.out.join("config.resolved.toml"), cfg.to_resolved_toml()?).context("writing config.resolved.toml")?;

    // ---- model shape and data shape ---------------------------------------------------------
    let Some(shard) = discover_shard_params(cfg, stop)? else {
        tracing::info!("stopped before the pipeline published a train shard: nothing to train or save");
        return Ok(TrainOutcome { stop: StopReason::Signal, step: 0, losses: Vec::new(), last_val_loss: None, skipped_chunks: 0 });
    };
    let seq_len = shard.seq_len();
    // --init-from: a local checkpoint, or a Hub repo downloaded first (a signal abandons that wait).
    let init = match (&cfg.init_from, cfg.resume) {
        (Some(spec), false) => {
            let spec = spec.clone();
            let Some(dir) = mamba_shards::stop_signal::run_unless_stopped(stop, move || resolve_init_from(&spec)) else {
                tracing::info!("stopped while fetching --init-from: nothing to train or save");
                return Ok(TrainOutcome { stop: StopReason::Signal, step: 0, losses: Vec::new(), last_val_loss: None, skipped_chunks: 0 });
            };
            Some(load_model(&dir?)?)
        }
        _ => None,
    };
    let model_cfg: MambaConfig = match (&init, cfg.resume) {
        (Some(loaded), _) => loaded.config.clone(),
        (None, true) if cfg.init_from.is_some() => last_state_model(cfg)?,
        _ => cfg.model_config()?,
    };
    crate::size_limits::check_step_memory(cfg, seq_len, model_cfg.padded_vocab(), world)?;

    // ---- parameters: resumed, initialised from a checkpoint, or fresh (on the host; every rank
    //      copies them to its device, so all start identical) --------------------------------
    let host = Device::Cpu;
    let resumed = if cfg.resume { Some(resume::load_latest(cfg, &model_cfg, seq_len, world, &host)?) } else { None };
    let mut optimizer_state = None;
    let (params, start_step, mut tokens, position, mut last_val) = match (resumed, init) {
        (Some(r), _) => {
            tracing::info!("resuming from {} (step {})", r.dir.display(), r.state.step);
            let pos: DataPosition = serde_json::from_value(r.state.data_position.clone())
                .with_context(|| format!("{}: trainer_state.json: data_position", r.dir.display()))?;
            optimizer_state = Some((r.dir, r.optimizer_state));
            (r.params, r.state.step, r.state.tokens, Some(pos), r.state.last_val_loss)
        }
        (None, Some(loaded)) => {
            tracing::info!("initialising from {}", loaded.source.display());
            (params_from_loaded(loaded, &host)?.1, 0, 0, None, None)
        }
        (None, None) => (Params::init(&model_cfg, cfg.seed, &host)?, 0, 0, None, None),
    };
    let n_params = params.n_params();
    let resuming_from = optimizer_state.as_ref().map(|_| start_step);

    // ---- model replicas and optimizers: one per rank (one in all on a single device) ---------
    let replica_init = ReplicaInit {
        model: model_cfg.clone(),
        weights: params.tensors().into_iter().collect(),
        optimizer_state,
        optim: cfg.optim_config(),
        dtype,
        clip: cfg.clip,
    };
    drop(params);
    let mut ranks = match &placement {
        None => RankGroup::single(replica_init, device)?,
        Some(p) => {
            if cfg.device != "cpu" {
                tracing::warn!("--device {} is ignored: --devices {} chooses the devices", cfg.device, cfg.devices.as_deref().unwrap_or_default());
            }
            tracing::info!("data parallel: {world} ranks on {}", (0..world).map(|r| p.device_name(r)).collect::<Vec<_>>().join(", "));
            RankGroup::start(replica_init, p)?
        }
    };
    let device = ranks.leader().device.clone();
    tracing::info!(
        "model: d_model {} n_layer {} d_state {} vocab {} ({n_params} params), seq_len {seq_len}, effective batch {} × {} × {world} ranks = {} tokens/step",
        model_cfg.d_model, model_cfg.n_layer, model_cfg.d_state, model_cfg.padded_vocab(),
        cfg.micro_batch, cfg.grad_accum, cfg.effective_batch() * world * seq_len
    );
    tracing::info!("optimizer groups:\n{}", ranks.leader().opt.groups_summary());

    // ---- data ------------------------------------------------------------------------------
    let spec = DataSpec {
        dir: cfg.data.clone(),
        seq_len,
        vocab_size: model_cfg.padded_vocab(),
        seed: cfg.seed,
        follow: cfg.follow,
        micro_batch: cfg.micro_batch,
        prefetch: 4,
        on_bad_chunk: cfg.on_bad_chunk,
    };
    if cfg.follow {
        check_step_fits_ring(cfg, world)?;
    }
    let mut data = TrainData::open(spec, position).with_context(|| format!("opening data in {}", cfg.data.display()))?;
    // One loader for all ranks: a step is grad_accum × world micro-batches in stream order, dealt
    // round robin (train::batch_share). Follow mode: look a whole optimizer step ahead, so a step
    // never starves half-way on a full ring (the loop can only checkpoint, and so release
    // shards, between steps).
    let batches_per_step = cfg.grad_accum * world;
    data.set_batches_per_step(batches_per_step);
    // The fixed val set (follow mode: waited for at the first eval if not published yet).
    let mut val = eval::ValSource::open(cfg.data.clone(), seq_len, model_cfg.padded_vocab(), cfg.eval_chunks, cfg.follow)?;
    let mut metrics = report::Report::open(cfg, resuming_from)?;
    let sampler = if cfg.sample_every > 0 { Some(crate::generate::PromptSampler::new(&cfg.sample_prompt)?) } else { None };
    metrics.start_progress(cfg, start_step, n_params, &device);

    // Rank 0's replica is saved: every rank holds the same weights and optimizer state.
    let save = |leader: &Replica, step: usize, tokens: u64, pos: &DataPosition, last_val: Option<f64>| -> Result<()> {
        let state = TrainerState {
            version: crate::VERSION.into(),
            git_hash: crate::GIT_HASH.into(),
            step,
            tokens,
            seed: cfg.seed,
            data_position: serde_json::to_value(pos)?,
            seq_len,
            model: model_cfg.clone(),
            config: cfg.clone(),
            last_val_loss: last_val,
        };
        let contents = CheckpointContents { model: &model_cfg, params: &leader.params, optimizer_state: leader.opt.state_tensors()?, state: &state };
        let dir = save_checkpoint(&cfg.out, contents, cfg.keep_checkpoints)?;
        tracing::info!("saved checkpoint {}", dir.display());
        Ok(())
    };

    // ---- the loop --------------------------------------------------------------------------
    let mut step = start_step;
    let mut saved_step = resuming_from;
    let mut losses = Vec::new();
    let mut reason = StopReason::StepsDone;
    // Set when a signal arrives while a step's batches are being gathered: the position before
    // that step, which the final checkpoint stores (its batches were not trained on).
    let mut interrupted_at: Option<DataPosition> = None;
    let mut skipped_chunks = 0u64;
    // The step of the last eval (the final one is not repeated when the last step had one).
    let mut evaluated_at = None;
    while step < cfg.steps {
        if stop.load(Ordering::SeqCst) {
            reason = StopReason::Signal;
            break;
        }
        // Follow mode: the pipeline needs shards released, which needs a checkpoint.
        if data.wants_checkpoint() && saved_step != Some(step) {
            let pos = data.position().clone();
            save(ranks.leader(), step, tokens, &pos, last_val)?;
            metrics.flush()?;
            data.checkpoint_saved(&pos)?;
            saved_step = Some(step);
        }

        // -- data: this step's micro-batches (the last ones of follow mode may be short). A signal
        //    while the loader waits for the pipeline stops at once, without this step.
        let step_start = data.position().clone();
        let mut batches = Vec::with_capacity(batches_per_step);
        let mut wait = Duration::ZERO;
        while batches.len() < batches_per_step {
            let next = match data.next_batch_or_stop(stop) {
                Ok(next) => next,
                Err(e) => {
                    // A corrupt chunk (or other bad data): keep every completed step before failing.
                    let saved = if saved_step == Some(step) {
                        Ok(())
                    } else {
                        save(ranks.leader(), step, tokens, &step_start, last_val).and_then(|()| metrics.flush()).and_then(|()| Ok(data.checkpoint_saved(&step_start)?))
                    };
                    return Err(data_error(e, step, cfg, saved));
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
        if stop.load(Ordering::SeqCst) && batches.len() < batches_per_step {
            if !batches.is_empty() {
                tracing::info!(
                    "signal while waiting for data: the {} of {} micro-batches gathered for step {} are not trained on; the checkpoint keeps the position before them ({step_start})",
                    batches.len(), batches_per_step, step + 1
                );
            }
            reason = StopReason::Signal;
            interrupted_at = Some(step_start);
            break;
        }
        if batches.is_empty() {
            if step == start_step {
                bail!("{}", nothing_left(cfg, data.position()));
            }
            reason = StopReason::DataExhausted;
            break;
        }
        let skipped = data.take_skipped_chunks();
        skipped_chunks += skipped.len() as u64;
        metrics.skipped_chunks(skipped.len());
        let rows: usize = batches.iter().map(|b| b.micro_batch).sum();
        if rows < batches_per_step * cfg.micro_batch {
            tracing::info!(
                "step {} is short: {rows} of {} chunks, the last the pipeline published (it has finished)",
                step + 1,
                batches_per_step * cfg.micro_batch
            );
        }

        // -- forward, backward, (all-reduce,) update on every rank (timed; rank 0's device
        //    synchronised around the clock reads)
        let chunks = batches.iter().flat_map(|b| b.chunks.iter().map(|&(shard, chunk)| [shard, chunk])).collect();
        device.synchronize()?;
        let t0 = Instant::now();
        let result = match ranks.step(batches, step) {
            Ok(r) => r,
            Err(e) if e.is::<NonFinite>() => {
                let kept = crate::checkpoint::latest_checkpoint(&cfg.out)?;
                let kept = kept.map_or("none saved yet".to_string(), |p| p.display().to_string());
                return Err(e.context(format!("training diverged; the last good checkpoint is kept: {kept}")));
            }
            Err(e) => return Err(e),
        };
        device.synchronize()?;
        let elapsed = t0.elapsed();
        step += 1;
        let step_tokens = (result.rows * seq_len) as u64;
        tokens += step_tokens;
        losses.push(result.loss);

        // -- log (rank 0; tokens/s over all ranks)
        metrics.step(step, tokens, &result, step_tokens, elapsed, wait, &data.ring_status(), chunks)?;

        // -- eval (outside the timed region)
        if cfg.eval_every > 0 && step % cfg.eval_every == 0 && step < cfg.steps {
            last_val = eval_and_log(&ranks.leader().model, &mut val, cfg, &device, &mut metrics, step, tokens, stop)?.or(last_val);
            evaluated_at = Some(step);
        }
        // -- sample from the fixed prompt (outside the timed region)
        if let Some(sampler) = sampler.as_ref().filter(|_| step % cfg.sample_every == 0) {
            metrics.sample(step, &cfg.sample_prompt, &sampler.sample(&ranks.leader().model, &device)?)?;
        }
        // -- checkpoint
        if cfg.save_every > 0 && step % cfg.save_every == 0 && step < cfg.steps {
            let pos = data.position().clone();
            save(ranks.leader(), step, tokens, &pos, last_val)?;
            metrics.flush()?;
            data.checkpoint_saved(&pos)?;
            saved_step = Some(step);
        }
    }

    // ---- the end: final eval (unless interrupted) and checkpoint ---------------------------
    if reason != StopReason::Signal && step > start_step && evaluated_at != Some(step) {
        last_val = eval_and_log(&ranks.leader().model, &mut val, cfg, &device, &mut metrics, step, tokens, stop)?.or(last_val);
    }
    if saved_step != Some(step) {
        let pos = interrupted_at.unwrap_or_else(|| data.position().clone());
        save(ranks.leader(), step, tokens, &pos, last_val)?;
        data.checkpoint_saved(&pos)?;
    }
    metrics.flush()?;
    drop(metrics);
    tracing::info!("stopped at step {step}: {reason}");
    if skipped_chunks > 0 {
        tracing::warn!("--on-bad-chunk skip: {skipped_chunks} corrupt chunks were left out (see the warnings above and skipped_chunks in metrics.jsonl)");
    }
    Ok(TrainOutcome { stop: reason, step, losses, last_val_loss: last_val, skipped_chunks })
}

/// Evaluates on the fixed val set (waiting for it in follow mode) and logs the result.
#[allow(clippy::too_many_arguments)]
fn eval_and_log(
    model: &MambaLM,
    val: &mut eval::ValSource,
    cfg: &TrainConfig,
    device: &Device,
    metrics: &mut report::Report,
    step: usize,
    tokens: u64,
    stop: &AtomicBool,
) -> Result<Option<f64>> {
    let Some(set) = val.wait(step, stop)? else { return Ok(None) };
    let t0 = Instant::now();
    let loss = eval::eval_loss(model, &set.chunks, cfg.micro_batch, device)?;
    if let Some(loss) = loss {
        metrics.eval(step, tokens, loss, set, t0.elapsed())?;
    }
    Ok(loss)
}

/// The error of a step whose data could not be read, once the checkpoint of `step` was saved
/// (`saved`): what failed (for a corrupt chunk: the shard file and chunk), where the run stands,
/// and how to go on.
fn data_error(e: crate::data::DataError, step: usize, cfg: &TrainConfig, saved: Result<()>) -> anyhow::Error {
    let corrupt_chunk = matches!(&e, crate::data::DataError::Shard(mamba_shards::ShardError::CorruptChunk { .. }));
    let hint = if corrupt_chunk && !cfg.follow { "; `--resume --on-bad-chunk skip` continues from it and leaves out corrupt chunks" } else { "" };
    let status = match saved {
        Ok(()) => format!("the checkpoint of step {step} is saved in {}{hint}", cfg.out.display()),
        Err(save_error) => format!("saving the checkpoint of step {step} failed too: {save_error:#}"),
    };
    anyhow::Error::new(e).context(format!("step {}: cannot read its data ({status})", step + 1))
}

/// Follow mode with nothing to train: the pipeline finished and no chunk is left past `pos`.
fn nothing_left(cfg: &TrainConfig, pos: &DataPosition) -> String {
    let dir = cfg.data.display();
    let published = match mamba_shards::Manifest::read(&cfg.data) {
        Ok(Some(m)) => format!("{}: {} train shards ({} chunks) published", m.finish_reason, m.train.next_seq, m.train.chunks),
        _ => "its manifest is unreadable now".into(),
    };
    let released = mamba_shards::ring::read_release(&cfg.data).ok().flatten().map_or(String::new(), |r| format!(", released below shard {}", r.train_released_below));
    format!(
        "--follow {dir}: the pipeline has finished ({published}) and no train chunk is left for this run (data position {pos}{released}): \
         nothing to train. Every chunk was trained on by {}; for more data rerun the pipeline with a larger --max-tokens, or use a new --data-dir",
        if cfg.resume { "this run" } else { "an earlier trainer (resume it with --resume and its --out)" }
    )
}

/// The resumed model when it came from `--init-from`: the checkpoint's own trainer state says.
fn last_state_model(cfg: &TrainConfig) -> Result<MambaConfig> {
    let dir = crate::checkpoint::latest_checkpoint(&cfg.out)?.with_context(|| format!("--resume: no checkpoint (ckpt-*) in {}", cfg.out.display()))?;
    Ok(TrainerState::load(&dir)?.model)
}

/// Follow mode: shards are only released at step boundaries, so one optimizer step must fit in
/// the pipeline's ring (`docs/ring.md`, rule 5). A step of more chunks than the whole ring holds
/// can never be gathered (both programs would wait for ever): an error. One that may span more
/// than N − 1 shard boundaries can deadlock: a warning.
fn check_step_fits_ring(cfg: &TrainConfig, world: usize) -> Result<()> {
    let Some(m) = mamba_shards::Manifest::read(&cfg.data)? else { return Ok(()) };
    let Some(slots) = m.ring_slots.filter(|&n| n > 0) else { return Ok(()) };
    let (step, per_shard) = ((cfg.effective_batch() * world) as u64, u64::from(m.chunks_per_shard));
    let fix = "raise the pipeline's --ring-slots or lower --micro-batch × --grad-accum";
    if step > u64::from(slots) * per_shard {
        bail!(
            "one optimizer step takes {step} chunks (micro-batch {} × grad-accum {} × {world} ranks) but the pipeline's ring holds only {slots} shards × {per_shard} chunks: the step could never be gathered; {fix}",
            cfg.micro_batch, cfg.grad_accum
        );
    }
    if step > u64::from(slots.saturating_sub(1)) * per_shard {
        tracing::warn!("one optimizer step takes {step} chunks, more than {} of the ring's {slots} shards of {per_shard} chunks: the two programs may deadlock; {fix}", slots.saturating_sub(1));
    }
    Ok(())
}

/// The data's shard parameters (its sequence length), from the first train shard's header. Follow
/// mode waits (saying so) for the pipeline to create the directory and publish a shard; `None`:
/// `stop` came first.
fn discover_shard_params(cfg: &TrainConfig, stop: &AtomicBool) -> Result<Option<ShardParams>> {
    let mut announced = None;
    loop {
        let found = if cfg.follow && !cfg.data.is_dir() {
            None
        } else if !cfg.data.exists() {
            bail!(
                "--data {}: no such directory. Build shards there first, e.g. `pipeline --input pipeline/assets/sample-corpus --data-dir {0}` (the sample corpus of the repository) or `pipeline --data-dir {0}` (FineWeb from the Hub); add --follow to train while the pipeline writes them; or try the whole job at once: `bash tools/demo.sh`",
                cfg.data.display()
            );
        } else {
            train_shard_params(&cfg.data).with_context(|| format!("--data {}", cfg.data.display()))?
        };
        if found.is_some() {
            return Ok(found);
        }
        if !cfg.follow {
            bail!(
                "--data {}: no train shards (train-*.shard). Build some first, e.g. `pipeline --input pipeline/assets/sample-corpus --data-dir {0}` (the sample corpus of the repository) or `pipeline --data-dir {0}` (FineWeb from the Hub); or try the whole job at once: `bash tools/demo.sh`",
                cfg.data.display()
            );
        }
        if let Some(m) = mamba_shards::Manifest::read(&cfg.data).with_context(|| format!("--data {}", cfg.data.display()))?.filter(|m| m.finished) {
            let why = if m.train.next_seq == 0 {
                format!("it published no train shard at all ({}; all its tokens went to the val set: lower its --val-tokens)", m.finish_reason)
            } else {
                format!("its {} train shards were all released by an earlier trainer and removed", m.train.next_seq)
            };
            bail!("--follow {}: the pipeline has finished and {why}: nothing to train. Resume the earlier run with --resume, or rerun the pipeline with a larger --max-tokens or into a new --data-dir", cfg.data.display());
        }
        if stop.load(Ordering::SeqCst) {
            return Ok(None);
        }
        let what = if cfg.data.is_dir() { "publish the first train shard in" } else { "create the data directory" };
        if announced != Some(what) {
            tracing::info!("waiting for the pipeline to {what} {} (e.g. `pipeline --data-dir {0} --ring-slots 4`)", cfg.data.display());
            announced = Some(what);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

mod report;
