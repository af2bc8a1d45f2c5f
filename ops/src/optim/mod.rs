//! The optimizer's kernels: AdamW's and Muon's updates, Newton–Schulz's small passes, and the
//! multi-tensor passes over all gradients (the clipping norm, its scale, the micro-batches'
//! accumulation, the gradients' cast). None has a backward. Each has a CPU path, which the CUDA
//! kernels are compared with (tests/cuda_muon.rs, cuda_multi_tensor.rs, cuda_vs_cpu.rs).

mod adamw;
pub(crate) mod multi_tensor;
mod muon;
mod sum_squares;

use candle_core::{Result, Tensor};

pub use adamw::{AdamWParam, AdamWStep};
pub use multi_tensor::{add_in_place, cast_many, scale_in_place};

/// Muon's weight update for a stack: `w·decay − scale·o` in f32, with `w: (k, r, c)` f32 and the
/// orthogonalized update `o` (same shape, f32 or bf16). One pass in place of a cast, two affines
/// and a subtraction. No backward.
pub fn muon_apply(w: &Tensor, o: &Tensor, decay: f64, scale: f64) -> Result<Tensor> {
    muon::muon_apply(w, o, decay, scale)
}

/// One AdamW update of a stack of same-shaped f32 parameters `w` with gradients `g` and moments
/// `mv = [m | v]: (2, ..shape)`, in one pass: returns `[w' | m' | v']: (3, ..shape)` (f32), as
/// `torch.optim.AdamW` computes it (see [`AdamWStep`]). No backward.
pub fn adamw_step(w: &Tensor, g: &Tensor, mv: &Tensor, step: AdamWStep) -> Result<Tensor> {
    adamw::adamw_step(w, g, mv, step)
}

/// [`adamw_step`] on every parameter at once, each in its own storage: `w`, `m` and `v` of each
/// [`AdamWParam`] are overwritten with `w'`, `m'` and `v'` (`step.decay` for the parameters that
/// decay, 1 for the others). All tensors contiguous f32 on one device, none sharing memory. On
/// the GPU one launch for all parameters. No backward.
pub fn adamw_step_in_place(params: &[AdamWParam], step: AdamWStep) -> Result<()> {
    adamw::adamw_step_in_place(params, step)
}

/// Σx² of each tensor (all f32, on one device), in f64: the gradients' global norm. One kernel
/// for all of them on the GPU, partial sums added on the host in a fixed order (deterministic).
pub fn sum_squares(tensors: &[Tensor]) -> Result<Vec<f64>> {
    sum_squares::sum_squares(tensors)
}

/// `a·x + b·y` for `x`, `y` of one shape and dtype (f32 or bf16; f64 on the CPU), in one pass
/// with f32 arithmetic (f64 for f64) (candle's bf16 `affine` rounds its scalars to bf16): Muon's
/// momentum. No backward.
pub fn axpby(x: &Tensor, y: &Tensor, a: f64, b: f64) -> Result<Tensor> {
    muon::axpby(x, y, a, b)
}

/// Newton–Schulz's polynomial in the Gram matrix, `aI + b·gram + c·gram_sq` for stacks
/// `gram`, `gram_sq = gram²` of square matrices (k, r, r) of one dtype (f32 or bf16; f64 on the
/// CPU), in one pass with f32 arithmetic (f64 for f64), rounded once; with `scales` (f32 `(k,)`)
/// matrix j is multiplied by `scales[j]`. With it an iteration is `X ← X·(aI + bA + cA²)` (or
/// `(aI + bA + cA²)·X`): one matmul, and no elementwise pass over X-sized matrices. No backward.
pub fn muon_ns_poly(
    gram: &Tensor,
    gram_sq: &Tensor,
    a: f64,
    b: f64,
    c: f64,
    scales: Option<&Tensor>,
) -> Result<Tensor> {
    muon::ns_poly(gram, gram_sq, a, b, c, scales)
}

/// `1 / (sqrt(tr G_j) + 1e-7)` for each matrix of a stack `gram` (k, r, r) (f32 or bf16), as f32
/// `(k,)`: for G_j = X_jᵀX_j (or X_j X_jᵀ), `1 / (‖X_j‖_F + eps)`, Newton–Schulz's normalization
/// without a pass over X. The diagonal is summed in f32 in a fixed order on the GPU (f64 on the
/// CPU). No backward.
pub fn muon_gram_scales(gram: &Tensor) -> Result<Tensor> {
    muon::gram_scales(gram)
}

/// `scales[j]² · gram[j]` for a stack `gram` (k, r, r) (f32 or bf16) and its
/// [`muon_gram_scales`]: the normalized input's Gram matrix. No backward.
pub fn muon_gram_normalize(gram: &Tensor, scales: &Tensor) -> Result<Tensor> {
    muon::gram_normalize(gram, scales)
}

/// [`muon_apply`] on one parameter in its own storage: `w ← w·decay − scale·o` for `w` a
/// contiguous f32 tensor (a `Var`'s) and `o` f32 or bf16 with as many elements (one matrix of
/// the orthogonalized stack). No stacked copy of the weights and no copy back. No backward.
pub fn muon_apply_in_place(w: &Tensor, o: &Tensor, decay: f64, scale: f64) -> Result<()> {
    muon::muon_apply_in_place(w, o, decay, scale)
}

/// Muon's momentum for a shape group, in place: `m[j] ← beta·m[j] + grads[j]` and the
/// look-ahead `v[j] = grads[j] + beta·m[j]` (Nesterov) or `m[j]`, for the stacks `m`: `(k, ..)`
/// f32 and `v` of m's shape in f32 or bf16 (Newton–Schulz's input dtype), and the k gradients
/// (contiguous f32), read where they are. On the GPU one launch, and no stacked copy of the
/// gradients. No backward.
pub fn muon_momentum(m: &Tensor, v: &Tensor, grads: &[Tensor], beta: f64, nesterov: bool) -> Result<()> {
    muon::muon_momentum(m, v, grads, beta, nesterov)
}

/// [`muon_apply_in_place`] on every matrix of a shape group at once: `ws[j] ← ws[j]·decay −
/// scale·o[j]` for the contiguous f32 weights `ws` and the stack `o: (k, ..)` (f32 or bf16, as
/// many elements per matrix). On the GPU one launch for the group. No backward.
pub fn muon_apply_many(ws: &[Tensor], o: &Tensor, decay: f64, scale: f64) -> Result<()> {
    muon::muon_apply_many(ws, o, decay, scale)
}
