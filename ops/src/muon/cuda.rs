//! Launches `kernels/muon.cu`.

use crate::cuda_util::{device, dispatch, grid_stride, ptx, view, view_of, Io, GRID_STRIDE_THREADS};
use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::{CudaStorage, WrapErr};
use candle_core::{DType, Layout, Result};

const MODULE: &str = "mamba_muon";
/// Threads per block (`MUON_THREADS` in the kernels).
const THREADS: usize = GRID_STRIDE_THREADS;
/// Blocks per matrix of the norm and scale kernels: the norm's partial sums per matrix.
const PARTS: usize = 64;
/// Blocks of the apply kernel (a grid-stride loop).
const APPLY_BLOCKS: usize = 2048;

#[allow(clippy::too_many_arguments)]
pub(crate) fn ns_input(
    op: &str,
    (gs, gl): (&CudaStorage, &Layout),
    (ms, ml): (&CudaStorage, &Layout),
    k: usize,
    per: usize,
    beta: f32,
    nesterov: bool,
    dtype: DType,
) -> Result<CudaStorage> {
    dispatch!(op, dtype, ns_input_t(op, (gs, gl), (ms, ml), k, per, beta, nesterov))
}

#[allow(clippy::too_many_arguments)]
fn ns_input_t<T: Io>(
    op: &str,
    (gs, gl): (&CudaStorage, &Layout),
    (ms, ml): (&CudaStorage, &Layout),
    k: usize,
    per: usize,
    beta: f32,
    nesterov: bool,
) -> Result<CudaStorage> {
    let dev = device(gs);
    let (gv, mv) = (view(op, "g", gs, gl)?, view(op, "m", ms, ml)?);
    let cfg = LaunchConfig { grid_dim: (PARTS as u32, k as u32, 1), block_dim: (THREADS as u32, 1, 1), shared_mem_bytes: 0 };
    let (nest, per_i, parts, eps) = (i32::from(nesterov), per as i32, PARTS as i32, super::NORM_EPS);
    // SAFETY: one partial per block, every block writes its own.
    let part = unsafe { dev.alloc::<f32>(k * PARTS)? };
    let func = dev.get_or_load_custom_func("muon_sumsq", MODULE, ptx::MUON)?;
    let mut args = func.builder();
    args.arg(&gv).arg(&mv).arg(&beta).arg(&nest).arg(&per_i).arg(&part);
    // SAFETY: argument types and order match the kernel's signature.
    unsafe { args.launch(cfg) }.w()?;
    // SAFETY: the grid-stride loops of the k × PARTS blocks write every element.
    let u = unsafe { dev.alloc::<T>(k * per)? };
    let func = dev.get_or_load_custom_func(&format!("muon_scale_{}", T::SUFFIX), MODULE, ptx::MUON)?;
    let mut args = func.builder();
    args.arg(&gv).arg(&mv).arg(&beta).arg(&nest).arg(&per_i).arg(&part).arg(&parts).arg(&eps).arg(&u);
    // SAFETY: as above.
    unsafe { args.launch(cfg) }.w()?;
    Ok(CudaStorage::wrap_cuda_slice(u, dev))
}

pub(crate) fn apply(op: &str, (ws, wl): (&CudaStorage, &Layout), (os, ol): (&CudaStorage, &Layout), decay: f32, scale: f32) -> Result<CudaStorage> {
    dispatch!(op, os.dtype(), apply_t(op, (ws, wl), (os, ol), decay, scale))
}

fn apply_t<T: Io>(op: &str, (ws, wl): (&CudaStorage, &Layout), (os, ol): (&CudaStorage, &Layout), decay: f32, scale: f32) -> Result<CudaStorage> {
    let dev = device(ws);
    let (wv, ov) = (view(op, "w", ws, wl)?, view_of::<T>(op, "o", os, ol)?);
    let n = wv.len();
    // SAFETY: the grid-stride loop writes every element.
    let out = unsafe { dev.alloc::<f32>(n)? };
    let func = dev.get_or_load_custom_func(&format!("muon_apply_{}", T::SUFFIX), MODULE, ptx::MUON)?;
    let cfg = grid_stride(n, APPLY_BLOCKS);
    let mut args = func.builder();
    args.arg(&wv).arg(&ov).arg(&decay).arg(&scale).arg(&out).arg(&n);
    // SAFETY: argument types and order match the kernel's signature (n: size_t).
    unsafe { args.launch(cfg) }.w()?;
    Ok(CudaStorage::wrap_cuda_slice(out, dev))
}

