//! `trainer train` configuration: every flag of `--help`, also settable from a TOML file
//! (`--config FILE`); flags given on the command line override the file, the file overrides the
//! defaults (the optimizer study's learning rates, see `optim::config`). The resolved config is
//! saved as `RUN_DIR/config.resolved.toml`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::data::OnBadChunk;
use crate::model::config::PRESET_NAMES;
use crate::model::MambaConfig;
use crate::optim::config::ADAMW_ONLY_LR;
use crate::optim::{OptimConfig, OptimizerKind};

/// The resolved training configuration (file section names match the flag names, with `_`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    pub data: PathBuf,
    pub model: String,
    pub init_from: Option<String>,
    pub out: PathBuf,
    pub steps: usize,
    pub micro_batch: usize,
    pub grad_accum: usize,
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
    /// The device's dense peak in TFLOPS for the MFU of the progress display; `None` = the
    /// default for the device (CUDA: 989 = H100/H200 SXM bf16; CPU: no MFU).
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
            micro_batch: 1,
            grad_accum: 32,
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

/// Flags of `trainer train`. Unset flags keep the config file's (or default) value.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TrainArgs {
    /// TOML file with any of the settings below (keys = flag names with `_`; `-` is accepted too; see trainer/configs/example.toml); flags override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Shard directory (written by `pipeline`): train-*.shard and val-*.shard. [default: data]
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Model preset (130m, 370m, 31m, tiny, micro) or a model config file (.toml/.json). [default: 130m]
    #[arg(long)]
    pub model: Option<String>,
    /// Start from a checkpoint: a directory with model.safetensors + config.json, or a Hugging Face
    /// repo id (e.g. state-spaces/mamba-130m-hf). Its config replaces --model.
    #[arg(long, value_name = "PATH|REPO")]
    pub init_from: Option<String>,
    /// Run directory: checkpoints, metrics, plots, resolved config. [default: runs/default]
    #[arg(long, value_name = "RUN_DIR")]
    pub out: Option<PathBuf>,
    /// Optimizer steps to train (total, including steps before a resume). [default: 10000]
    #[arg(long)]
    pub steps: Option<usize>,
    /// Sequences per forward/backward pass: only a throughput/memory knob. [default: 1]
    #[arg(long)]
    pub micro_batch: Option<usize>,
    /// Micro-batches per optimizer step; effective batch = micro-batch × grad-accum. [default: 32]
    #[arg(long)]
    pub grad_accum: Option<usize>,
    /// Linear learning-rate warmup steps. [default: 100]
    #[arg(long)]
    pub warmup: Option<usize>,
    /// Step at which the cosine decay reaches its floor. [default: --steps]
    #[arg(long)]
    pub decay_steps: Option<usize>,
    /// Floor of the cosine decay as a fraction of the peak learning rate. [default: 0.1]
    #[arg(long)]
    pub final_lr_frac: Option<f64>,
    /// Peak learning rate of the Muon group (in_proj, x_proj, out_proj); the seed recipe had 1e-3. [default: 3e-3]
    #[arg(long)]
    pub muon_lr: Option<f64>,
    /// Peak learning rate of the AdamW groups (everything else; all parameters with --optimizer adamw); the seed recipe had 1e-4. [default: 3e-3 with the hybrid, 1e-3 with --optimizer adamw]
    #[arg(long)]
    pub adamw_lr: Option<f64>,
    /// Decoupled weight decay (not applied to A_log, D, norms, biases). [default: 0.01]
    #[arg(long)]
    pub weight_decay: Option<f64>,
    /// Clip the global gradient L2 norm to this value (0 = off). [default: 1.0]
    #[arg(long)]
    pub clip: Option<f64>,
    /// hybrid (Muon + AdamW) or adamw (AdamW for all parameters). [default: hybrid]
    #[arg(long, value_enum)]
    pub optimizer: Option<OptimizerKind>,
    /// Evaluate the validation loss every N steps (and at the end); 0 = only at the end. [default: 250]
    #[arg(long)]
    pub eval_every: Option<usize>,
    /// Number of val chunks in the fixed evaluation set. [default: 64]
    #[arg(long)]
    pub eval_chunks: Option<usize>,
    /// Save a checkpoint every N steps (and at the end); 0 = only at the end. [default: 1000]
    #[arg(long)]
    pub save_every: Option<usize>,
    /// Keep the newest K checkpoints, delete older ones. [default: 3]
    #[arg(long)]
    pub keep_checkpoints: Option<usize>,
    /// Continue from the newest checkpoint in --out (same config required).
    #[arg(long, conflicts_with = "overwrite")]
    pub resume: bool,
    /// Start afresh in an --out that already holds a run: its checkpoints, metrics, plots and
    /// TensorBoard files are deleted first (without this or --resume such an --out is refused).
    #[arg(long)]
    pub overwrite: bool,
    /// Follow mode: take train shards as the pipeline publishes them, release them when done.
    #[arg(long)]
    pub follow: bool,
    /// Seed of the weight init and the data order. [default: 0]
    #[arg(long)]
    pub seed: Option<u64>,
    /// cpu or cuda:N. [default: cpu]
    #[arg(long)]
    pub device: Option<String>,
    /// Compute dtype: f32, or bf16 = mixed precision (bf16 matmuls and activations; f32 master weights, optimizer state, scan recurrence, norm statistics and loss). [default: f32]
    #[arg(long)]
    pub dtype: Option<String>,
    /// Data-parallel training, one rank per entry: CUDA ordinals (0,1,2,3; needs a build with
    /// `--features nccl`) or cpu,cpu (CPU ranks, for testing). Each rank runs --micro-batch ×
    /// --grad-accum sequences per step, so the effective batch is that × the number of ranks.
    /// Replaces --device. See docs/multi-gpu.md.
    #[arg(long, value_name = "LIST")]
    pub devices: Option<String>,
    /// Static mode, a chunk whose frame is corrupt: `fail` stops with an error naming the shard and
    /// chunk (after saving a checkpoint of the last completed step); `skip` leaves it out with a
    /// warning, counts it (`skipped_chunks` in metrics.jsonl) and goes on; the other chunks keep
    /// their order, so `--resume --on-bad-chunk skip` gets past a chunk that stopped a run. [default: fail]
    #[arg(long, value_enum)]
    pub on_bad_chunk: Option<OnBadChunk>,
    /// Every N steps, generate a short sample from --sample-prompt (logged, in metrics.jsonl and
    /// in TensorBoard as text); 0 = never. [default: 0]
    #[arg(long, value_name = "N")]
    pub sample_every: Option<usize>,
    /// The fixed prompt of --sample-every. [default: "The meaning of life is"]
    #[arg(long, value_name = "TEXT")]
    pub sample_prompt: Option<String>,
    /// Dense peak of the device in TFLOPS, for the MFU shown in the progress display
    /// (6 × params × tokens/s ÷ peak). [default: 989 on CUDA (H100/H200 SXM, bf16); none on CPU]
    #[arg(long, value_name = "TFLOPS")]
    pub peak_tflops: Option<f64>,
}

