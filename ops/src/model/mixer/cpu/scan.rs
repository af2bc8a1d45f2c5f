//! CPU selective scan, forward and backward, over a packed layout (all contiguous, compute dtype):
//! - `x:  (b, l, 3d)` = `cat([u, delta, z], dim 2)`, so `x[i, t, k*d + c]` is `u`, `delta`, `z`
//!   for `k = 0, 1, 2`;
//! - `bc: (b, l, 2n)` = `cat([B, C], dim 2)`;
//! - `p:  (d, n + 2)` = `cat([A_log, D[:, None], delta_bias[:, None]], dim 1)`.
//!
//! Math per batch `i`, channel `c`, state `s` (Mamba paper, Algorithm 2; `selective_scan_ref` in
//! state-spaces/mamba `mamba_ssm/ops/selective_scan_interface.py`, here channel-last):
//!
//! ```text
//! A[s]  = -exp(A_log[c, s])            dt_t = softplus(delta[i,t,c] + delta_bias[c])
//! h_t[s] = exp(dt_t A[s]) h_{t-1}[s] + dt_t B[i,t,s] u[i,t,c]          h_{-1} = 0
//! y_t   = sum_s C[i,t,s] h_t[s] + D[c] u[i,t,c]          out = y_t * silu(z[i,t,c])
//! ```
//!
//! Work is split into tasks of (batch, block of `CHANNEL_BLOCK` channels) run with rayon. Every
//! task writes only its own buffers; the buffers are combined afterwards in task order, so the
//! result is bit-identical whatever the number of threads or their scheduling.
//!
//! The backward never keeps states across calls: per channel it recomputes `h_t` and
//! `exp(dt_t A)` for the whole sequence into a local `(l, n)` buffer pair and runs the adjoint
//! recurrence backwards in time.

use crate::util::real::{sigmoid, silu_and_grad, softplus, Real};
use rayon::prelude::*;
use std::ops::Range;

/// Problem sizes: batch `b`, sequence length `l`, channels `d`, state size `n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ScanDims {
    pub b: usize,
    pub l: usize,
    pub d: usize,
    pub n: usize,
}

/// Channels per task. A constant (not derived from the thread count) so that the order of the
/// floating-point reductions, and hence the result, never depends on the machine.
const CHANNEL_BLOCK: usize = 32;

/// One unit of parallel work: batch element `i`, channels `channels`.
struct Task {
    i: usize,
    channels: Range<usize>,
}

fn tasks(dims: &ScanDims) -> Vec<Task> {
    let mut out = Vec::new();
    for i in 0..dims.b {
        for start in (0..dims.d).step_by(CHANNEL_BLOCK) {
            out.push(Task { i, channels: start..(start + CHANNEL_BLOCK).min(dims.d) });
        }
    }
    out
}

/// Per-channel parameters unpacked from `p: (d, n + 2)`.
struct Channel<T> {
    a: Vec<T>, // (n,) A = -exp(A_log)
    d_skip: T,
    delta_bias: T,
}

fn channel<T: Real>(dims: &ScanDims, p: &[T], c: usize) -> Channel<T> {
    let n = dims.n;
    let row = &p[c * (n + 2)..(c + 1) * (n + 2)];
    Channel { a: row[..n].iter().map(|&v| -v.exp()).collect(), d_skip: row[n], delta_bias: row[n + 1] }
}

/// Views of one time step `(i, t)` of the packed activations.
struct Step<'a, T> {
    x: &'a [T], // (3d,) u | delta | z
    b: &'a [T], // (n,)
    c: &'a [T], // (n,)
}

fn step<'a, T>(dims: &ScanDims, x: &'a [T], bc: &'a [T], i: usize, t: usize) -> Step<'a, T> {
    let (d, n) = (dims.d, dims.n);
    let row = i * dims.l + t;
    let bc_row = &bc[row * 2 * n..(row + 1) * 2 * n];
    Step { x: &x[row * 3 * d..(row + 1) * 3 * d], b: &bc_row[..n], c: &bc_row[n..] }
}

