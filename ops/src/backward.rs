//! The ops' backward passes as functions, for a model that runs its own backward pass instead of
//! candle's autograd (the trainer's `model/backward.rs`: candle adds every gradient into a fresh
//! zero tensor, and its graph of small nodes costs a kernel launch each). Each function computes
//! what the op's autograd backward computes, with the same kernels, from the op's inputs and the
//! gradient of its output; `tests/backward.rs` checks each against candle's autograd.
//!
//! The mixer's two ops are the exception: their backward is split at the conv so that it runs
//! once for both uses of the conv's output ([`mixer_scan`] then [`mixer_conv`]).

use candle_core::{DType, Result, Tensor};

pub use crate::model::mixer::backward::{ConvShare, ScanGrads, ScanSaved};

use crate::{ScanTensors, TokenIndex};

/// [`crate::rms_norm`] (`out` None) or [`crate::rms_norm_to`] (`out` Some): `(dx, dweight)` in
/// the dtypes of `x` and `weight`, for the gradient `grad` of the output. `add` (x's shape and
/// dtype), when given, is added to dx in the same kernel: a pre-norm residual block's backward
/// adds the norm's input gradient to the stream's.
pub fn rms_norm(
    x: &Tensor,
    weight: &Tensor,
    eps: f64,
    out: Option<DType>,
    grad: &Tensor,
    add: Option<&Tensor>,
) -> Result<(Tensor, Tensor)> {
    crate::model::rms_norm::rms_norm_backward(x, weight, eps, out, grad, add)
}

/// [`rms_norm`] that also returns dx in `out`'s dtype (x's when None): the next block's bf16
/// matmuls read the residual stream's gradient in the compute dtype. On the GPU with a bf16
/// `out` the same kernel writes both (no separate cast pass).
pub fn rms_norm_and_copy(
    x: &Tensor,
    weight: &Tensor,
    eps: f64,
    out: Option<DType>,
    grad: &Tensor,
    add: Option<&Tensor>,
) -> Result<(Tensor, Tensor, Tensor)> {
    crate::model::rms_norm::rms_norm_backward_and_copy(x, weight, eps, out, grad, add)
}

/// [`crate::embedding`]: the weight's gradient for the output's gradient `grad: (n, d)` (builds
/// a [`TokenIndex`], reading the ids back to the host, and runs [`embedding_rows`]).
pub fn embedding(weight: &Tensor, ids: &Tensor, grad: &Tensor) -> Result<Tensor> {
    crate::model::embedding::embedding_backward(weight, ids, grad)
}

/// The gradient of an embedding `(V, d)` whose lookup at the ids of `index` got the gradient
/// `grad: (n, d)` and which, tied as the LM head, got `head_grad: (V, d)` there:
/// `dW[v] = head_grad[v] (or 0) + Σ_{p : ids[p] = v} grad[p]`, in `dtype` (the weight's), as one
/// pass (one kernel on CUDA: no zeroing, no atomics, no separate cast and add of the head's part).
///
/// Each row starts from `head_grad[v]` and adds the `grad` rows in increasing position order, in
/// f32 (f64 when `dtype` is f64), rounded to `dtype` once: deterministic, and bit-identical
/// between CPU and GPU for an f32 result. `grad` and `head_grad` may be any float dtype (the GPU
/// kernel reads f32 and bf16 directly) and must be on the index's device.
pub fn embedding_rows(index: &TokenIndex, grad: &Tensor, head_grad: Option<&Tensor>, dtype: DType) -> Result<Tensor> {
    crate::model::embedding::embedding_rows(index, grad, head_grad, dtype)
}

/// The gradient of the logits for the loss `scale · mean_i loss_i`, from the rows of
/// [`crate::cross_entropy_rows`] (their lse): `scale/n · (softmax − onehot)` in the logits'
/// dtype, one pass.
pub fn cross_entropy(logits: &Tensor, targets: &Tensor, rows: &Tensor, scale: f64) -> Result<Tensor> {
    crate::model::cross_entropy::cross_entropy_backward(logits, targets, rows, scale)
}

/// [`crate::mixer_scan_saving`]'s gradients for the output's gradient `grad` (the output's
/// shape), except the conv's (xz and the conv weights): those come from [`mixer_conv`] given
/// `conv` of the result, which adds the scan's share (dL/du) to the conv's own. `u` is the conv's
/// output the forward read, `saved` what the forward returned with its output.
pub fn mixer_scan(t: &ScanTensors, u: &Tensor, grad: &Tensor, saved: &ScanSaved) -> Result<ScanGrads> {
    crate::model::mixer::backward::scan(t, u, grad, saved)
}

/// `(dxz, dweight, dbias)` of the mixer's conv for both uses of its output: [`crate::mixer_conv`]
/// (whose output's gradient is `grad`) and the scan that read the same `xz` (`scan`, from
/// [`mixer_scan`]). `dxz` is whole: the conv's x half and the scan's z half.
pub fn mixer_conv(
    xz: &Tensor,
    seq_len: Option<usize>,
    weight: &Tensor,
    bias: &Tensor,
    grad: &Tensor,
    scan: ConvShare,
) -> Result<[Tensor; 3]> {
    crate::model::mixer::backward::conv(xz, seq_len, weight, bias, grad, scan)
}