impl TrainArgs {
    /// Defaults ← config file ← flags.
    pub fn resolve(&self) -> Result<TrainConfig> {
        let (mut c, file_sets_adamw_lr) = match &self.config {
            Some(path) => {
                let (c, keys) = TrainConfig::read_toml_file(path)?;
                (c, keys.contains_key("adamw_lr"))
            }
            None => (TrainConfig::default(), false),
        };
        macro_rules! take {
            ($($f:ident),*) => { $( if let Some(v) = &self.$f { c.$f = v.clone(); } )* };
        }
        take!(data, model, out, steps, micro_batch, grad_accum, warmup, final_lr_frac, muon_lr, adamw_lr);
        take!(weight_decay, clip, optimizer, eval_every, eval_chunks, save_every, keep_checkpoints, seed, device, dtype);
        if self.init_from.is_some() {
            c.init_from = self.init_from.clone();
        }
        if self.decay_steps.is_some() {
            c.decay_steps = self.decay_steps;
        }
        if self.devices.is_some() {
            c.devices = self.devices.clone();
        }
        if let Some(v) = self.on_bad_chunk {
            c.on_bad_chunk = v;
        }
        take!(sample_every, sample_prompt);
        if self.peak_tflops.is_some() {
            c.peak_tflops = self.peak_tflops;
        }
        c.resume |= self.resume;
        c.overwrite |= self.overwrite;
        c.follow |= self.follow;
        // AdamW alone has its own best learning rate in the study, unless one was given.
        if c.optimizer == OptimizerKind::AdamW && self.adamw_lr.is_none() && !file_sets_adamw_lr {
            c.adamw_lr = ADAMW_ONLY_LR;
        }
        c.validate()?;
        Ok(c)
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
        for (name, v) in [("--steps (steps)", self.steps), ("--keep-checkpoints (keep_checkpoints)", self.keep_checkpoints)] {
            if v == 0 {
                bail!("{name} must be at least 1");
            }
        }
        // Sizes that allocate: bounded here, and against the data's shape in `train::run`.
        crate::size_limits::check_flags(self)?;
        if self.resume && self.overwrite {
            bail!("--resume and --overwrite exclude each other: continue the run in --out, or start it afresh");
        }
        if !["f32", "bf16"].contains(&self.dtype.as_str()) {
            bail!("--dtype {}: expected f32 or bf16", self.dtype);
        }
        self.optim_config().validate().context("optimizer config")?;
        self.world()?;
        Ok(())
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

    /// Sequences per optimizer step.
    pub fn effective_batch(&self) -> usize {
        self.micro_batch * self.grad_accum
    }

    /// The TOML saved next to a run, headed by version and git commit.
    pub fn to_resolved_toml(&self) -> Result<String> {
        Ok(format!("# trainer {} (git {})\n{}", crate::VERSION, crate::GIT_HASH, toml::to_string(self)?))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: TrainArgs,
    }

    #[test]
    fn flags_override_file_which_overrides_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("run.toml");
        std::fs::write(&file, "model = \"tiny\"\nsteps = 50\nmuon_lr = 0.02\noptimizer = \"adamw\"\n").unwrap();
        let cli = Cli::parse_from(["x", "--config", file.to_str().unwrap(), "--steps", "7", "--resume"]);
        let c = cli.args.resolve().unwrap();
        assert_eq!((c.model.as_str(), c.steps, c.muon_lr, c.optimizer), ("tiny", 7, 0.02, OptimizerKind::AdamW));
        assert!(c.resume);
        // Neither the file nor a flag sets adamw_lr: AdamW alone gets its own default.
        assert_eq!(c.adamw_lr, ADAMW_ONLY_LR);
        // The resolved TOML parses back to the same config.
        let text = c.to_resolved_toml().unwrap();
        assert_eq!(toml::from_str::<TrainConfig>(&text).unwrap(), c);
    }

