//! `trainer train` configuration: every flag of `--help`, also settable from a TOML file
//! (`--config FILE`); flags given on the command line override the file, the file overrides the
//! defaults (the optimizer study's learning rates, see `optim::config`). The resolved config is
//! saved as `RUN_DIR/config.resolved.toml` (with `--micro-batch auto` resolved once the device is
//! known: `train::batch_plan`).

pub mod batch;
pub mod memory_plan;
pub mod size_limits;
mod train_args;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::data::OnBadChunk;
use crate::model::config::PRESET_NAMES;
use crate::model::MambaConfig;
use crate::optim::{OptimConfig, OptimizerKind};

pub use batch::{BatchSplit, BatchTarget, MicroBatch, DEFAULT_BATCH_SIZE};
pub use train_args::TrainArgs;

/// The resolved training configuration (file section names match the flag names, with `_`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    pub data: PathBuf,
    pub model: String,
    pub init_from: Option<String>,
    pub out: PathBuf,
    pub steps: usize,
    /// Sequences per optimizer step over all ranks (`--batch-size`); `None`: micro_batch ×
    /// grad_accum × ranks when both are numbers, else [`DEFAULT_BATCH_SIZE`] (`config::batch`).
    pub batch_size: Option<usize>,
    /// Sequences per forward/backward pass on one device: `auto` or a number.
    pub micro_batch: MicroBatch,
    /// Micro-batches per optimizer step on one device; `None`: derived from the batch size and
    /// the micro-batch.
    pub grad_accum: Option<usize>,
    pub warmup: usize,
    pub decay_steps: Option<usize>,
    pub final_lr_frac: f64,
    pub muon_lr: f64,
    pub adamw_lr: f64,
    pub weight_decay: f64,
    pub clip: f64,
    pub optimizer: OptimizerKind,
    pub eval_every: usize,
    pub eval_chunks: usize,
    pub save_every: usize,
    pub keep_checkpoints: usize,
    pub resume: bool,
    /// Start afresh in a run directory that already holds a run (its files are removed first).
    pub overwrite: bool,
    pub follow: bool,
    pub seed: u64,
    pub device: String,
    pub dtype: String,
    /// Data-parallel ranks (`--devices`); `None` = one device, `device`.
    pub devices: Option<String>,
    /// Static mode: stop at a corrupt chunk or skip it (`--on-bad-chunk`).
    pub on_bad_chunk: OnBadChunk,
    /// Generate a sample from `sample_prompt` every N steps (0 = never).
    pub sample_every: usize,
    pub sample_prompt: String,
    /// The device's dense peak in TFLOPS for the MFU of the log and progress display; `None` =
    /// the default for the device (CUDA: 989 = H100/H200 SXM bf16; CPU: no MFU).
    pub peak_tflops: Option<f64>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        let o = OptimConfig::default();
        TrainConfig {
            data: PathBuf::from("data"),
            model: "130m".into(),
            init_from: None,
            out: PathBuf::from("runs/default"),
            steps: 10_000,
            batch_size: None,
            micro_batch: MicroBatch::Auto,
            grad_accum: None,
            warmup: o.warmup_steps,
            decay_steps: None,
            final_lr_frac: o.final_lr_frac,
            muon_lr: o.muon_lr,
            adamw_lr: o.adamw_lr,
            weight_decay: o.weight_decay,
            clip: o.clip,
            optimizer: o.kind,
            eval_every: 250,
            eval_chunks: 64,
            save_every: 1000,
            keep_checkpoints: 3,
            resume: false,
            overwrite: false,
            follow: false,
            seed: 0,
            device: "cpu".into(),
            dtype: "f32".into(),
            devices: None,
            on_bad_chunk: OnBadChunk::Fail,
            sample_every: 0,
            sample_prompt: "The meaning of life is".into(),
            peak_tflops: None,
        }
    }
}

impl TrainConfig {
    pub fn from_toml_file(path: &Path) -> Result<TrainConfig> {
        Ok(Self::read_toml_file(path)?.0)
    }

