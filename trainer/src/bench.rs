//! `trainer bench`: times full training steps (forward + backward + clip + hybrid optimizer
//! update) on random tokens and prints tokens/s with a breakdown. Prints numbers; asserts nothing.

use std::time::{Duration, Instant};

use anyhow::Result;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::config::TrainConfig;
use crate::data::{Batch, DataPosition};
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
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let vocab = cfg.vocab_size.min(cfg.padded_vocab()) as u32;
    let mut batch = || Batch {
        tokens: (0..args.micro_batch * (args.seq_len + 1)).map(|_| rng.gen_range(0..vocab)).collect(),
        micro_batch: args.micro_batch,
        position_after: DataPosition::start_static(0, 1, 1),
        chunks: Vec::new(),
        wait: Duration::ZERO,
    };
    println!(
        "bench: model {} ({} params), device {}, dtype {}, micro-batch {} × grad-accum {} × seq {} = {} tokens/step, optimizer {:?}",
        args.model, params.n_params(), args.device, args.dtype, args.micro_batch, args.grad_accum, args.seq_len,
        args.micro_batch * args.grad_accum * args.seq_len, args.optimizer
    );
    let tokens_per_step = (args.micro_batch * args.grad_accum * args.seq_len) as f64;
    let (mut total, mut optim) = (0.0, 0.0);
    for i in 0..=args.steps {
        let batches: Vec<Batch> = (0..args.grad_accum).map(|_| batch()).collect();
        device.synchronize()?;
        let t0 = Instant::now();
        let r = train_step(&model, &mut opt, &batches, args.seq_len, 1.0, i, &device)?;
        device.synchronize()?;
        let ms = t0.elapsed().as_secs_f64() * 1e3;
        let opt_ms = r.optim.muon_ms + r.optim.adamw_ms;
        let label = if i == 0 { "warm-up".to_string() } else { format!("step {i}") };
        println!(
            "{label:>8}: {ms:>9.1} ms  ({:>8.1} tok/s)  fwd+bwd+clip {:>9.1} ms  muon {:>7.1} ms  adamw {:>7.1} ms  loss {:.4}",
            tokens_per_step / (ms / 1e3), ms - opt_ms, r.optim.muon_ms, r.optim.adamw_ms, r.loss
        );
        if i > 0 {
            total += ms;
            optim += opt_ms;
        }
    }
    let n = args.steps.max(1) as f64;
    println!(
        "mean over {} steps: {:.1} ms/step, {:.1} tokens/s, optimizer {:.1}% of the step",
        args.steps, total / n, tokens_per_step / (total / n / 1e3), 100.0 * optim / total.max(1e-9)
    );
    Ok(())
}
