//! Causal-conv1d test inputs and a runner for the candle op with autograd.

use super::{flat, grad, rng, uniform, var, weighted_sum};
use candle_core::{DType, Result, Tensor};
use mamba_ops::reference::{ConvGrads, ConvInputs};

pub const FIELDS: [&str; 3] = ["x", "weight", "bias"];

pub fn inputs(b: usize, l: usize, d: usize, k: usize, seed: u64) -> ConvInputs {
    let mut r = rng(seed);
    ConvInputs {
        b,
        l,
        d,
        k,
        x: uniform(&mut r, b * l * d, -2.0, 2.0),
        weight: uniform(&mut r, d * k, -0.8, 0.8),
        bias: uniform(&mut r, d, -0.5, 0.5),
    }
}

pub fn upstream(x: &ConvInputs, seed: u64) -> Vec<f64> {
    uniform(&mut rng(seed ^ 0x5bd1_e995), x.b * x.l * x.d, -1.0, 1.0)
}

pub fn field_mut(x: &mut ConvInputs, f: usize) -> &mut Vec<f64> {
    match f {
        0 => &mut x.x,
        1 => &mut x.weight,
        _ => &mut x.bias,
    }
}

pub fn grad_field(g: &ConvGrads, f: usize) -> &Vec<f64> {
    match f {
        0 => &g.x,
        1 => &g.weight,
        _ => &g.bias,
    }
}

/// Runs `mamba_ops::reference::causal_conv1d_silu` in `dtype` on variables holding `x`, then
/// `sum(out * g).backward()`; returns the output and every input gradient as `f64`.
pub fn run_op(x: &ConvInputs, g: &[f64], dtype: DType) -> Result<(Vec<f64>, ConvGrads)> {
    let xv = var(&x.x, &[x.b, x.l, x.d], dtype)?;
    let wv = var(&x.weight, &[x.d, x.k], dtype)?;
    let bv = var(&x.bias, &[x.d], dtype)?;
    let out = mamba_ops::reference::causal_conv1d_silu(xv.as_tensor(), wv.as_tensor(), bv.as_tensor())?;
    let grads = weighted_sum(&out, g)?.backward()?;
    Ok((
        flat(&out)?,
        ConvGrads {
            x: grad(&grads, xv.as_tensor(), "x")?,
            weight: grad(&grads, wv.as_tensor(), "weight")?,
            bias: grad(&grads, bv.as_tensor(), "bias")?,
        },
    ))
}

/// `sum(out * g)` of the op in `f64`, forward only (for finite differences).
pub fn op_loss(x: &ConvInputs, g: &[f64]) -> f64 {
    let run = || -> Result<f64> {
        let dev = candle_core::Device::Cpu;
        let out = mamba_ops::reference::causal_conv1d_silu(
            &Tensor::from_slice(&x.x, (x.b, x.l, x.d), &dev)?,
            &Tensor::from_slice(&x.weight, (x.d, x.k), &dev)?,
            &Tensor::from_slice(&x.bias, x.d, &dev)?,
        )?;
        weighted_sum(&out, g)?.to_scalar::<f64>()
    };
    match run() {
        Ok(v) => v,
        Err(e) => panic!("causal_conv1d_silu failed: {e}"),
    }
}