    #[test]
    fn adamw_lr_default_follows_the_optimizer_unless_given() {
        let resolve = |args: &[&str]| Cli::parse_from([&["x"], args].concat()).args.resolve().unwrap();
        let c = resolve(&[]);
        assert_eq!((c.optimizer, c.muon_lr, c.adamw_lr), (OptimizerKind::Hybrid, 3e-3, 3e-3));
        assert_eq!(resolve(&["--optimizer", "adamw"]).adamw_lr, 1e-3);
        assert_eq!(resolve(&["--optimizer", "adamw", "--adamw-lr", "3e-3"]).adamw_lr, 3e-3);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.toml");
        std::fs::write(&file, "optimizer = \"adamw\"\nadamw_lr = 2e-4\n").unwrap();
        assert_eq!(resolve(&["--config", file.to_str().unwrap()]).adamw_lr, 2e-4);
    }

    #[test]
    fn the_shipped_seed_config_is_the_seed_recipe() {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/seed.toml");
        let c = Cli::parse_from(["x", "--config", file.to_str().unwrap()]).args.resolve().unwrap();
        assert_eq!((c.muon_lr, c.adamw_lr), crate::optim::config::SEED_LRS);
        assert_eq!((c.optimizer, c.warmup, c.micro_batch * c.grad_accum, c.steps), (OptimizerKind::Hybrid, 100, 32, 10_000));
    }

    #[test]
    fn devices_flag_is_parsed_and_checked() {
        let resolve = |args: &[&str]| Cli::parse_from([&["x"], args].concat()).args.resolve();
        let c = resolve(&["--devices", "cpu,cpu,cpu"]).unwrap();
        assert_eq!((c.devices.as_deref(), c.world().unwrap()), (Some("cpu,cpu,cpu"), 3));
        assert_eq!(resolve(&[]).unwrap().world().unwrap(), 1);
        let err = format!("{:#}", resolve(&["--devices", "0,0"]).unwrap_err());
        assert!(err.contains("--devices 0,0") && err.contains("listed twice"), "{err}");
        // Old configs (and checkpoints) without the key are single-device.
        let c: TrainConfig = toml::from_str("steps = 3\n").unwrap();
        assert_eq!(c.world().unwrap(), 1);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bad.toml");
        std::fs::write(&file, "stepz = 5\n").unwrap();
        let err = format!("{:#}", TrainConfig::from_toml_file(&file).unwrap_err());
        assert!(err.contains("bad.toml") && err.contains("stepz"), "{err}");
        let c = TrainConfig { grad_accum: 0, ..TrainConfig::default() };
        assert!(c.validate().unwrap_err().to_string().contains("grad_accum"));
        let c = TrainConfig { model: "nope".into(), ..TrainConfig::default() };
        assert!(c.model_config().unwrap_err().to_string().contains("not a preset"));
    }
}