/// Forward: `x: (b, l, 3d)`, `bc: (b, l, 2n)`, `p: (d, n + 2)` → `out: (b, l, d)`.
pub(crate) fn forward<T: Real>(dims: &ScanDims, x: &[T], bc: &[T], p: &[T]) -> Vec<T> {
    let tasks = tasks(dims);
    let parts: Vec<Vec<T>> = tasks.par_iter().map(|task| forward_task(dims, task, x, bc, p)).collect();
    let (l, d) = (dims.l, dims.d);
    let mut out = vec![T::zero(); dims.b * l * d];
    for (task, part) in tasks.iter().zip(parts) {
        let w = task.channels.len();
        for t in 0..l {
            let row = (task.i * l + t) * d;
            out[row + task.channels.start..row + task.channels.end].copy_from_slice(&part[t * w..(t + 1) * w]);
        }
    }
    out
}

/// One task's outputs, `(l, w)` for its `w` channels. Channels advance together through time so
/// each step reads contiguous slices of `x`.
fn forward_task<T: Real>(dims: &ScanDims, task: &Task, x: &[T], bc: &[T], p: &[T]) -> Vec<T> {
    let (l, d, n) = (dims.l, dims.d, dims.n);
    let w = task.channels.len();
    let params: Vec<Channel<T>> = task.channels.clone().map(|c| channel(dims, p, c)).collect();
    let mut h = vec![T::zero(); w * n]; // (w, n)
    let mut out = vec![T::zero(); l * w]; // (l, w)
    for t in 0..l {
        let st = step(dims, x, bc, task.i, t);
        for (j, (c, ch)) in task.channels.clone().zip(&params).enumerate() {
            let u = st.x[c];
            let dt = softplus(st.x[d + c] + ch.delta_bias);
            let dt_u = dt * u;
            let hj = &mut h[j * n..(j + 1) * n];
            let mut y = T::zero();
            for (((h, &a_s), &b_s), &c_s) in hj.iter_mut().zip(&ch.a).zip(st.b).zip(st.c) {
                *h = (dt * a_s).exp() * *h + dt_u * b_s;
                y += c_s * *h;
            }
            y += ch.d_skip * u;
            out[t * w + j] = y * silu_and_grad(st.x[2 * d + c]).0;
        }
    }
    out
}

/// Gradients for the three packed inputs, shaped like them.
pub(crate) struct ScanGrads<T> {
    pub dx: Vec<T>,  // (b, l, 3d)
    pub dbc: Vec<T>, // (b, l, 2n)
    pub dp: Vec<T>,  // (d, n + 2)
}

/// One task's share of the gradients.
struct TaskGrads<T> {
    dx: Vec<T>,  // (l, 3, w): du, ddelta, dz
    dbc: Vec<T>, // (l, 2n): partial sum over this task's channels
    dp: Vec<T>,  // (w, n + 2): partial sum over time for this batch element
}

/// Backward: given `g = dL/dout: (b, l, d)`, returns dL/d(x, bc, p).
pub(crate) fn backward<T: Real>(dims: &ScanDims, x: &[T], bc: &[T], p: &[T], g: &[T]) -> ScanGrads<T> {
    let tasks = tasks(dims);
    let parts: Vec<TaskGrads<T>> = tasks.par_iter().map(|task| backward_task(dims, task, x, bc, p, g)).collect();

    // Combine in task order (batch-major): fixed summation order, hence deterministic.
    let (l, d, n) = (dims.l, dims.d, dims.n);
    let mut dx = vec![T::zero(); dims.b * l * 3 * d];
    let mut dbc = vec![T::zero(); dims.b * l * 2 * n];
    let mut dp = vec![T::zero(); d * (n + 2)];
    for (task, part) in tasks.iter().zip(parts) {
        let w = task.channels.len();
        for t in 0..l {
            let row = task.i * l + t;
            for k in 0..3 {
                let dst = row * 3 * d + k * d;
                dx[dst + task.channels.start..dst + task.channels.end]
                    .copy_from_slice(&part.dx[(t * 3 + k) * w..(t * 3 + k + 1) * w]);
            }
        }
        let dbc_i = &mut dbc[task.i * l * 2 * n..(task.i + 1) * l * 2 * n];
        for (acc, v) in dbc_i.iter_mut().zip(&part.dbc) {
            *acc += *v;
        }
        let dp_block = &mut dp[task.channels.start * (n + 2)..task.channels.end * (n + 2)];
        for (acc, v) in dp_block.iter_mut().zip(&part.dp) {
            *acc += *v;
        }
    }
    ScanGrads { dx, dbc, dp }
}

