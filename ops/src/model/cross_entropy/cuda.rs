//! GPU cross-entropy: launches `ops/kernels/cross_entropy.cu`, one block of `THREADS` threads
//! per row of logits, for the forward (`[loss, lse]` per row) and the backward (the gradient in
//! the logits' dtype). f32 and bf16 logits; the math is f32 in both.

use crate::util::cuda_util::{device, ptx, view_of};
use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{DeviceRepr, LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::{CudaDType, CudaStorage, WrapErr};
use candle_core::{bail, DType, Layout, Result, Shape};
use half::bf16;

const MODULE: &str = "mamba_cross_entropy";
/// Threads per block (a multiple of 32, at most 1024: the kernel's block reduction assumes it).
const THREADS: u32 = 256;

/// One block per row; rows and classes must fit the kernel's `int`s and the grid.
fn config(op: &str, n: usize, v: usize) -> Result<LaunchConfig> {
    if n > i32::MAX as usize || v > i32::MAX as usize {
        bail!("{op}: the CUDA kernel supports at most {} rows and classes, got ({n}, {v})", i32::MAX)
    }
    Ok(LaunchConfig { grid_dim: (n as u32, 1, 1), block_dim: (THREADS, 1, 1), shared_mem_bytes: 0 })
}

/// `(logits, targets) → (n, 2)` f32 rows of `[loss, lse]`.
pub(crate) fn forward(
    op: &str,
    (x, lx): (&CudaStorage, &Layout),
    (t, lt): (&CudaStorage, &Layout),
) -> Result<(CudaStorage, Shape)> {
    match x.dtype() {
        DType::F32 => forward_typed::<f32>(op, "cross_entropy_fwd_f32", (x, lx), (t, lt)),
        DType::BF16 => forward_typed::<bf16>(op, "cross_entropy_fwd_bf16", (x, lx), (t, lt)),
        other => bail!("{op}: the CUDA kernel takes f32 or bf16 logits, got {other:?}"),
    }
}

fn forward_typed<T: CudaDType>(
    op: &str,
    kernel: &str,
    (x, lx): (&CudaStorage, &Layout),
    (t, lt): (&CudaStorage, &Layout),
) -> Result<(CudaStorage, Shape)> {
    let (n, v) = lx.shape().dims2()?;
    let cfg = config(op, n, v)?;
    let dev = device(x);
    let (xv, tv) = (view_of::<T>(op, "logits", x, lx)?, view_of::<u32>(op, "targets", t, lt)?);
    // SAFETY: thread 0 of block i writes out[2i] and out[2i + 1], for every row i < n.
    let out = unsafe { dev.alloc::<f32>(2 * n)? };
    let func = dev.get_or_load_custom_func(kernel, MODULE, ptx::CROSS_ENTROPY)?;
    let vi = v as i32;
    let mut args = func.builder();
    args.arg(&xv).arg(&tv).arg(&out).arg(&vi);
    // SAFETY: argument types and order match the kernel's signature.
    unsafe { args.launch(cfg) }.w()?;
    Ok((CudaStorage::wrap_cuda_slice(out, dev), (n, 2).into()))
}

/// `(logits, targets, aux = [lse, g] per row (f32)) → g · (softmax − onehot)` in the logits' dtype.
pub(crate) fn backward(
    op: &str,
    x: (&CudaStorage, &Layout),
    t: (&CudaStorage, &Layout),
    aux: (&CudaStorage, &Layout),
) -> Result<(CudaStorage, Shape)> {
    match x.0.dtype() {
        DType::F32 => backward_typed::<f32>(op, "cross_entropy_bwd_f32", x, t, aux),
        DType::BF16 => backward_typed::<bf16>(op, "cross_entropy_bwd_bf16", x, t, aux),
        other => bail!("{op}: the CUDA kernel takes f32 or bf16 logits, got {other:?}"),
    }
}

fn backward_typed<T: CudaDType + DeviceRepr>(
    op: &str,
    kernel: &str,
    (x, lx): (&CudaStorage, &Layout),
    (t, lt): (&CudaStorage, &Layout),
    (aux, la): (&CudaStorage, &Layout),
) -> Result<(CudaStorage, Shape)> {
    let (n, v) = lx.shape().dims2()?;
    let cfg = config(op, n, v)?;
    let dev = device(x);
    let xv = view_of::<T>(op, "logits", x, lx)?;
    let tv = view_of::<u32>(op, "targets", t, lt)?;
    let av = view_of::<f32>(op, "aux", aux, la)?;
    // SAFETY: block i writes all v elements of row i (head, vector body and tail), for every i < n.
    let dx = unsafe { dev.alloc::<T>(n * v)? };
    let func = dev.get_or_load_custom_func(kernel, MODULE, ptx::CROSS_ENTROPY)?;
    let vi = v as i32;
    let mut args = func.builder();
    args.arg(&xv).arg(&tv).arg(&av).arg(&dx).arg(&vi);
    // SAFETY: argument types and order match the kernel's signature.
    unsafe { args.launch(cfg) }.w()?;
    Ok((CudaStorage::wrap_cuda_slice(dx, dev), lx.shape().clone()))
}
