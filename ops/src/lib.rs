//! Custom candle ops for Mamba, each with a CPU path, a backward, and a plain reference to test
//! against. Layout is channel-last everywhere: `(batch, seq_len, channels)`, as candle's linear
//! layers produce it.
//!
//! - [`mixer_conv`]: depthwise causal conv1d (kernel 4) + bias + SiLU over the x half of in_proj's
//!   output `xz = [x | z]`, read in place and in its own dtype (bf16 in and out under mixed
//!   precision).
//! - [`mixer_scan`]: `y = scan(u, softplus(delta + delta_bias), A = -exp(A_log), B, C) + D·u`,
//!   gated by `silu(z)` (Mamba paper, Algorithm 2; `selective_scan_fn` in state-spaces/mamba),
//!   reading its inputs ([`ScanTensors`]) where the matmuls left them; it recomputes the conv
//!   inside. [`mixer_scan_saving`] is its forward for the hand-written backward
//!   ([`backward::mixer_scan`], [`backward::mixer_conv`]).
//! - [`embedding`]: the token embedding (index_select) with a deterministic, parallel backward.
//! - [`rms_norm`], [`rms_norm_to`]: RMSNorm, optionally writing bf16 from f32 statistics;
//!   [`residual_add`]: the residual stream's update with the block output's conversion.
//! - [`cross_entropy`]: fused softmax cross-entropy over the vocabulary (the LM head's loss);
//!   its dtype rules are its own (see there).
//!
//! All are candle custom ops: the forward runs as one op (no per-timestep autograd graph) and
//! `loss.backward()` reaches every input through the op's own backward. Shared behaviour:
//! - dtypes: computed in `f64` when every input is `f64`, otherwise in `f32`; `f16`/`bf16`
//!   inputs are converted to `f32` inside and the result converted back to the dtype of the
//!   first argument (`u` / `x`). Integer inputs are an error. The mixer ops instead read and
//!   write bf16 directly (still computing in f32); their docs give their rules.
//! - layouts: any strides are accepted (inputs are made contiguous before the op).
//! - devices: CPU (rayon over batch × channel blocks) and, with the `cuda` feature, CUDA
//!   (`kernels/*.cu`, compiled to PTX by `build.rs`; f32 compute; `mixer_scan` runs four (or
//!   two) states of one channel per thread). The CPU path is the reference the CUDA kernels are compared
//!   with (`tests/cuda_vs_cpu.rs`).
//! - determinism: outputs and gradients are bit-identical from run to run, and on the CPU for
//!   any number of threads: partial sums are combined in a fixed order, no atomics (the CUDA
//!   kernels write per-block partials that are summed afterwards in a fixed order, by candle or
//!   by `kernels/partials.cu`).
//!
//! [`backward`] has each op's backward as a function, for a model that runs its own backward pass.
//!
//! [`reference`] holds the oracles for tests: plain `f64` loops defining the ops, forward and
//! backward, and the plain (unfused, CPU-only) `selective_scan` and `causal_conv1d_silu` ops the
//! fused mixer ops are compared with.

pub mod backward;
mod model;
mod optim;
pub mod reference;
mod util;

use candle_core::{DType, Result, Tensor};
use model::{cross_entropy, embedding, mixer, residual, rms_norm};

pub use embedding::TokenIndex;
#[cfg(feature = "cuda")]
pub use mixer::scan_layout::set_scan_states_per_thread;
pub use mixer::tensors::{ChannelParams, ScanTensors};
pub use optim::{
    adamw_step, adamw_step_in_place, add_in_place, axpby, cast_many, muon_apply, muon_apply_in_place, muon_apply_many,
    muon_gram_normalize, muon_gram_scales, muon_momentum, muon_ns_poly, scale_in_place, sum_squares, AdamWParam,
    AdamWStep,
};
pub use util::pack::concat_columns;

/// The token embedding: rows of `weight: (V, d)` at `ids: (n,)` (u32) → `(n, d)` in the weight's
/// dtype; the same as `weight.index_select(ids, 0)`, as one op whose backward
/// `dW[v] = Σ_{p : ids[p] = v} g[p]` sums each row in position order: deterministic, through a
/// [`TokenIndex`] and [`backward::embedding_rows`] (one block per vocabulary row on CUDA). An id
/// `>= V` is an error on the CPU; on CUDA the forward reads, like `index_select`, undefined
/// values for it and the backward (which reads the ids back to the host) reports it.
pub fn embedding(weight: &Tensor, ids: &Tensor) -> Result<Tensor> {
    embedding::embedding(weight, ids)
}

/// The residual stream's update `residual + x`: `residual` f32 (or f64), `x` of its shape in the
/// compute dtype (f32 or bf16; f64 with an f64 stream), the result f32 (f64), as one op (one pass
/// instead of a cast and an add). Gradients: the output's to `residual`, converted to x's dtype
/// for `x`.
pub fn residual_add(residual: &Tensor, x: &Tensor) -> Result<Tensor> {
    residual::residual_add(residual, x)
}

