//! `trainer bench`: times full training steps (forward + backward + clip + hybrid optimizer
//! update) and prints tokens/s with a breakdown: forward, backward, optimizer (Muon, AdamW) and
//! data wait. Batches are random tokens, or real shards through the training data loader
//! (`--data`, background decompression and staging) so the data wait is the real one. Prints
//! numbers; asserts nothing.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::config::TrainConfig;
use crate::data::{train_seq_len, Batch, DataPosition, DataSpec, TrainData};
use crate::device::{parse_device, parse_dtype};
use crate::model::{MambaLM, Params};
use crate::optim::{HybridOptimizer, OptimizerKind};
use crate::train::step::train_step;

#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Model preset or model config file.
    #[arg(long, default_value = "tiny")]
    pub model: String,
    /// Timed steps (after one untimed warm-up step).
    #[arg(long, default_value_t = 3)]
    pub steps: usize,
    /// Sequences per forward/backward.
    #[arg(long, default_value_t = 1)]
    pub micro_batch: usize,
    /// Micro-batches per optimizer step.
    #[arg(long, default_value_t = 1)]
    pub grad_accum: usize,
    /// Tokens per sequence.
    #[arg(long, default_value_t = 1024)]
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
    /// Read batches from the train shards of this directory through the training data loader
    /// (its chunk length replaces --seq-len) instead of generating random tokens.
    #[arg(long)]
    pub data: Option<std::path::PathBuf>,
}

pub fn run(args: &BenchArgs) -> Result<()> {
    let device = parse_device(&args.device)?;
    let dtype = parse_dtype(&args.dtype, &device)?;
    let tc = TrainConfig { model: args.model.clone(), optimizer: args.optimizer, ..TrainConfig::default() };
    let cfg = tc.model_config()?;
    let params = Params::init(&cfg, 0, &device)?;
    let model = MambaLM::new(&cfg, params.var_builder(&device))?.with_compute_dtype(dtype)?;
    let mut opt = HybridOptimizer::new(params.named_vars().to_vec(), tc.optim_config())?;
    if dtype == candle_core::DType::BF16 {
        opt.set_ns_dtype(dtype); // as `trainer train --dtype bf16` does
    }
    // Batches: random tokens, or the real loader over --data (static order, seed 0).
    let mut source = match &args.data {
        Some(dir) => {
            let (data, seq_len) = open_shards(dir, args.micro_batch, cfg.padded_vocab())?;
            BatchSource::Shards { data: Box::new(data), seq_len }
        }
        None => BatchSource::Random { rng: Box::new(ChaCha8Rng::seed_from_u64(0)), vocab: cfg.vocab_size.min(cfg.padded_vocab()) as u32, seq_len: args.seq_len, micro_batch: args.micro_batch },
    };
    let seq_len = source.seq_len();
    println!(
        "bench: model {} ({} params), device {}, dtype {}, micro-batch {} × grad-accum {} × seq {} = {} tokens/step, optimizer {:?}, data {}",
        args.model, params.n_params(), args.device, args.dtype, args.micro_batch, args.grad_accum, seq_len,
        args.micro_batch * args.grad_accum * seq_len, args.optimizer,
        args.data.as_ref().map_or("random tokens".to_string(), |d| d.display().to_string())
    );
    let tokens_per_step = (args.micro_batch * args.grad_accum * seq_len) as f64;
    let mut sum = Breakdown::default();
    for i in 0..=args.steps {
        // Data wait is inside the timed region, as in training: the loader must keep up.
        device.synchronize()?;
        let t0 = Instant::now();
        let mut batches = Vec::with_capacity(args.grad_accum);
        let mut wait = Duration::ZERO;
        for _ in 0..args.grad_accum {
            let b = source.next()?;
            wait += b.wait;
            batches.push(b);
        }
        let r = train_step(&model, &mut opt, &batches, seq_len, 1.0, i, &device)?;
        device.synchronize()?;
        let b = Breakdown {
            total: t0.elapsed().as_secs_f64() * 1e3,
            fwd: r.fwd_ms,
            bwd: r.bwd_ms,
            muon: r.optim.muon_ms,
            adamw: r.optim.adamw_ms,
            wait: wait.as_secs_f64() * 1e3,
        };
        let label = if i == 0 { "warm-up".to_string() } else { format!("step {i}") };
        println!(
            "{label:>8}: {:>8.1} ms ({:>8.1} tok/s)  fwd {:>7.1}  bwd {:>7.1}  muon {:>6.1}  adamw {:>6.1}  data-wait {:>6.2} ms  loss {:.4}",
            b.total, tokens_per_step / (b.total / 1e3), b.fwd, b.bwd, b.muon, b.adamw, b.wait, r.loss
        );
        if i > 0 {
            sum.add(&b);
        }
    }
    let n = args.steps.max(1) as f64;
    let pct = |x: f64| 100.0 * x / sum.total.max(1e-9);
    println!(
        "mean over {} steps: {:.1} ms/step, {:.1} tokens/s | forward {:.1}%, backward {:.1}%, optimizer {:.1}% (Muon {:.1}%, AdamW {:.1}%), data-wait {:.3}%, other {:.1}%",
        args.steps, sum.total / n, tokens_per_step / (sum.total / n / 1e3), pct(sum.fwd), pct(sum.bwd),
        pct(sum.muon + sum.adamw), pct(sum.muon), pct(sum.adamw), pct(sum.wait),
        pct(sum.total - sum.fwd - sum.bwd - sum.muon - sum.adamw - sum.wait)
    );
    Ok(())
}