/// `w ← w·decay − scale·o` in w's own storage (the apply kernel writing where it reads).
pub(crate) fn apply_in_place(op: &str, (ws, wl): (&mut CudaStorage, &Layout), (os, ol): (&CudaStorage, &Layout), decay: f32, scale: f32) -> Result<()> {
    dispatch!(op, os.dtype(), apply_in_place_t(op, (ws, wl), (os, ol), decay, scale))
}

fn apply_in_place_t<T: Io>(op: &str, (ws, wl): (&mut CudaStorage, &Layout), (os, ol): (&CudaStorage, &Layout), decay: f32, scale: f32) -> Result<()> {
    let dev = device(ws);
    let ov = view_of::<T>(op, "o", os, ol)?;
    let Some((start, end)) = wl.contiguous_offsets() else {
        candle_core::bail!("{op}: internal error: `w` is not contiguous on the GPU")
    };
    let n = end - start;
    // The kernel reads and writes w through one view (the same pointer as `w` and `out`): the
    // launch builder takes a mutable view only once. This op holds w's storage mutably.
    let w = ws.as_cuda_slice::<f32>()?.slice(start..end);
    let func = dev.get_or_load_custom_func(&format!("muon_apply_{}", T::SUFFIX), MODULE, ptx::MUON)?;
    let cfg = grid_stride(n, APPLY_BLOCKS);
    let mut args = func.builder();
    args.arg(&w).arg(&ov).arg(&decay).arg(&scale).arg(&w).arg(&n);
    // SAFETY: argument types and order match the kernel's signature (n: size_t); each thread reads
    // and then writes only its own elements of w.
    unsafe { args.launch(cfg) }.w()?;
    Ok(())
}

/// `a·x + b·y`, plus `eye` on the diagonals of the trailing `r`×`r` matrices when `r > 0`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn axpby(op: &str, (xs, xl): (&CudaStorage, &Layout), (ys, yl): (&CudaStorage, &Layout), a: f32, b: f32, eye: f32, r: usize) -> Result<CudaStorage> {
    dispatch!(op, xs.dtype(), axpby_t(op, (xs, xl), (ys, yl), a, b, eye, r))
}

#[allow(clippy::too_many_arguments)]
fn axpby_t<T: Io>(op: &str, (xs, xl): (&CudaStorage, &Layout), (ys, yl): (&CudaStorage, &Layout), a: f32, b: f32, eye: f32, r: usize) -> Result<CudaStorage> {
    let dev = device(xs);
    let (xv, yv) = (view_of::<T>(op, "x", xs, xl)?, view_of::<T>(op, "y", ys, yl)?);
    let n = xv.len();
    // SAFETY: the grid-stride loop writes every element.
    let out = unsafe { dev.alloc::<T>(n)? };
    let func = dev.get_or_load_custom_func(&format!("muon_axpby_{}", T::SUFFIX), MODULE, ptx::MUON)?;
    let cfg = grid_stride(n, APPLY_BLOCKS);
    let mut args = func.builder();
    // The kernel's diagonal test uses 32-bit index math.
    if r > 0 && u32::try_from(n).is_err() {
        candle_core::bail!("{op}: {n} elements with a diagonal term: the kernel supports fewer than 2^32")
    }
    let r = r as i32; // < 2^16: r·r ≤ n < 2^32
    args.arg(&xv).arg(&yv).arg(&a).arg(&b).arg(&eye).arg(&r).arg(&out).arg(&n);
    // SAFETY: argument types and order match the kernel's signature (r: int, n: size_t).
    unsafe { args.launch(cfg) }.w()?;
    Ok(CudaStorage::wrap_cuda_slice(out, dev))
}
