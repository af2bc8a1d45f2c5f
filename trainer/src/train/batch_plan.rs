//! `--micro-batch auto` for this run, once the model, seq_len, dtype and devices are known: the
//! memory a rank may use (CUDA: the GPU's free memory, the least of the `--devices` GPUs; CPU:
//! the host's available memory shared by the CPU ranks), the planner of `config::memory_plan`,
//! one log line, and the config with the split written out (what `config.resolved.toml` and the
//! checkpoints record). `trainer train` and `trainer bench` both call [`resolve_batch`].

use anyhow::Result;
use candle_core::{DType, Device};

use crate::config::batch::old_meaning_note;
use crate::config::memory_plan::{gpu_max_micro_batch, plan_micro_batch, CPU_MAX_MICRO_BATCH};
use crate::config::size_limits::{gib, host_available_bytes};
use crate::config::{BatchSplit, BatchTarget, TrainConfig};
use crate::device::{gpu_free_memory, gpu_free_memory_of};
use crate::model::MambaConfig;
use crate::parallel::Placement;

/// What one rank may use for `--micro-batch auto`, and the largest micro-batch worth taking there.
struct Budget {
    free: u64,
    /// Where, for the log: `free on cuda:0`, `available on the host (÷ 2 CPU ranks)`.
    place: String,
    max_micro_batch: usize,
    /// Why that maximum, for the log when it is what limits the choice.
    cap_reason: String,
}

/// `cfg` with its batch split written out: the flags' split when they fix one, else the planner's
/// for `model` at `seq_len` in `dtype` on `device` (one device) or `placement` (`--devices`).
/// Logs one line saying what was chosen and why.
pub fn resolve_batch(
    cfg: &TrainConfig,
    model: &MambaConfig,
    seq_len: usize,
    dtype: DType,
    placement: Option<&Placement>,
    device: &Device,
) -> Result<TrainConfig> {
    let target = cfg.batch_target()?;
    if let Some(note) = old_meaning_note(cfg.batch_size, cfg.micro_batch, cfg.grad_accum) {
        tracing::info!("note: {note}");
    }
    if let Some(split) = target.fixed_split()? {
        let why = match (cfg.micro_batch.fixed(), cfg.grad_accum) {
            (Some(_), _) => "--micro-batch".to_string(),
            (None, Some(m)) => format!("auto, fixed by --grad-accum {m}"),
            (None, None) => "the flags".to_string(),
        };
        tracing::info!("micro-batch {} ({why})", split_text(&target, split));
        return cfg.with_split(split);
    }
    let budget = budget(placement, device, seq_len)?;
    let plan = plan_micro_batch(budget.free, model, seq_len, dtype, target.per_device, budget.max_micro_batch);
    let capped = plan.split.micro_batch == budget.max_micro_batch && budget.max_micro_batch < target.per_device;
    let estimate = format!(
        "estimated {} of {} usable, {} {}",
        gib(plan.needed.into()),
        gib(plan.usable.into()),
        gib(plan.free.into()),
        budget.place
    );
    let text = format!("micro-batch auto → {}", split_text(&target, plan.split));
    match (plan.fits, capped) {
        (true, true) => tracing::info!("{text} (capped: {}; {estimate})", budget.cap_reason),
        (true, false) => tracing::info!("{text} (fits: {estimate})"),
        (false, _) => tracing::warn!(
            "{text}: even one sequence may not fit ({estimate}); trying anyway: a smaller model, --dtype bf16 or a shorter seq_len need less"
        ),
    }
    cfg.with_split(plan.split)
}

/// `16 × grad-accum 2 = batch 32`, with ` × 2 ranks` when there are several.
fn split_text(target: &BatchTarget, split: BatchSplit) -> String {
    let ranks = if target.world > 1 { format!(" × {} ranks", target.world) } else { String::new() };
    format!("{} × grad-accum {}{ranks} = batch {}", split.micro_batch, split.grad_accum, target.batch_size)
}

/// The memory and cap of one rank (see the module doc).
fn budget(placement: Option<&Placement>, device: &Device, seq_len: usize) -> Result<Budget> {
    let gpu = |free: u64, place: String| Budget {
        free,
        place,
        max_micro_batch: gpu_max_micro_batch(seq_len),
        cap_reason: format!(
            "at most {} tokens per micro-batch on a GPU",
            crate::config::memory_plan::GPU_MAX_MICRO_TOKENS
        ),
    };
    let cpu = |ranks: usize| {
        let free = host_available_bytes().map_or(0, |b| u64::try_from(b / ranks.max(1) as u128).unwrap_or(u64::MAX));
        let shared = if ranks > 1 { format!(" (÷ {ranks} CPU ranks)") } else { String::new() };
        Budget {
            free,
            place: format!("available on the host{shared}"),
            max_micro_batch: CPU_MAX_MICRO_BATCH,
            cap_reason: format!(
                "at most {CPU_MAX_MICRO_BATCH} sequences per micro-batch on the CPU, where more are no faster (docs/benchmarks.md)"
            ),
        }
    };
    Ok(match placement {
        Some(Placement::Cpu { world }) => cpu(*world),
        Some(Placement::Cuda { ordinals }) => {
            let mut least: Option<(u64, usize)> = None;
            for &o in ordinals {
                let free = gpu_free_memory_of(o)?;
                if least.is_none_or(|(f, _)| free < f) {
                    least = Some((free, o));
                }
            }
            let (free, o) = least.unwrap_or((0, 0));
            gpu(free, format!("free on cuda:{o}, the least of {} GPUs", ordinals.len()))
        }
        None => match gpu_free_memory(device)? {
            Some(free) => gpu(free, format!("free on {}", device_name(device))),
            None => cpu(1),
        },
    })
}

/// `cuda:N` or `cpu`.
fn device_name(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Cpu => "cpu".into(),
        other => format!("{other:?}"),
    }
}
