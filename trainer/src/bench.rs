//! `trainer bench`: times full training steps (forward + backward + clip + hybrid optimizer
//! update) and prints tokens/s and MFU (`metrics::mfu`, against `--peak-tflops` or the device's
//! default peak) with a breakdown: forward, backward, optimizer (Muon, AdamW) and data wait.
//! Batches are random tokens, or real shards through the training data loader (`--data`,
//! background decompression and staging) so the data wait is the real one. With
//! `--devices 0,1,…` it runs the data-parallel step of `trainer train --devices` (each device
//! runs micro-batch × grad-accum sequences per step) and prints total and per-device tokens/s,
//! which is how the scaling efficiency is measured (docs/multi-gpu.md). Prints numbers; asserts
//! nothing.
//!
//! The split of a step is explicit by default (`--micro-batch 1 --grad-accum 1`: the many
//! recorded benchmark commands keep their meaning); `--micro-batch auto` resolves it as
//! `trainer train` does (`train::batch_plan`) for `--batch-size` (default 32).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use candle_core::Device;
use mamba_shards::shard_params::chunk_tokens_for;

use crate::config::{MicroBatch, TrainConfig};
use crate::data::{train_shard_params, Batch, DataPosition, DataSpec, TrainData};
use crate::device::{parse_device, parse_dtype};
use crate::metrics::mfu::{mfu_text, Peak};
use crate::model::Params;
use crate::optim::OptimizerKind;
use crate::parallel::{parse_devices, Placement};
use crate::train::rank_group::RankGroup;
use crate::train::replica::ReplicaInit;

#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Model preset or model config file.
    #[arg(long, default_value = "tiny")]
    pub model: String,
    /// Timed steps (after one untimed warm-up step).
    #[arg(long, default_value_t = 3)]
    pub steps: usize,
    /// Sequences per forward/backward on one device: a number (1..=65536), or `auto`: the
    /// largest divisor of a device's share of --batch-size whose step fits its free memory, as
    /// `trainer train --micro-batch auto` chooses it.
    #[arg(long, value_name = "auto|N", default_value = "1")]
    pub micro_batch: MicroBatch,
    /// Micro-batches per optimizer step on one device (1..=1048576). [default: 1; derived from
    /// --batch-size when that or --micro-batch auto is given]
    #[arg(long)]
    pub grad_accum: Option<usize>,
    /// Sequences per optimizer step over all devices, split by --micro-batch as in `trainer
    /// train`. [default: micro-batch × grad-accum × devices; 32 with --micro-batch auto]
    #[arg(long, value_name = "SEQS")]
    pub batch_size: Option<usize>,
    /// Tokens per sequence. Allowed: 1..=1048576.
    #[arg(long, default_value_t = 1024, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1 << 20))]
    pub seq_len: usize,
    /// hybrid or adamw.
    #[arg(long, value_enum, default_value = "hybrid")]
    pub optimizer: OptimizerKind,
    /// cpu or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Compute dtype: f32, or bf16 (mixed precision, f32 master weights).
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// Data-parallel ranks, as `trainer train --devices`: CUDA ordinals (0,1,2,3) or cpu,cpu.
    /// Replaces --device; micro-batch × grad-accum is per device.
    #[arg(long, value_name = "LIST")]
    pub devices: Option<String>,
    /// Read batches from the train shards of this directory through the training data loader
    /// (its chunk length replaces --seq-len) instead of generating random tokens.
    #[arg(long)]
    pub data: Option<std::path::PathBuf>,
    /// Dense peak of one device in TFLOPS, for the MFU (6 × params × tokens/s per device ÷ peak).
    /// [default: 989 on CUDA (H100/H200 SXM dense bf16); none on CPU]
    #[arg(long, value_name = "TFLOPS")]
    pub peak_tflops: Option<f64>,
}

