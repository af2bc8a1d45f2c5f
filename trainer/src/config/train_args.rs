//! [`TrainArgs`]: the flags of `trainer train` (`--help`), and how they resolve into a
//! [`TrainConfig`]: defaults ← config file (`--config`) ← flags.

use std::path::PathBuf;

use anyhow::Result;

use super::{MicroBatch, TrainConfig};
use crate::data::OnBadChunk;
use crate::optim::config::ADAMW_ONLY_LR;
use crate::optim::OptimizerKind;

/// Flags of `trainer train`. Unset flags keep the config file's (or default) value.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TrainArgs {
    /// TOML file with any of the settings below (keys = flag names with `_`; `-` is accepted too; see trainer/configs/example.toml); flags override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Shard directory (written by `pipeline`): train-*.shard and val-*.shard. [default: data]
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Model preset (130m, 370m, 790m, 1.4b, 31m, tiny, micro) or a model config file (.toml/.json). [default: 130m]
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
    /// Sequences per optimizer step over all devices (the effective batch; the learning rates
    /// were tuned at 32). Each device trains SEQS ÷ devices of them, split into micro-batches.
    /// [default: 32, or --micro-batch × --grad-accum × devices when both are numbers]
    #[arg(long, value_name = "SEQS")]
    pub batch_size: Option<usize>,
    /// Sequences per forward/backward pass on one device, only a throughput/memory knob: `auto` =
    /// the largest divisor of a device's share of --batch-size whose step fits the device's free
    /// memory (CUDA; on the CPU a measured size), logged at start and saved in the run's
    /// config.resolved.toml; or a number. [default: auto]
    #[arg(long, value_name = "auto|N")]
    pub micro_batch: Option<MicroBatch>,
    /// Micro-batches per optimizer step on one device: derived (--batch-size ÷ devices ÷
    /// micro-batch), so usually not given. Given with a numeric --micro-batch, the step is
    /// micro-batch × grad-accum per device, as in older versions; given with --micro-batch auto it
    /// fixes the micro-batch; one that contradicts --batch-size is an error.
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
    /// `--features nccl`) or cpu,cpu (CPU ranks, for testing). Each rank trains --batch-size ÷
    /// ranks sequences per step (--micro-batch × --grad-accum of them). Replaces --device. See
    /// docs/multi-gpu.md.
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
    /// Dense peak of the device in TFLOPS, for the MFU (6 × params × tokens/s ÷ peak) of the step
    /// log, metrics.jsonl and the progress display. [default: 989 on CUDA (H100/H200 SXM dense
    /// bf16); none on CPU]
    #[arg(long, value_name = "TFLOPS")]
    pub peak_tflops: Option<f64>,
}

impl TrainArgs {
    /// The batch flags over the file's batch keys. grad-accum is derived now, so a file's
    /// `grad_accum` yields to a `--batch-size` or `--micro-batch` flag (unless `--grad-accum` is
    /// given too), and a file's `batch_size` yields to `--micro-batch N --grad-accum M` flags:
    /// a flag never contradicts a key of the file it overrides.
    fn take_batch(&self, c: &mut TrainConfig) {
        if (self.batch_size.is_some() || self.micro_batch.is_some()) && self.grad_accum.is_none() {
            c.grad_accum = None;
        }
        if matches!(self.micro_batch, Some(MicroBatch::Fixed(_)))
            && self.grad_accum.is_some()
            && self.batch_size.is_none()
        {
            c.batch_size = None;
        }
        if let Some(m) = self.micro_batch {
            c.micro_batch = m;
        }
        if self.batch_size.is_some() {
            c.batch_size = self.batch_size;
        }
        if self.grad_accum.is_some() {
            c.grad_accum = self.grad_accum;
        }
    }

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
        take!(data, model, out, steps, warmup, final_lr_frac, muon_lr, adamw_lr);
        take!(
            weight_decay,
            clip,
            optimizer,
            eval_every,
            eval_chunks,
            save_every,
            keep_checkpoints,
            seed,
            device,
            dtype
        );
        if self.init_from.is_some() {
            c.init_from = self.init_from.clone();
        }
        if self.decay_steps.is_some() {
            c.decay_steps = self.decay_steps;
        }
        self.take_batch(&mut c);
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
