//! Selective-scan test inputs and a runner for the candle op with autograd.

use super::{flat, grad, rng, uniform, var, weighted_sum};
use candle_core::{DType, Result, Tensor};
use mamba_ops::reference::{ScanGrads, ScanInputs};

pub const FIELDS: [&str; 8] = ["u", "delta", "a_log", "b", "c", "d_skip", "z", "delta_bias"];

/// Random inputs in the ranges Mamba sees: `A_log ≈ ln(1..=n)` (S4D-real init) plus noise,
/// `delta` mostly where softplus bends, everything else O(1).
pub fn inputs(b: usize, l: usize, d: usize, n: usize, seed: u64) -> ScanInputs {
    let mut r = rng(seed);
    let noise = uniform(&mut r, d * n, -0.3, 0.3);
    let a_log = (0..d * n).map(|k| (((k % n) + 1) as f64).ln() + noise[k]).map(|v| v as f32 as f64).collect();
    ScanInputs {
        b,
        l,
        d,
        n,
        u: uniform(&mut r, b * l * d, -1.5, 1.5),
        delta: uniform(&mut r, b * l * d, -4.0, 2.0),
        a_log,
        b_mat: uniform(&mut r, b * l * n, -1.0, 1.0),
        c_mat: uniform(&mut r, b * l * n, -1.0, 1.0),
        d_skip: uniform(&mut r, d, -1.0, 1.0),
        z: uniform(&mut r, b * l * d, -3.0, 3.0),
        delta_bias: uniform(&mut r, d, -1.0, 0.5),
    }
}

/// Upstream gradient for `sum(out * g)`.
pub fn upstream(x: &ScanInputs, seed: u64) -> Vec<f64> {
    uniform(&mut rng(seed ^ 0x9e37_79b9), x.b * x.l * x.d, -1.0, 1.0)
}

pub fn field_mut(x: &mut ScanInputs, f: usize) -> &mut Vec<f64> {
    match f {
        0 => &mut x.u,
        1 => &mut x.delta,
        2 => &mut x.a_log,
        3 => &mut x.b_mat,
        4 => &mut x.c_mat,
        5 => &mut x.d_skip,
        6 => &mut x.z,
        _ => &mut x.delta_bias,
    }
}

pub fn grad_field(g: &ScanGrads, f: usize) -> &Vec<f64> {
    match f {
        0 => &g.u,
        1 => &g.delta,
        2 => &g.a_log,
        3 => &g.b_mat,
        4 => &g.c_mat,
        5 => &g.d_skip,
        6 => &g.z,
        _ => &g.delta_bias,
    }
}

/// Input shapes in `FIELDS` order.
pub fn shapes(x: &ScanInputs) -> [Vec<usize>; 8] {
    let (b, l, d, n) = (x.b, x.l, x.d, x.n);
    [vec![b, l, d], vec![b, l, d], vec![d, n], vec![b, l, n], vec![b, l, n], vec![d], vec![b, l, d], vec![d]]
}

/// Runs `mamba_ops::reference::selective_scan` in `dtype` on variables holding `x`, then
/// `sum(out * g).backward()`; returns the output and every input gradient as `f64`.
pub fn run_op(x: &ScanInputs, g: &[f64], dtype: DType) -> Result<(Vec<f64>, ScanGrads)> {
    let sh = shapes(x);
    let mut xc = x.clone();
    let vars = (0..8).map(|f| var(field_mut(&mut xc, f), &sh[f], dtype)).collect::<Result<Vec<_>>>()?;
    let t: Vec<&Tensor> = vars.iter().map(|v| v.as_tensor()).collect();
    let out = mamba_ops::reference::selective_scan(t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7])?;
    let grads = weighted_sum(&out, g)?.backward()?;
    let gv = |f: usize| grad(&grads, t[f], FIELDS[f]);
    Ok((
        flat(&out)?,
        ScanGrads {
            u: gv(0)?,
            delta: gv(1)?,
            a_log: gv(2)?,
            b_mat: gv(3)?,
            c_mat: gv(4)?,
            d_skip: gv(5)?,
            z: gv(6)?,
            delta_bias: gv(7)?,
        },
    ))
}

/// `sum(out * g)` of the op in `f64`, forward only (for finite differences).
pub fn op_loss(x: &ScanInputs, g: &[f64]) -> f64 {
    let sh = shapes(x);
    let mut xc = x.clone();
    let mut run = || -> Result<f64> {
        let t = (0..8)
            .map(|f| Tensor::from_slice(field_mut(&mut xc, f), sh[f].as_slice(), &candle_core::Device::Cpu))
            .collect::<Result<Vec<_>>>()?;
        let out = mamba_ops::reference::selective_scan(&t[0], &t[1], &t[2], &t[3], &t[4], &t[5], &t[6], &t[7])?;
        weighted_sum(&out, g)?.to_scalar::<f64>()
    };
    match run() {
        Ok(v) => v,
        Err(e) => panic!("selective_scan failed: {e}"),
    }
}
