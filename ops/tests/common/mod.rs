//! Shared test helpers: seeded random inputs, running the candle ops through real autograd,
//! error measures and finite differences.
#![allow(dead_code)]

pub mod conv;
pub mod gpu;
pub mod scan;

use candle_core::{backprop::GradStore, Context, DType, Result, Tensor, Var};
use mamba_ops::{ChannelParams, ScanTensors};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// `len` uniform values in `[lo, hi)`, rounded to `f32` so that f32 and f64 runs see the very same
/// inputs and a comparison measures only the op's own rounding.
pub fn uniform(rng: &mut ChaCha8Rng, len: usize, lo: f64, hi: f64) -> Vec<f64> {
    (0..len).map(|_| rng.gen_range(lo..hi) as f32 as f64).collect()
}

/// Norm-wise relative error `max|got - want| / max|want|` (so near-zero elements do not dominate).
pub fn rel_err(got: &[f64], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len(), "length mismatch");
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-300);
    let diff = got.iter().zip(want).fold(0.0f64, |m, (g, w)| m.max((g - w).abs()));
    diff / scale
}

/// Asserts `rel_err(got, want) < bound`, naming what is compared.
pub fn assert_close(what: &str, got: &[f64], want: &[f64], bound: f64) {
    let e = rel_err(got, want);
    eprintln!("{what}: relative error {e:.2e} (bound {bound:.0e})");
    assert!(e < bound, "{what}: relative error {e:.3e} >= {bound:.1e}");
    assert!(got.iter().all(|v| v.is_finite()), "{what}: non-finite values");
}

/// A variable of `dtype` holding `data` with `shape`.
pub fn var(data: &[f64], shape: &[usize], dtype: DType) -> Result<Var> {
    Var::from_tensor(&Tensor::from_slice(data, shape, &candle_core::Device::Cpu)?.to_dtype(dtype)?)
}

/// All elements of `t` as `f64`, row-major.
pub fn flat(t: &Tensor) -> Result<Vec<f64>> {
    t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()
}

/// The gradient of `t` in `grads`, flattened.
pub fn grad(grads: &GradStore, t: &Tensor, name: &str) -> Result<Vec<f64>> {
    flat(grads.get(t).with_context(|| format!("no gradient for `{name}`"))?)
}

/// `sum(out * g)`: a scalar loss whose gradient with respect to `out` is `g`.
pub fn weighted_sum(out: &Tensor, g: &[f64]) -> Result<Tensor> {
    let gt = Tensor::from_slice(g, out.dims(), out.device())?.to_dtype(out.dtype())?;
    out.mul(&gt)?.sum_all()
}

/// Central finite differences of `loss` with respect to every element of every field, where
/// `field(p, f)` gives mutable access to field `f` of the parameters `p`.
pub fn finite_diff<P: Clone>(
    p: &P,
    n_fields: usize,
    field: impl Fn(&mut P, usize) -> &mut Vec<f64>,
    loss: impl Fn(&P) -> f64,
) -> Vec<Vec<f64>> {
    let h = 1e-5;
    let mut work = p.clone();
    (0..n_fields)
        .map(|f| {
            let len = field(&mut work, f).len();
            (0..len)
                .map(|e| {
                    let orig = field(&mut work, f)[e];
                    field(&mut work, f)[e] = orig + h;
                    let up = loss(&work);
                    field(&mut work, f)[e] = orig - h;
                    let down = loss(&work);
                    field(&mut work, f)[e] = orig;
                    (up - down) / (2.0 * h)
                })
                .collect()
        })
        .collect()
}

/// The `f64` values bit-for-bit, for determinism checks.
pub fn bits(v: &[f64]) -> Vec<u64> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// The mixer ops' inputs given in the order `xz, delta, b, c, conv_w, conv_b, a_log, d_skip,
/// delta_bias` (as the tests keep them) as the scan's [`ScanTensors`]; `seq_len` as there.
pub fn scan_tensors(t: &[Tensor], seq_len: Option<usize>) -> ScanTensors {
    let params = ChannelParams {
        conv_w: t[4].clone(),
        conv_b: t[5].clone(),
        a_log: t[6].clone(),
        d_skip: t[7].clone(),
        delta_bias: t[8].clone(),
    };
    ScanTensors { xz: t[0].clone(), seq_len, delta: t[1].clone(), b: t[2].clone(), c: t[3].clone(), params }
}
