//! The setup phase of `trainer train`, in the order it runs: the devices and the run directory,
//! where training starts from (resumed, `--init-from` or fresh weights), the batch's split
//! (`--micro-batch auto`), the ranks with their model replicas and optimizers, and the data loader.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};

use super::data_dir::check_step_fits_ring;
use super::rank_group::RankGroup;
use super::replica::ReplicaInit;
use super::resume;
use crate::checkpoint::{load_model, params_from_loaded, resolve_init_from, TrainerState};
use crate::config::TrainConfig;
use crate::data::{DataPosition, DataSpec, TrainData};
use crate::device::{parse_device, parse_dtype};
use crate::model::{MambaConfig, Params};
use crate::parallel::{parse_devices, Placement};

/// One device (`--device`), or one rank per `--devices` entry.
pub(super) struct Devices {
    pub placement: Option<Placement>,
    pub world: usize,
    /// The single device; with `--devices` each rank opens its own in its own thread.
    pub device: Device,
    pub dtype: DType,
}

impl Devices {
    pub fn parse(cfg: &TrainConfig) -> Result<Devices> {
        let placement = cfg.devices.as_deref().map(parse_devices).transpose()?;
        let world = placement.as_ref().map_or(1, Placement::world);
        let device = match &placement {
            None => parse_device(&cfg.device)?,
            Some(_) => Device::Cpu, // each rank opens its own device in its own thread
        };
        let dtype = parse_dtype(&cfg.dtype, &device)?;
        Ok(Devices { placement, world, device, dtype })
    }
}

/// The run directory (`--out`), checked for `--resume` / `--overwrite`, with the resolved config
/// (rewritten by [`resolve_batch`] once `--micro-batch auto` is resolved).
pub(super) fn prepare_run_dir(cfg: &TrainConfig) -> Result<()> {
    crate::checkpoint::prepare_run_dir(&cfg.out, cfg.resume, cfg.overwrite)?;
    std::fs::create_dir_all(&cfg.out).with_context(|| format!("creating run directory {}", cfg.out.display()))?;
    write_resolved_config(cfg)
}

fn write_resolved_config(cfg: &TrainConfig) -> Result<()> {
    std::fs::write(cfg.out.join("config.resolved.toml"), cfg.to_resolved_toml()?)
        .context("writing config.resolved.toml")
}

/// `cfg` with the step's split written out (`--micro-batch auto` resolved for `model` at
/// `seq_len` on `devices`: `train::batch_plan`), saved as the run's config.resolved.toml, and
/// checked against the memory one step needs.
pub(super) fn resolve_batch(
    cfg: &TrainConfig,
    devices: &Devices,
    model: &MambaConfig,
    seq_len: usize,
) -> Result<TrainConfig> {
    let resolved = super::batch_plan::resolve_batch(
        cfg,
        model,
        seq_len,
        devices.dtype,
        devices.placement.as_ref(),
        &devices.device,
    )?;
    write_resolved_config(&resolved)?;
    crate::config::size_limits::check_step_memory(&resolved, seq_len, model.padded_vocab(), devices.world)?;
    Ok(resolved)
}

/// Where training starts: the model, its weights (on the host; every rank copies them to its
/// device, so all start identical) and, when resuming, the optimizer state and progress.
pub(super) struct Start {
    pub model: MambaConfig,
    pub params: Params,
    /// Resumed optimizer state and the checkpoint it came from.
    pub optimizer_state: Option<(PathBuf, HashMap<String, Tensor>)>,
    pub step: usize,
    pub tokens: u64,
    /// The data position to resume at (`None`: the beginning).
    pub position: Option<DataPosition>,
    pub last_val: Option<f64>,
}

impl Start {
    /// The checkpoint's step when resuming.
    pub fn resuming_from(&self) -> Option<usize> {
        self.optimizer_state.as_ref().map(|_| self.step)
    }
}