/// Milliseconds of one step and its parts (summed over steps for the mean line).
#[derive(Default)]
struct Breakdown {
    total: f64,
    fwd: f64,
    bwd: f64,
    muon: f64,
    adamw: f64,
    wait: f64,
}

impl Breakdown {
    fn add(&mut self, o: &Breakdown) {
        self.total += o.total;
        self.fwd += o.fwd;
        self.bwd += o.bwd;
        self.muon += o.muon;
        self.adamw += o.adamw;
        self.wait += o.wait;
    }
}

enum BatchSource {
    Random { rng: Box<ChaCha8Rng>, vocab: u32, seq_len: usize, micro_batch: usize },
    Shards { data: Box<TrainData>, seq_len: usize },
}

impl BatchSource {
    fn seq_len(&self) -> usize {
        match self {
            BatchSource::Random { seq_len, .. } => *seq_len,
            BatchSource::Shards { seq_len, .. } => *seq_len,
        }
    }

    fn next(&mut self) -> Result<Batch> {
        match self {
            BatchSource::Random { rng, vocab, seq_len, micro_batch } => Ok(Batch {
                tokens: (0..*micro_batch * (*seq_len + 1)).map(|_| rng.gen_range(0..*vocab)).collect(),
                micro_batch: *micro_batch,
                position_after: DataPosition::start_static(0, 1, 1),
                chunks: Vec::new(),
                wait: Duration::ZERO,
            }),
            BatchSource::Shards { data, .. } => data.next_batch()?.context("the shards ran out of data (static mode loops over epochs, so this means no train chunks)"),
        }
    }
}

/// The training data loader over the train shards of `dir`, and their sequence length.
fn open_shards(dir: &Path, micro_batch: usize, vocab_size: usize) -> Result<(TrainData, usize)> {
    let Some(seq_len) = train_seq_len(dir).with_context(|| format!("--data {}", dir.display()))? else {
        bail!("--data {}: no train shards (train-*.shard)", dir.display())
    };
    let spec = DataSpec { dir: dir.to_path_buf(), seq_len, vocab_size, seed: 0, follow: false, micro_batch, prefetch: 4 };
    let data = TrainData::open(spec, None).with_context(|| format!("opening data in {}", dir.display()))?;
    Ok((data, seq_len))
}