/// RMSNorm over the last dim: `x: (.., d)`, `weight: (d,)` → `w · x / √(mean(x²) + eps)`, as one
/// op (mamba_ssm `RMSNorm`, HF `MambaRMSNorm`). Dtype rules as for the other ops (statistics in
/// f32, or f64 when both inputs are f64; the result in the dtype of `x`). The backward saves
/// nothing but the inputs and recomputes `1/rms`.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    rms_norm::rms_norm(x, weight, eps, None)
}

/// [`rms_norm`] with its result in `out`: the statistics' dtype, or bf16 from f32 `x` (the
/// model's f32 residual stream normalized straight into its bf16 matmul input, with no cast node
/// and no f32 copy of the output; the gradient then arrives, and is read, in bf16).
pub fn rms_norm_to(x: &Tensor, weight: &Tensor, eps: f64, out: DType) -> Result<Tensor> {
    rms_norm::rms_norm(x, weight, eps, Some(out))
}

/// Depthwise causal conv1d + bias + SiLU over the `x` half of in_proj's output `xz = [x | z]`:
/// `xz: (b, l, 2d)` with `seq_len` None, or rows `(b·l, 2d)` of `b` sequences of `seq_len` steps
/// (see [`ScanTensors`]); `weight: (d, k)`, `bias: (d,)` → `(b, l, d)` or `(b·l, d)` in xz's dtype.
///
/// `out[i,t,c] = silu(bias[c] + sum_{j<k} weight[c,j] x[i, t-(k-1)+j, c])`, zero-padded on the
/// left: PyTorch's `Conv1d(d, d, k, groups=d, padding=k-1)` truncated to the first `l` outputs.
/// Equal to `reference::causal_conv1d_silu(xz.narrow(2, 0, d), weight, bias)` without the narrow
/// copy and, for bf16 `xz`, without casts: it reads bf16 and writes bf16 (f32 arithmetic). xz's
/// gradient is zero in its `z` half. `xz` is bf16, f32 or f64; see the `mixer` module for the
/// dtype rules.
pub fn mixer_conv(xz: &Tensor, seq_len: Option<usize>, weight: &Tensor, bias: &Tensor) -> Result<Tensor> {
    mixer::conv::mixer_conv(xz, seq_len, weight, bias)
}

/// The mixer's selective scan with D skip and silu(z) gate, reading its inputs where in_proj,
/// x_proj and dt_proj left them ([`ScanTensors`]). Returns `(b, l, d)` (or `(b·l, d)` rows) in
/// xz's dtype.
///
/// Equal to `reference::selective_scan(u, delta, a_log, b, c, d_skip, z, delta_bias)` with
/// `u = mixer_conv(xz, ..)` and `z` the second half of `xz`, but as one op that recomputes `u`
/// inside (forward and backward), so neither `u` nor a packed copy of the big inputs is stored
/// for the backward. Gradients reach all nine input tensors (`xz` through both the conv and the
/// gate).
pub fn mixer_scan(t: &ScanTensors) -> Result<Tensor> {
    mixer::scan::mixer_scan(t)
}

/// [`mixer_scan`] reading its input `u` from `u`, the conv's output ([`mixer_conv`] of the same
/// xz and conv weights, in xz's dtype, in the activations' form), instead of recomputing the conv:
/// for a model that runs its own backward ([`backward::mixer_scan`], which takes the returned
/// [`backward::ScanSaved`]: on the GPU the states at every 16-step segment start). No autograd.
/// Under bf16 the scan then reads u as rounded to bf16, as PyTorch's reference does.
pub fn mixer_scan_saving(t: &ScanTensors, u: &Tensor) -> Result<(Tensor, backward::ScanSaved)> {
    mixer::scan::mixer_scan_saving(t, u)
}

/// Mean softmax cross-entropy of `logits: (n, v)` against `targets: (n,)` u32 → scalar, as one
/// fused op (forward: one read of the logits; backward: one read and one write).
///
/// `loss = mean_i (lse_i − logits[i, targets[i]])`, `lse_i = ln Σ_j exp(logits[i, j])`; the
/// gradient of the logits is `dL/dloss / n · (softmax(logits_i) − onehot(targets_i))`.
///
/// - dtypes: logits f32, bf16 or f64 (f64 on the CPU only). The math runs in f32 (f64 for f64
///   logits) whatever the logits' dtype; the loss is f32 (f64 for f64 logits) and the gradient
///   has the logits' dtype (bf16 logits → bf16 gradient, like PyTorch autocast).
/// - devices: CPU (rayon over rows) and, with the `cuda` feature, CUDA
///   (`kernels/cross_entropy.cu`, one block per row). Deterministic on both.
/// - errors: a shape mismatch, an empty input or another dtype is an error. A target `>= v` is an
///   error naming the row on the CPU. On CUDA the targets are not read back to the host (that
///   would stall the GPU queue every step): the kernel never uses such a target as an index and
///   returns NaN for its row instead, so the loss is NaN.
pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    cross_entropy::cross_entropy(logits, targets)
}

/// [`cross_entropy`]'s forward per row, for a model that runs its own backward: `(n, 2)` rows of
/// `[loss_i, lse_i]` in the compute dtype, no autograd; the loss is the mean of column 0, and
/// [`backward::cross_entropy`] takes the rows.
pub fn cross_entropy_rows(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    cross_entropy::cross_entropy_rows(logits, targets)
}
