//! `--resume`: find the newest checkpoint in the run directory and refuse to continue with a
//! config that would not give the same run (model shape, data, batch size, optimizer kind, seed).
//! What must match is the batch: the sequences per optimizer step over all ranks. The number of
//! devices and the micro-batch may change (a 2-GPU run resumes on one GPU with twice the
//! grad-accum; `--micro-batch auto` is resolved again for the card it resumes on): a step still
//! trains on the same chunks (`train::batch_share`), and the losses agree to f32 rounding (the
//! gradients are summed in another order), where the same split resumes bit for bit.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};

use crate::checkpoint::store::load_optimizer_state;
use crate::checkpoint::{latest_checkpoint, load_model, params_from_loaded, TrainerState};
use crate::config::{BatchTarget, TrainConfig};
use crate::model::{MambaConfig, Params};

pub struct Resumed {
    pub dir: PathBuf,
    pub state: TrainerState,
    pub params: Params,
    pub optimizer_state: HashMap<String, Tensor>,
}

/// Loads the newest checkpoint of `cfg.out` after checking it against `cfg`, `model`, `seq_len`
/// and the number of ranks `world`.
pub fn load_latest(
    cfg: &TrainConfig,
    model: &MambaConfig,
    seq_len: usize,
    world: usize,
    device: &Device,
) -> Result<Resumed> {
    let dir = latest_checkpoint(&cfg.out)?
        .with_context(|| format!("--resume: no checkpoint (ckpt-*) in {}", cfg.out.display()))?;
    let state = TrainerState::load(&dir)?;
    check_compatible(&state, cfg, model, seq_len, world).with_context(|| format!("--resume from {}", dir.display()))?;
    let (ckpt_model, params) = params_from_loaded(load_model(&dir)?, device)?;
    if ckpt_model.param_shapes() != model.param_shapes() {
        bail!("--resume from {}: its model.safetensors/config.json do not match its trainer_state.json", dir.display());
    }
    let optimizer_state = load_optimizer_state(&dir, device)?;
    Ok(Resumed { dir, state, params, optimizer_state })
}

/// `micro-batch 16 × grad-accum 2 × 1 rank`, or `micro-batch auto × 1 rank` (not resolved yet).
fn layout(cfg: &TrainConfig, target: &BatchTarget) -> String {
    let ranks = format!("{} rank{}", target.world, if target.world == 1 { "" } else { "s" });
    match target.fixed_split() {
        Ok(Some(s)) => format!("micro-batch {} × grad-accum {} × {ranks}", s.micro_batch, s.grad_accum),
        _ => format!("micro-batch {} × {ranks}", cfg.micro_batch),
    }
}

/// Differences that would make the resumed run differ from an uninterrupted one are errors;
/// schedule/logging changes are allowed with a warning.
pub fn check_compatible(
    state: &TrainerState,
    cfg: &TrainConfig,
    model: &MambaConfig,
    seq_len: usize,
    world: usize,
) -> Result<()> {
    let old = &state.config;
    let mut errors = Vec::new();
    if state.model.param_shapes() != model.param_shapes() {
        errors.push(format!(
            "model shape differs: checkpoint d_model {} n_layer {} d_state {} vocab {}, now d_model {} n_layer {} d_state {} vocab {}",
            state.model.d_model, state.model.n_layer, state.model.d_state, state.model.padded_vocab(),
            model.d_model, model.n_layer, model.d_state, model.padded_vocab()
        ));
    }
    if state.seq_len != seq_len {
        errors.push(format!("data seq_len differs: checkpoint {}, data now {seq_len}", state.seq_len));
    }
    let old_batch = old.batch_target().context("the checkpoint's config: its batch")?;
    let batch = cfg.batch_target()?;
    if batch.world != world {
        bail!("internal: --devices gives {} ranks, the run has {world}", batch.world);
    }
    if old_batch.batch_size != batch.batch_size {
        errors.push(format!(
            "batch size differs: the checkpoint trained {} sequences per optimizer step ({}), this run would train {} ({}); resume with --batch-size {0}",
            old_batch.batch_size,
            layout(old, &old_batch),
            batch.batch_size,
            layout(cfg, &batch)
        ));
    } else if old.micro_batch != cfg.micro_batch || old_batch.world != world {
        tracing::info!(
            "resuming the batch of {} sequences: the checkpoint ran {}, this run {}; another split trains the same chunks per step, its losses equal to f32 rounding (not bit for bit)",
            batch.batch_size,
            layout(old, &old_batch),
            layout(cfg, &batch)
        );
    }
    let mut same = |what: &str, a: String, b: String| {
        if a != b {
            errors.push(format!("{what} differs: checkpoint {a}, now {b}"));
        }
    };
    same("optimizer", format!("{:?}", old.optimizer), format!("{:?}", cfg.optimizer));
    same("seed", old.seed.to_string(), cfg.seed.to_string());
    same("follow", old.follow.to_string(), cfg.follow.to_string());
    if !errors.is_empty() {
        bail!("config mismatch:\n  {}", errors.join("\n  "));
    }
    let o = (
        old.muon_lr,
        old.adamw_lr,
        old.weight_decay,
        old.clip,
        old.warmup,
        old.decay_steps.unwrap_or(old.steps),
        old.final_lr_frac,
    );
    let n = (
        cfg.muon_lr,
        cfg.adamw_lr,
        cfg.weight_decay,
        cfg.clip,
        cfg.warmup,
        cfg.decay_steps.unwrap_or(cfg.steps),
        cfg.final_lr_frac,
    );
    if o != n {
        tracing::warn!("resuming with changed optimizer hyper-parameters or schedule (muon_lr, adamw_lr, weight_decay, clip, warmup, decay_steps, final_lr_frac): {o:?} -> {n:?}");
    }
    Ok(())
}