/// Reverse-mode pass for one task, one channel at a time. With `ah_t = dL/dh_t` (adjoint):
///
/// ```text
/// ah_t    = gy_t C_t + ah_{t+1} exp(dt_{t+1} A)        gy_t = g_t silu(z_t)
/// dC_t   += gy_t h_t          dB_t += ah_t dt_t u_t     du_t = gy_t D + sum_s ah_t dt_t B_t
/// ddt_t   = sum_s ah_t (A exp(dt_t A) h_{t-1} + B_t u_t)
/// dA     += ah_t dt_t exp(dt_t A) h_{t-1}               dA_log = dA * A
/// ddelta_t = ddt_t sigmoid(delta_t + delta_bias) = d(delta_bias) contribution
/// dz_t    = g_t y_t silu'(z_t)                           dD += gy_t u_t
/// ```
fn backward_task<T: Real>(dims: &ScanDims, task: &Task, x: &[T], bc: &[T], p: &[T], g: &[T]) -> TaskGrads<T> {
    let (l, d, n) = (dims.l, dims.d, dims.n);
    let w = task.channels.len();
    let mut out =
        TaskGrads { dx: vec![T::zero(); l * 3 * w], dbc: vec![T::zero(); l * 2 * n], dp: vec![T::zero(); w * (n + 2)] };
    let mut hs = vec![T::zero(); l * n]; // (l, n) h_t
    let mut decay = vec![T::zero(); l * n]; // (l, n) exp(dt_t A)
    let mut carry = vec![T::zero(); n]; // ah_{t+1} exp(dt_{t+1} A)
    let mut d_a = vec![T::zero(); n];
    for (j, c) in task.channels.clone().enumerate() {
        let ch = channel(dims, p, c);

        // Recompute this channel's states for the whole sequence.
        for t in 0..l {
            let st = step(dims, x, bc, task.i, t);
            let dt = softplus(st.x[d + c] + ch.delta_bias);
            let dt_u = dt * st.x[c];
            for s in 0..n {
                let h_prev = if t == 0 { T::zero() } else { hs[(t - 1) * n + s] };
                let e = (dt * ch.a[s]).exp();
                decay[t * n + s] = e;
                hs[t * n + s] = e * h_prev + dt_u * st.b[s];
            }
        }

        // Adjoint recurrence, backwards in time.
        carry.fill(T::zero());
        d_a.fill(T::zero());
        let (mut d_skip, mut d_bias) = (T::zero(), T::zero());
        for t in (0..l).rev() {
            let st = step(dims, x, bc, task.i, t);
            let (u, pre_dt, z) = (st.x[c], st.x[d + c] + ch.delta_bias, st.x[2 * d + c]);
            let dt = softplus(pre_dt);
            let gt = g[(task.i * l + t) * d + c];
            let (silu_z, dsilu_z) = silu_and_grad(z);
            let gy = gt * silu_z;
            let mut y = ch.d_skip * u;
            let mut du = gy * ch.d_skip;
            let mut ddt = T::zero();
            let dbc_t = &mut out.dbc[t * 2 * n..(t + 1) * 2 * n];
            for s in 0..n {
                let h = hs[t * n + s];
                let h_prev = if t == 0 { T::zero() } else { hs[(t - 1) * n + s] };
                let e = decay[t * n + s];
                y += st.c[s] * h;
                let ah = gy * st.c[s] + carry[s];
                ddt += ah * (ch.a[s] * e * h_prev + st.b[s] * u);
                d_a[s] += ah * dt * e * h_prev;
                du += ah * dt * st.b[s];
                dbc_t[s] += ah * dt * u; // dB
                dbc_t[n + s] += gy * h; // dC
                carry[s] = ah * e;
            }
            d_skip += gy * u;
            let ddelta = ddt * sigmoid(pre_dt);
            d_bias += ddelta;
            out.dx[t * 3 * w + j] = du;
            out.dx[(t * 3 + 1) * w + j] = ddelta;
            out.dx[(t * 3 + 2) * w + j] = gt * y * dsilu_z;
        }
        let dp_c = &mut out.dp[j * (n + 2)..(j + 1) * (n + 2)];
        for s in 0..n {
            dp_c[s] = d_a[s] * ch.a[s];
        }
        dp_c[n] = d_skip;
        dp_c[n + 1] = d_bias;
    }
    out
}
