//! Launches `kernels/muon.cu`.

use crate::util::cuda_util::{device, dispatch, grid_stride, ptx, view, view_of, Io, GRID_STRIDE_THREADS};
use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::{CudaStorage, WrapErr};
use candle_core::{Layout, Result};

use super::gram::Axpby;

const MODULE: &str = "mamba_muon";
/// Threads per block (`MUON_THREADS` in the kernels).
const THREADS: usize = GRID_STRIDE_THREADS;
/// Blocks of the apply kernel (a grid-stride loop).
const APPLY_BLOCKS: usize = 2048;

/// `1 / (sqrt(tr G_j) + eps)` for the k matrices (r, r) of `gram`: one block per matrix.
pub(crate) fn gram_scales(op: &str, (gs, gl): (&CudaStorage, &Layout), k: usize, r: usize) -> Result<CudaStorage> {
    dispatch!(op, gs.dtype(), gram_scales_t(op, (gs, gl), k, r))
}

fn gram_scales_t<T: Io>(op: &str, (gs, gl): (&CudaStorage, &Layout), k: usize, r: usize) -> Result<CudaStorage> {
    let dev = device(gs);
    let gv = view_of::<T>(op, "gram", gs, gl)?;
    // SAFETY: block j writes scales[j], for every j < k.
    let scales = unsafe { dev.alloc::<f32>(k)? };
    let func = dev.get_or_load_custom_func(&format!("muon_gram_scales_{}", T::SUFFIX), MODULE, ptx::MUON)?;
    let cfg = LaunchConfig { grid_dim: (k as u32, 1, 1), block_dim: (THREADS as u32, 1, 1), shared_mem_bytes: 0 };
    let (ri, eps) = (r as i32, super::gram::NORM_EPS);
    let mut args = func.builder();
    args.arg(&gv).arg(&ri).arg(&eps).arg(&scales);
    // SAFETY: argument types and order match the kernel's signature.
    unsafe { args.launch(cfg) }.w()?;
    Ok(CudaStorage::wrap_cuda_slice(scales, dev))
}

pub(crate) fn apply(
    op: &str,
    (ws, wl): (&CudaStorage, &Layout),
    (os, ol): (&CudaStorage, &Layout),
    decay: f32,
    scale: f32,
) -> Result<CudaStorage> {
    dispatch!(op, os.dtype(), apply_t(op, (ws, wl), (os, ol), decay, scale))
}

fn apply_t<T: Io>(
    op: &str,
    (ws, wl): (&CudaStorage, &Layout),
    (os, ol): (&CudaStorage, &Layout),
    decay: f32,
    scale: f32,
) -> Result<CudaStorage> {
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
pub(crate) fn apply_in_place(
    op: &str,
    (ws, wl): (&mut CudaStorage, &Layout),
    (os, ol): (&CudaStorage, &Layout),
    decay: f32,
    scale: f32,
) -> Result<()> {
    dispatch!(op, os.dtype(), apply_in_place_t(op, (ws, wl), (os, ol), decay, scale))
}

fn apply_in_place_t<T: Io>(
    op: &str,
    (ws, wl): (&mut CudaStorage, &Layout),
    (os, ol): (&CudaStorage, &Layout),
    decay: f32,
    scale: f32,
) -> Result<()> {
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

/// `s_j^power·(a·x + b·y + eye·I)` with the op's coefficients `coef`, the scales `s` optional.
pub(crate) fn axpby(
    coef: &Axpby,
    x: (&CudaStorage, &Layout),
    y: (&CudaStorage, &Layout),
    scales: Option<(&CudaStorage, &Layout)>,
) -> Result<CudaStorage> {
    dispatch!(coef.op, x.0.dtype(), axpby_t(coef, x, y, scales))
}

fn axpby_t<T: Io>(
    coef: &Axpby,
    (xs, xl): (&CudaStorage, &Layout),
    (ys, yl): (&CudaStorage, &Layout),
    scales: Option<(&CudaStorage, &Layout)>,
) -> Result<CudaStorage> {
    let op = coef.op;
    let dev = device(xs);
    let (xv, yv) = (view_of::<T>(op, "x", xs, xl)?, view_of::<T>(op, "y", ys, yl)?);
    let n = xv.len();
    // The kernel's diagonal test and matrix index use 32-bit index math.
    if (coef.r > 0 || scales.is_some()) && u32::try_from(n).is_err() {
        candle_core::bail!("{op}: {n} elements with a diagonal term or scales: the kernel supports fewer than 2^32")
    }
    let sv = scales.map(|(ss, sl)| view(op, "scales", ss, sl)).transpose()?;
    // SAFETY: the grid-stride loop writes every element.
    let out = unsafe { dev.alloc::<T>(n)? };
    let func = dev.get_or_load_custom_func(&format!("muon_axpby_{}", T::SUFFIX), MODULE, ptx::MUON)?;
    let cfg = grid_stride(n, APPLY_BLOCKS);
    let (r, per) = (coef.r as i32, coef.per.max(1) as u32); // r < 2^16: r·r ≤ n < 2^32; per ≤ n
    let mut args = func.builder();
    args.arg(&xv).arg(&yv).arg(&coef.a).arg(&coef.b).arg(&coef.eye).arg(&r);
    // Without scales the kernel gets a null pointer.
    let null: u64 = 0;
    match &sv {
        Some(sv) => args.arg(sv),
        None => args.arg(&null),
    };
    args.arg(&coef.power).arg(&per).arg(&out).arg(&n);
    // SAFETY: argument types and order match the kernel's signature (r, power: int; per:
    // unsigned; n: size_t); with scales, `per` divides n and the scales hold n / per floats
    // (the op checks).
    unsafe { args.launch(cfg) }.w()?;
    Ok(CudaStorage::wrap_cuda_slice(out, dev))
}