pub fn run(args: &BenchArgs) -> Result<()> {
    let placement = args.devices.as_deref().map(parse_devices).transpose()?;
    let world = placement.as_ref().map_or(1, Placement::world);
    let device = match &placement {
        None => parse_device(&args.device)?,
        Some(_) => Device::Cpu, // each rank opens its own device
    };
    let dtype = parse_dtype(&args.dtype, &device)?;
    // One micro-batch per step unless --batch-size or auto asks for a split.
    let grad_accum = match (args.micro_batch, args.batch_size, args.grad_accum) {
        (MicroBatch::Fixed(_), None, None) => Some(1),
        (_, _, g) => g,
    };
    let tc = TrainConfig {
        model: args.model.clone(),
        optimizer: args.optimizer,
        batch_size: args.batch_size,
        micro_batch: args.micro_batch,
        grad_accum,
        device: args.device.clone(),
        devices: args.devices.clone(),
        dtype: args.dtype.clone(),
        peak_tflops: args.peak_tflops,
        ..TrainConfig::default()
    };
    tc.validate()?;
    let cfg = tc.model_config()?;
    let seq_len = match &args.data {
        Some(dir) => shard_seq_len(dir)?,
        None => args.seq_len,
    };
    let tc = crate::train::batch_plan::resolve_batch(&tc, &cfg, seq_len, dtype, placement.as_ref(), &device)?;
    let split = tc.split()?;
    crate::config::size_limits::check_step_memory(&tc, seq_len, cfg.padded_vocab(), world)?;
    let (micro_batch, grad_accum) = (split.micro_batch, split.grad_accum);
    // Batches: random tokens, or the real loader over --data (static order, seed 0).
    let mut source = match &args.data {
        Some(dir) => {
            BatchSource::Shards { data: Box::new(open_shards(dir, micro_batch, seq_len, cfg.padded_vocab())?) }
        }
        None => BatchSource::Random {
            rng: Box::new(ChaCha8Rng::seed_from_u64(0)),
            vocab: cfg.vocab_size.min(cfg.padded_vocab()) as u32,
            seq_len,
            micro_batch,
        },
    };
    // The replicas and optimizers, as `trainer train` builds them (bf16: Newton–Schulz in bf16).
    let params = Params::init(&cfg, 0, &Device::Cpu)?;
    let n_params = params.n_params();
    let init = ReplicaInit {
        model: cfg.clone(),
        weights: params.tensors().into_iter().collect(),
        optimizer_state: None,
        optim: tc.optim_config(),
        dtype,
        clip: 1.0,
    };
    drop(params);
    let mut ranks = match &placement {
        None => RankGroup::single(init, device)?,
        Some(p) => RankGroup::start(init, p)?,
    };
    let device = ranks.leader().device.clone();
    let devices = match &placement {
        None => args.device.clone(),
        Some(p) => (0..world).map(|r| p.device_name(r)).collect::<Vec<_>>().join(","),
    };
    println!(
        "bench: model {} ({n_params} params), device {devices}, dtype {}, micro-batch {micro_batch} × grad-accum {grad_accum} × {world} {} × seq {seq_len} = {} tokens/step, optimizer {}, data {}",
        args.model, args.dtype, plural(world, "device"),
        micro_batch * grad_accum * world * seq_len, optimizer_name(args.optimizer),
        args.data.as_ref().map_or("random tokens".to_string(), |d| d.display().to_string())
    );
    let peak = Peak::for_device(&device, args.peak_tflops);
    let tokens_per_step = (micro_batch * grad_accum * world * seq_len) as f64;
    let mut sum = Breakdown::default();
    for i in 0..=args.steps {
        // Data wait is inside the timed region, as in training: the loader must keep up.
        device.synchronize()?;
        let t0 = Instant::now();
        let mut batches = Vec::with_capacity(grad_accum * world);
        let mut wait = Duration::ZERO;
        for _ in 0..grad_accum * world {
            let b = source.next()?;
            wait += b.wait;
            batches.push(b);
        }
        let r = ranks.step(batches, i)?;
        device.synchronize()?;
        let b = Breakdown {
            total: t0.elapsed().as_secs_f64() * 1e3,
            fwd: r.fwd_ms,
            bwd: r.bwd_ms,
            muon: r.optim.muon_ms,
            adamw: r.optim.adamw_ms,
            sync: r.sync_ms,
            wait: wait.as_secs_f64() * 1e3,
        };
        let label = if i == 0 { "warm-up".to_string() } else { format!("step {i}") };
        println!(
            "{label:>8}: {:>8.1} ms ({:>8.1} tok/s)  fwd {:>7.1}  bwd {:>7.1}  muon {:>6.1}  adamw {:>6.1}  data-wait {:>6.2} ms  loss {:.4}  all-reduce {:>6.1} ms",
            b.total, tokens_per_step / (b.total / 1e3), b.fwd, b.bwd, b.muon, b.adamw, b.wait, r.loss, b.sync
        );
        if i > 0 {
            sum.add(&b);
        }
    }
    let n = args.steps.max(1) as f64;
    let pct = |x: f64| 100.0 * x / sum.total.max(1e-9);
    let tps = tokens_per_step / (sum.total / n / 1e3);
    let device_kind = if device.is_cuda() { "cuda" } else { "cpu" };
    println!(
        "mean over {} steps: {:.1} ms/step, {:.1} tokens/s, {} | forward {:.1}%, backward {:.1}%, optimizer {:.1}% (Muon {:.1}%, AdamW {:.1}%), data-wait {:.3}%, other {:.1}% (all-reduce {:.1}%) | {world} {}: {:.1} tokens/s per device",
        args.steps, sum.total / n, tps, mfu_text(n_params as u64, tps / world as f64, peak.as_ref(), device_kind),
        pct(sum.fwd), pct(sum.bwd),
        pct(sum.muon + sum.adamw), pct(sum.muon), pct(sum.adamw), pct(sum.wait),
        pct(sum.total - sum.fwd - sum.bwd - sum.muon - sum.adamw - sum.wait), pct(sum.sync), plural(world, "device"), tps / world as f64
    );
    Ok(())
}

