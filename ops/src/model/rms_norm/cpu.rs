//! RMSNorm on the CPU: rows in parallel (rayon); the weight gradient as per-strip partial sums
//! added in strip order, so results do not depend on the number of threads.

use crate::util::real::Real;
use rayon::prelude::*;

/// Rows per strip of the weight-gradient partial sums.
const STRIP: usize = 64;

/// `1 / √(mean(row²) + eps)`.
fn inv_rms<T: Real>(row: &[T], eps: T) -> T {
    let ss = row.iter().fold(T::zero(), |a, &v| a + v * v);
    T::one() / (ss / T::from_f64(row.len() as f64) + eps).sqrt()
}

/// `x (rows·d)`, `w (d)` → `y = w · x · inv_rms(x)` per row.
pub(crate) fn forward<T: Real>(x: &[T], w: &[T], eps: T) -> Vec<T> {
    let d = w.len();
    let mut y = vec![T::zero(); x.len()];
    y.par_chunks_mut(d).zip(x.par_chunks(d)).for_each(|(out, row)| {
        let r = inv_rms(row, eps);
        for ((o, &v), &wj) in out.iter_mut().zip(row).zip(w) {
            *o = wj * v * r;
        }
    });
    y
}

/// `(dx, dw)` for upstream `g`; see `crate::reference::rms_norm_backward` for the formulas.
pub(crate) fn backward<T: Real>(x: &[T], w: &[T], g: &[T], eps: T) -> (Vec<T>, Vec<T>) {
    let d = w.len();
    let inv_d = T::one() / T::from_f64(d as f64);
    let mut dx = vec![T::zero(); x.len()];
    let partials: Vec<Vec<T>> = dx
        .par_chunks_mut(STRIP * d)
        .zip(x.par_chunks(STRIP * d))
        .zip(g.par_chunks(STRIP * d))
        .map(|((dx_strip, x_strip), g_strip)| {
            let mut dw = vec![T::zero(); d];
            for ((out, row), grow) in dx_strip.chunks_mut(d).zip(x_strip.chunks(d)).zip(g_strip.chunks(d)) {
                let r = inv_rms(row, eps);
                let dot = (0..d).fold(T::zero(), |a, k| a + w[k] * grow[k] * row[k]) * inv_d;
                let r3 = r * r * r;
                for j in 0..d {
                    out[j] = r * w[j] * grow[j] - row[j] * r3 * dot;
                    dw[j] += grow[j] * row[j] * r;
                }
            }
            dw
        })
        .collect();
    let mut dw = vec![T::zero(); d];
    for p in &partials {
        for (a, &b) in dw.iter_mut().zip(p) {
            *a += b;
        }
    }
    (dx, dw)
}