/// Resumed (`--resume`), initialised from a checkpoint (`--init-from`, a Hub repo downloaded
/// first), or fresh; a resumed run is checked against the data's `seq_len` and the batch.
/// `None`: a signal came while fetching `--init-from`.
pub(super) fn starting_point(
    cfg: &TrainConfig,
    stop: &AtomicBool,
    seq_len: usize,
    world: usize,
) -> Result<Option<Start>> {
    // --init-from: a local checkpoint, or a Hub repo downloaded first (a signal abandons that wait).
    let init = match (&cfg.init_from, cfg.resume) {
        (Some(spec), false) => {
            let spec = spec.clone();
            let Some(dir) = mamba_shards::stop_signal::run_unless_stopped(stop, move || resolve_init_from(&spec))
            else {
                return Ok(None);
            };
            Some(load_model(&dir?)?)
        }
        _ => None,
    };
    let model: MambaConfig = match (&init, cfg.resume) {
        (Some(loaded), _) => loaded.config.clone(),
        (None, true) if cfg.init_from.is_some() => last_state_model(cfg)?,
        _ => cfg.model_config()?,
    };
    let host = Device::Cpu;
    let resumed = if cfg.resume { Some(resume::load_latest(cfg, &model, seq_len, world, &host)?) } else { None };
    let start = match (resumed, init) {
        (Some(r), _) => {
            tracing::info!("resuming from {} (step {})", r.dir.display(), r.state.step);
            let pos: DataPosition = serde_json::from_value(r.state.data_position.clone())
                .with_context(|| format!("{}: trainer_state.json: data_position", r.dir.display()))?;
            let (step, tokens, last_val) = (r.state.step, r.state.tokens, r.state.last_val_loss);
            Start {
                model,
                params: r.params,
                optimizer_state: Some((r.dir, r.optimizer_state)),
                step,
                tokens,
                position: Some(pos),
                last_val,
            }
        }
        (None, Some(loaded)) => {
            tracing::info!("initialising from {}", loaded.source.display());
            let params = params_from_loaded(loaded, &host)?.1;
            Start { model, params, optimizer_state: None, step: 0, tokens: 0, position: None, last_val: None }
        }
        (None, None) => {
            let params = Params::init(&model, cfg.seed, &host)?;
            Start { model, params, optimizer_state: None, step: 0, tokens: 0, position: None, last_val: None }
        }
    };
    Ok(Some(start))
}

/// The resumed model when it came from `--init-from`: the checkpoint's own trainer state says.
fn last_state_model(cfg: &TrainConfig) -> Result<MambaConfig> {
    let dir = crate::checkpoint::latest_checkpoint(&cfg.out)?
        .with_context(|| format!("--resume: no checkpoint (ckpt-*) in {}", cfg.out.display()))?;
    Ok(TrainerState::load(&dir)?.model)
}

/// The model replicas and optimizers, one per rank (one in all on a single device), built from
/// `params` and `optimizer_state`, which are consumed.
pub(super) fn start_ranks(
    cfg: &TrainConfig,
    devices: Devices,
    model: &MambaConfig,
    params: Params,
    optimizer_state: Option<(PathBuf, HashMap<String, Tensor>)>,
) -> Result<RankGroup> {
    let Devices { placement, world, device, dtype } = devices;
    let replica_init = ReplicaInit {
        model: model.clone(),
        weights: params.tensors().into_iter().collect(),
        optimizer_state,
        optim: cfg.optim_config(),
        dtype,
        clip: cfg.clip,
    };
    drop(params);
    match &placement {
        None => RankGroup::single(replica_init, device),
        Some(p) => {
            if cfg.device != "cpu" {
                tracing::warn!(
                    "--device {} is ignored: --devices {} chooses the devices",
                    cfg.device,
                    cfg.devices.as_deref().unwrap_or_default()
                );
            }
            tracing::info!(
                "data parallel: {world} ranks on {}",
                (0..world).map(|r| p.device_name(r)).collect::<Vec<_>>().join(", ")
            );
            RankGroup::start(replica_init, p)
        }
    }
}

/// The data loader at `position`, for `world` ranks: one loader for all of them, a step being
/// `grad_accum × world` micro-batches in stream order, dealt round robin (train::batch_share):
/// the next batch-size chunks of the stream, whatever the split (`cfg` has its split resolved).
/// Follow mode looks a whole optimizer step ahead, so a step never starves half-way on a full
/// ring (the loop can only checkpoint, and so release shards, between steps).
pub(super) fn open_data(
    cfg: &TrainConfig,
    seq_len: usize,
    model: &MambaConfig,
    world: usize,
    position: Option<DataPosition>,
) -> Result<TrainData> {
    let split = cfg.split()?;
    let spec = DataSpec {
        dir: cfg.data.clone(),
        seq_len,
        vocab_size: model.padded_vocab(),
        seed: cfg.seed,
        follow: cfg.follow,
        micro_batch: split.micro_batch,
        prefetch: 4,
        on_bad_chunk: cfg.on_bad_chunk,
    };
    if cfg.follow {
        check_step_fits_ring(cfg, world)?;
    }
    let mut data =
        TrainData::open(spec, position).with_context(|| format!("opening data in {}", cfg.data.display()))?;
    data.set_batches_per_step(split.grad_accum * world);
    Ok(data)
}