/// `1 device`, `2 devices`.
fn plural(n: usize, noun: &str) -> String {
    if n == 1 {
        noun.to_string()
    } else {
        format!("{noun}s")
    }
}

/// The optimizer as its flag spells it: `hybrid (Muon + AdamW)` or `adamw`.
fn optimizer_name(kind: OptimizerKind) -> &'static str {
    match kind {
        OptimizerKind::Hybrid => "hybrid (Muon + AdamW)",
        OptimizerKind::AdamW => "adamw",
    }
}

/// Milliseconds of one step and its parts (summed over steps for the mean line).
#[derive(Default)]
struct Breakdown {
    total: f64,
    fwd: f64,
    bwd: f64,
    muon: f64,
    adamw: f64,
    /// All-reduce of the loss and gradients (part of "other").
    sync: f64,
    wait: f64,
}

impl Breakdown {
    fn add(&mut self, o: &Breakdown) {
        self.total += o.total;
        self.fwd += o.fwd;
        self.bwd += o.bwd;
        self.muon += o.muon;
        self.adamw += o.adamw;
        self.sync += o.sync;
        self.wait += o.wait;
    }
}

enum BatchSource {
    Random { rng: Box<ChaCha8Rng>, vocab: u32, seq_len: usize, micro_batch: usize },
    Shards { data: Box<TrainData> },
}

impl BatchSource {
    fn next(&mut self) -> Result<Batch> {
        match self {
            BatchSource::Random { rng, vocab, seq_len, micro_batch } => Ok(Batch {
                tokens: (0..*micro_batch * chunk_tokens_for(*seq_len)).map(|_| rng.gen_range(0..*vocab)).collect(),
                micro_batch: *micro_batch,
                seq_len: *seq_len,
                position_after: DataPosition::start_static(0, 1, 1),
                chunks: Vec::new(),
                wait: Duration::ZERO,
            }),
            BatchSource::Shards { data } => data
                .next_batch()?
                .context("the shards ran out of data (static mode loops over epochs, so this means no train chunks)"),
        }
    }
}

/// The sequence length of the train shards of `dir`.
fn shard_seq_len(dir: &Path) -> Result<usize> {
    let Some(shard) = train_shard_params(dir).with_context(|| format!("--data {}", dir.display()))? else {
        bail!("--data {}: no train shards (train-*.shard)", dir.display())
    };
    Ok(shard.seq_len())
}

/// The training data loader over the train shards of `dir` (of `seq_len`-token sequences).
fn open_shards(dir: &Path, micro_batch: usize, seq_len: usize, vocab_size: usize) -> Result<TrainData> {
    let spec = DataSpec {
        dir: dir.to_path_buf(),
        seq_len,
        vocab_size,
        seed: 0,
        follow: false,
        micro_batch,
        prefetch: 4,
        on_bad_chunk: Default::default(),
    };
    TrainData::open(spec, None).with_context(|| format!("opening data in {}", dir.display()))
}
