//! Times the model's fused mixer ops, `mixer_scan` and `mixer_conv`, at one layer of the 130m
//! model (b = 1, l = 1024, d_inner = 1536, d_state = 16, d_conv = 4): forward alone, and forward +
//! backward through candle autograd (packing included). Until 2026-12 this timed the plain
//! `selective_scan` and `causal_conv1d_silu` ops, which the model no longer runs (now CPU-only
//! references in `mamba_ops::reference`); docs/benchmarks.md's older numbers are theirs.
//!
//! `cargo run -p mamba-ops --release --example bench_scan [-- iters [scan|conv|autograd]]`
//! Environment: `BENCH_DEVICE=cuda:0` (needs `--features cuda`), `BENCH_BATCH=16` (default 1).

use candle_core::{DType, Device, Result, Tensor, Var};
use mamba_ops::{ChannelParams, ScanTensors};
use std::time::Instant;

const L: usize = 1024;
const D: usize = 1536;
const N: usize = 16;
const K: usize = 4;

/// Median wall time of `iters` runs of `f` (after one warm-up), in milliseconds.
fn time_ms(dev: &Device, iters: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    let mut ms = Vec::with_capacity(iters);
    for _ in 0..iters {
        dev.synchronize()?;
        let start = Instant::now();
        f()?;
        dev.synchronize()?;
        ms.push(start.elapsed().as_secs_f64() * 1e3);
    }
    ms.sort_by(f64::total_cmp);
    Ok(ms[ms.len() / 2])
}

fn randn(dev: &Device, shape: &[usize], mean: f64, std: f64) -> Result<Var> {
    Var::from_tensor(&Tensor::randn(mean as f32, std as f32, shape, dev)?)
}

fn device() -> Result<Device> {
    match std::env::var("BENCH_DEVICE").as_deref() {
        Err(_) | Ok("cpu") => Ok(Device::Cpu),
        Ok(s) => match s.strip_prefix("cuda:").and_then(|i| i.parse().ok()) {
            Some(i) => Device::new_cuda(i),
            None => candle_core::bail!("BENCH_DEVICE must be cpu or cuda:N, got {s}"),
        },
    }
}

fn main() -> Result<()> {
    let iters: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(5);
    let only = std::env::args().nth(2);
    let run = |name: &str| only.as_deref().is_none_or(|o| o == name);
    let dev = device()?;
    let b: usize = std::env::var("BENCH_BATCH").ok().and_then(|s| s.parse().ok()).unwrap_or(1);
    println!(
        "{dev:?}, {} rayon threads, b={b} l={L} d={D} n={N} k={K}, median of {iters}",
        rayon::current_num_threads()
    );

    let xz = randn(&dev, &[b, L, 2 * D], 0.0, 1.0)?;
    let delta = randn(&dev, &[b, L, D], -2.0, 1.0)?;
    let bm = randn(&dev, &[b, L, N], 0.0, 1.0)?;
    let cm = randn(&dev, &[b, L, N], 0.0, 1.0)?;
    let a_log = Var::from_tensor(
        &Tensor::arange(1u32, N as u32 + 1, &dev)?.to_dtype(DType::F32)?.log()?.unsqueeze(0)?.repeat((D, 1))?,
    )?;
    let w = randn(&dev, &[D, K], 0.0, 0.5)?;
    let bias = randn(&dev, &[D], 0.0, 0.1)?;
    let params = ChannelParams {
        conv_w: w.as_tensor().clone(),
        conv_b: bias.as_tensor().clone(),
        a_log: a_log.as_tensor().clone(),
        d_skip: randn(&dev, &[D], 1.0, 0.1)?.as_tensor().clone(),
        delta_bias: randn(&dev, &[D], -1.0, 0.5)?.as_tensor().clone(),
    };
    let t = ScanTensors {
        xz: xz.as_tensor().clone(),
        seq_len: None,
        delta: delta.as_tensor().clone(),
        b: bm.as_tensor().clone(),
        c: cm.as_tensor().clone(),
        params,
    };
    let g = Tensor::randn(0f32, 1.0, (b, L, D), &dev)?;
    let scan = || mamba_ops::mixer_scan(&t);
    if run("scan") {
        let fwd = time_ms(&dev, iters, || scan().map(|_| ()))?;
        let fwd_bwd = time_ms(&dev, iters, || scan()?.mul(&g)?.sum_all()?.backward().map(|_| ()))?;
        println!("mixer_scan  fwd {fwd:9.2} ms   fwd+bwd {fwd_bwd:9.2} ms");
    }

    let conv = || mamba_ops::mixer_conv(&xz, None, &w, &bias);
    if run("autograd") {
        // What candle's autograd costs around either op: the same loss on a plain variable.
        let x = randn(&dev, &[b, L, D], 0.0, 1.0)?;
        let fwd_bwd = time_ms(&dev, iters, || x.mul(&g)?.sum_all()?.backward().map(|_| ()))?;
        println!("baseline (x*g).sum() backward alone   {fwd_bwd:9.2} ms");
    }
    if run("conv") {
        let fwd = time_ms(&dev, iters, || conv().map(|_| ()))?;
        let fwd_bwd = time_ms(&dev, iters, || conv()?.mul(&g)?.sum_all()?.backward().map(|_| ()))?;
        println!("mixer_conv  fwd {fwd:9.2} ms   fwd+bwd {fwd_bwd:9.2} ms");
    }
    Ok(())
}
