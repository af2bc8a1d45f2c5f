//! CPU cross-entropy, forward and backward, one row of logits per rayon task.
//!
//! Per row `x` (length `v`) with target `t`:
//!
//! ```text
//! m = max_j x_j      lse = m + ln Σ_j exp(x_j − m)      loss = lse − x_t
//! dx_j = g · (exp(x_j − lse) − [j = t])                 (g = dL/dloss of the row)
//! ```
//!
//! The exponentials are computed in the compute type ([`Logit::Acc`]: f32 for f32 and bf16
//! logits, f64 for f64) and each row's sum of them is accumulated in f64, so this path is an
//! accurate reference for the GPU kernels. bf16 logits are widened element by element as they
//! are read and the gradient is rounded to bf16 as it is written (no f32 copy of the logits).

use crate::util::real::Real;
use candle_core::{bail, Result, WithDType};
use half::bf16;
use rayon::prelude::*;

/// An element type of logits and the float its math runs in.
pub(crate) trait Logit: WithDType {
    /// f32 for f32 and bf16 logits, f64 for f64 logits.
    type Acc: Real;
    fn widen(self) -> Self::Acc;
    /// Rounds a computed gradient to the logits' dtype (nearest even for bf16).
    fn narrow(v: Self::Acc) -> Self;
}

impl Logit for f32 {
    type Acc = f32;
    fn widen(self) -> f32 {
        self
    }
    fn narrow(v: f32) -> f32 {
        v
    }
}

impl Logit for f64 {
    type Acc = f64;
    fn widen(self) -> f64 {
        self
    }
    fn narrow(v: f64) -> f64 {
        v
    }
}

impl Logit for bf16 {
    type Acc = f32;
    fn widen(self) -> f32 {
        self.to_f32()
    }
    fn narrow(v: f32) -> bf16 {
        bf16::from_f32(v)
    }
}

/// Checks every target against the vocabulary size `v`, naming the first bad row.
pub(crate) fn check_targets(op: &str, targets: &[u32], v: usize) -> Result<()> {
    if let Some((row, &t)) = targets.iter().enumerate().find(|&(_, &t)| t as usize >= v) {
        bail!("{op}: target {t} at row {row} is outside the vocabulary of {v} classes (valid: 0..{v})")
    }
    Ok(())
}

/// Forward: `x: (n, v)`, `targets: (n,)` (all `< v`, see [`check_targets`]) → `(n, 2)` rows of
/// `[loss, lse]`.
pub(crate) fn forward<L: Logit>(x: &[L], targets: &[u32], v: usize) -> Vec<L::Acc> {
    let rows: Vec<[L::Acc; 2]> = x
        .par_chunks(v)
        .zip(targets.par_iter())
        .map(|(row, &t)| {
            let lse = log_sum_exp(row);
            let loss = lse - row[t as usize].widen().to_f64();
            [L::Acc::from_f64(loss), L::Acc::from_f64(lse)]
        })
        .collect();
    rows.into_iter().flatten().collect()
}

/// `ln Σ_j exp(x_j)` of one row, in f64, with the exponentials in the compute type.
fn log_sum_exp<L: Logit>(row: &[L]) -> f64 {
    let m = row.iter().fold(L::Acc::from_f64(f64::NEG_INFINITY), |m, &a| {
        let a = a.widen();
        if a > m {
            a
        } else {
            m
        }
    });
    let s: f64 = row.iter().map(|&a| (a.widen() - m).exp().to_f64()).sum();
    m.to_f64() + s.ln()
}

/// Backward: `x: (n, v)`, `targets: (n,)`, `aux: (n, 2)` rows of `[lse, g]` → `dx: (n, v)`.
/// A target outside `0..v` only drops the one-hot term (it is never used as an index).
pub(crate) fn backward<L: Logit>(x: &[L], targets: &[u32], aux: &[L::Acc], v: usize) -> Vec<L> {
    let mut dx = vec![L::narrow(L::Acc::from_f64(0.0)); x.len()];
    dx.par_chunks_mut(v).zip(x.par_chunks(v)).zip(targets.par_iter().zip(aux.par_chunks(2))).for_each(
        |((out, row), (&t, aux))| {
            let (lse, g) = (aux[0], aux[1]);
            for (j, (o, &a)) in out.iter_mut().zip(row).enumerate() {
                let p = (a.widen() - lse).exp();
                let onehot = if j == t as usize { L::Acc::from_f64(1.0) } else { L::Acc::from_f64(0.0) };
                *o = L::narrow(g * (p - onehot));
            }
        },
    );
    dx
}
