//! CPU depthwise causal conv1d + bias + SiLU, forward and backward.
//!
//! `pre[i,t,c] = bias[c] + sum_{j<k} w[c,j] x[i, t-(k-1)+j, c]` (zero left padding),
//! `out = silu(pre)`. This is PyTorch's `Conv1d(d, d, k, groups=d, padding=k-1)` truncated to the
//! first `l` outputs, as in Mamba's `causal_conv1d_fn`.
//!
//! Forward and the input gradient are computed one `(i, t)` row of `d` channels at a time (rows
//! in parallel; each element has a fixed summation order). Weight and bias gradients are summed
//! over `(i, t)` in index order, one block of channels per task: deterministic for any thread
//! count.

use crate::util::real::{silu_and_grad, Real};
use rayon::prelude::*;

/// Problem sizes: batch `b`, length `l`, channels `d`, kernel width `k`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConvDims {
    pub b: usize,
    pub l: usize,
    pub d: usize,
    pub k: usize,
}

/// Channels per weight-gradient task; a constant so results do not depend on the machine.
const CHANNEL_BLOCK: usize = 64;

/// `w: (d, k)` transposed to `(k, d)` so that one tap reads contiguous channels.
fn taps_major<T: Real>(dims: &ConvDims, w: &[T]) -> Vec<T> {
    let mut out = vec![T::zero(); dims.k * dims.d];
    for c in 0..dims.d {
        for j in 0..dims.k {
            out[j * dims.d + c] = w[c * dims.k + j];
        }
    }
    out
}

/// Writes `pre[i, t, :]` into `row`, given `wt: (k, d)`. Taps are added in order `j = 0..k`.
fn pre_row<T: Real>(dims: &ConvDims, x: &[T], wt: &[T], bias: &[T], i: usize, t: usize, row: &mut [T]) {
    let (l, d, k) = (dims.l, dims.d, dims.k);
    row.copy_from_slice(bias);
    for j in 0..k {
        let Some(src) = (t + j).checked_sub(k - 1) else { continue };
        let x_row = &x[(i * l + src) * d..(i * l + src + 1) * d];
        for ((acc, &wv), &xv) in row.iter_mut().zip(&wt[j * d..(j + 1) * d]).zip(x_row) {
            *acc += wv * xv;
        }
    }
}

/// Forward: `x: (b, l, d)`, `w: (d, k)`, `bias: (d,)` → `(b, l, d)`.
pub(crate) fn forward<T: Real>(dims: &ConvDims, x: &[T], w: &[T], bias: &[T]) -> Vec<T> {
    let wt = taps_major(dims, w);
    let mut out = vec![T::zero(); dims.b * dims.l * dims.d];
    if dims.d == 0 {
        return out;
    }
    out.par_chunks_mut(dims.d).enumerate().for_each(|(r, row)| {
        pre_row(dims, x, &wt, bias, r / dims.l, r % dims.l, row);
        for v in row.iter_mut() {
            *v = silu_and_grad(*v).0;
        }
    });
    out
}

/// Gradients for `(x, w, bias)`.
pub(crate) struct ConvGrads<T> {
    pub dx: Vec<T>,    // (b, l, d)
    pub dw: Vec<T>,    // (d, k)
    pub dbias: Vec<T>, // (d,)
}

/// Backward given `g = dL/dout: (b, l, d)`.
pub(crate) fn backward<T: Real>(dims: &ConvDims, x: &[T], w: &[T], bias: &[T], g: &[T]) -> ConvGrads<T> {
    let (b, l, d, k) = (dims.b, dims.l, dims.d, dims.k);
    let mut grads = ConvGrads { dx: vec![T::zero(); b * l * d], dw: vec![T::zero(); d * k], dbias: vec![T::zero(); d] };
    if d == 0 {
        return grads;
    }
    let wt = taps_major(dims, w);

    // dpre = g * silu'(pre), recomputing pre.
    let mut dpre = vec![T::zero(); b * l * d];
    dpre.par_chunks_mut(d).enumerate().for_each(|(r, row)| {
        pre_row(dims, x, &wt, bias, r / l, r % l, row);
        for (v, &gv) in row.iter_mut().zip(&g[r * d..(r + 1) * d]) {
            *v = gv * silu_and_grad(*v).1;
        }
    });

    // dx[i, s, c] = sum_j dpre[i, s + (k-1) - j, c] w[c, j], over outputs inside the sequence.
    grads.dx.par_chunks_mut(d).enumerate().for_each(|(r, row)| {
        let (i, s) = (r / l, r % l);
        for j in 0..k {
            let t = s + (k - 1) - j;
            if t >= l {
                continue;
            }
            let g_row = &dpre[(i * l + t) * d..(i * l + t + 1) * d];
            for ((acc, &wv), &gv) in row.iter_mut().zip(&wt[j * d..(j + 1) * d]).zip(g_row) {
                *acc += wv * gv;
            }
        }
    });

    // dw[c, j] = sum_{i,t} dpre[i,t,c] x[i, t-(k-1)+j, c]; dbias[c] = sum_{i,t} dpre[i,t,c].
    let starts: Vec<usize> = (0..d).step_by(CHANNEL_BLOCK).collect();
    let parts: Vec<(Vec<T>, Vec<T>)> = starts
        .par_iter()
        .map(|&c0| {
            let c1 = (c0 + CHANNEL_BLOCK).min(d);
            let mut dw_t = vec![T::zero(); k * (c1 - c0)]; // (k, block)
            let mut db = vec![T::zero(); c1 - c0];
            for i in 0..b {
                for t in 0..l {
                    let g_row = &dpre[(i * l + t) * d + c0..(i * l + t) * d + c1];
                    for (acc, &gv) in db.iter_mut().zip(g_row) {
                        *acc += gv;
                    }
                    for j in 0..k {
                        let Some(src) = (t + j).checked_sub(k - 1) else { continue };
                        let x_row = &x[(i * l + src) * d + c0..(i * l + src) * d + c1];
                        let acc_row = &mut dw_t[j * (c1 - c0)..(j + 1) * (c1 - c0)];
                        for ((acc, &gv), &xv) in acc_row.iter_mut().zip(g_row).zip(x_row) {
                            *acc += gv * xv;
                        }
                    }
                }
            }
            (dw_t, db)
        })
        .collect();
    for (&c0, (dw_t, db)) in starts.iter().zip(parts) {
        let width = db.len();
        for (cc, v) in db.into_iter().enumerate() {
            grads.dbias[c0 + cc] = v;
            for j in 0..k {
                grads.dw[(c0 + cc) * k + j] = dw_t[j * width + cc];
            }
        }
    }
    grads
}