    /// The config in the TOML file at `path` (missing keys = defaults), and the keys the file
    /// itself sets (for defaults that depend on other settings).
    fn read_toml_file(path: &Path) -> Result<(TrainConfig, toml::Table)> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading config file {}", path.display()))?;
        let parsing = || format!("parsing config file {}", path.display());
        // Keys take `_` (the pipeline's files too); `-` (the flag spelling) is accepted as well.
        let table: toml::Table = toml::from_str(&text).with_context(parsing)?;
        let table: toml::Table = table.into_iter().map(|(k, v)| (k.replace('-', "_"), v)).collect();
        Ok((toml::Value::Table(table.clone()).try_into().with_context(parsing)?, table))
    }

    pub fn validate(&self) -> Result<()> {
        for (name, v) in
            [("--steps (steps)", self.steps), ("--keep-checkpoints (keep_checkpoints)", self.keep_checkpoints)]
        {
            if v == 0 {
                bail!("{name} must be at least 1");
            }
        }
        // Sizes that allocate: bounded here, and against the data's shape in `train::run`.
        crate::config::size_limits::check_flags(self)?;
        if self.resume && self.overwrite {
            bail!("--resume and --overwrite exclude each other: continue the run in --out, or start it afresh");
        }
        if !["f32", "bf16"].contains(&self.dtype.as_str()) {
            bail!("--dtype {}: expected f32 or bf16", self.dtype);
        }
        if let Some(t) = self.peak_tflops.filter(|t| !(t.is_finite() && *t > 0.0)) {
            bail!("--peak-tflops {t}: expected a positive number of TFLOP/s");
        }
        self.optim_config().validate().context("optimizer config")?;
        self.batch_target()?;
        Ok(())
    }

    /// The step's batch as the flags fix it, over [`TrainConfig::world`] ranks (`config::batch`).
    pub fn batch_target(&self) -> Result<BatchTarget> {
        batch::batch_target(self.batch_size, self.micro_batch, self.grad_accum, self.world()?)
    }

    /// The per-device split, once the micro-batch is a number (after `train::batch_plan` resolved
    /// `auto`, or when the flags fix it).
    pub fn split(&self) -> Result<BatchSplit> {
        match self.batch_target()?.fixed_split()? {
            Some(split) => Ok(split),
            None => bail!("--micro-batch auto is not resolved yet (it needs the model, seq_len and device)"),
        }
    }

    /// This config with the step's split written out: batch size, micro-batch and grad-accum all
    /// numbers (what `config.resolved.toml` and checkpoints record).
    pub fn with_split(&self, split: BatchSplit) -> Result<TrainConfig> {
        let target = self.batch_target()?;
        let checked = target.split(split.micro_batch)?;
        if checked != split {
            bail!(
                "micro-batch {} × grad-accum {} is not the {} sequences per rank of --batch-size {}",
                split.micro_batch,
                split.grad_accum,
                target.per_device,
                target.batch_size
            );
        }
        Ok(TrainConfig {
            batch_size: Some(target.batch_size),
            micro_batch: MicroBatch::Fixed(split.micro_batch),
            grad_accum: Some(split.grad_accum),
            ..self.clone()
        })
    }

    /// Number of data-parallel ranks: the entries of `devices`, 1 without it.
    pub fn world(&self) -> Result<usize> {
        match &self.devices {
            None => Ok(1),
            Some(d) => Ok(crate::parallel::parse_devices(d)?.world()),
        }
    }

    /// The model shape: a preset name or a config file (toml or json with `MambaConfig`'s fields).
    pub fn model_config(&self) -> Result<MambaConfig> {
        if let Some(cfg) = MambaConfig::preset(&self.model) {
            return Ok(cfg);
        }
        let path = Path::new(&self.model);
        if !path.is_file() {
            bail!("--model {}: not a preset ({}) and not a file", self.model, PRESET_NAMES.join(", "));
        }
        let text = std::fs::read_to_string(path).with_context(|| format!("reading model config {}", path.display()))?;
        let cfg: MambaConfig = if self.model.ends_with(".json") {
            serde_json::from_str(&text).with_context(|| format!("parsing model config {}", path.display()))?
        } else {
            toml::from_str(&text).with_context(|| format!("parsing model config {}", path.display()))?
        };
        cfg.validate().map_err(anyhow::Error::msg).with_context(|| format!("{}", path.display()))?;
        Ok(cfg)
    }

    pub fn optim_config(&self) -> OptimConfig {
        OptimConfig {
            kind: self.optimizer,
            muon_lr: self.muon_lr,
            adamw_lr: self.adamw_lr,
            weight_decay: self.weight_decay,
            warmup_steps: self.warmup,
            total_steps: self.decay_steps.unwrap_or(self.steps),
            final_lr_frac: self.final_lr_frac,
            clip: self.clip,
            ..OptimConfig::default()
        }
    }

    /// The TOML saved next to a run, headed by version and git commit.
    pub fn to_resolved_toml(&self) -> Result<String> {
        Ok(format!("# trainer {} (git {})\n{}", crate::VERSION, crate::GIT_HASH, toml::to_string(self)?))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
