//! Launches `ops/kernels/mixer_conv.cu`: the conv forward, its input and weight gradients.

use super::{check_k, ScanShare};
use crate::model::mixer::MixerDims;
use crate::util::cuda_util::{cuda_storage, device, dispatch, ptx, sum_partials, tensor, tensor_of, view, view_of, Io};
use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::{CudaDevice, CudaStorage, WrapErr};
use candle_core::{bail, Layout, Result, Tensor};

const CONV_MODULE: &str = "mamba_mixer_conv";
/// Rows of (batch, time) each thread of the weight-gradient kernel (mixer_scan's backward) sums
/// before writing its partial (64: enough blocks to fill the GPU at micro-batch 16; 256 left it a
/// third idle).
const DW_ROWS: usize = 64;

/// Threads per block of the conv's per-element kernels, one per channel, and the time steps each
/// thread walks (`RUN` in `mixer_conv.cu`).
const CONV_THREADS: usize = 256;

/// The conv kernels' window for `k` taps (`KW` in `kernels/mixer_conv.cu`): 4 (the model's
/// width), else 8 (`MAX_K`; `check_k` refuses wider).
fn conv_window(k: usize) -> usize {
    if k <= 4 {
        4
    } else {
        8
    }
}
const CONV_RUN: usize = 16;
/// The steps of one sequence each thread of the conv's backward kernel walks (`BWD_ROWS`); its
/// weight-gradient partials are per such group of rows.
const CONV_BWD_ROWS: usize = 64;

fn per_element(dims: &MixerDims) -> LaunchConfig {
    LaunchConfig {
        grid_dim: ((dims.b * dims.l.div_ceil(CONV_RUN)) as u32, dims.d.div_ceil(CONV_THREADS) as u32, 1),
        block_dim: (CONV_THREADS as u32, 1, 1),
        shared_mem_bytes: 0,
    }
}

pub(crate) fn conv_forward(
    op: &str,
    dims: &MixerDims,
    xz: (&CudaStorage, &Layout),
    w: (&CudaStorage, &Layout),
    cb: (&CudaStorage, &Layout),
) -> Result<CudaStorage> {
    check_k(op, dims)?;
    dispatch!(op, xz.0.dtype(), conv_forward_t(op, dims, xz, w, cb))
}

fn conv_forward_t<T: Io>(
    op: &str,
    dims: &MixerDims,
    (xz, lxz): (&CudaStorage, &Layout),
    (w, lw): (&CudaStorage, &Layout),
    (cb, lcb): (&CudaStorage, &Layout),
) -> Result<CudaStorage> {
    let dev = device(xz);
    let (xzv, wv, cbv) = (view_of::<T>(op, "xz", xz, lxz)?, view(op, "weight", w, lw)?, view(op, "bias", cb, lcb)?);
    let n = dims.b * dims.l * dims.d;
    // SAFETY: one thread per element writes every element.
    let out = unsafe { dev.alloc::<T>(n)? };
    let func = dev.get_or_load_custom_func(
        &format!("mixer_conv_fwd_k{}_{}", conv_window(dims.k), T::SUFFIX),
        CONV_MODULE,
        ptx::MIXER_CONV,
    )?;
    let (l, d, k) = (dims.l as i32, dims.d as i32, dims.k as i32);
    let mut args = func.builder();
    args.arg(&xzv).arg(&wv).arg(&cbv).arg(&out).arg(&l).arg(&d).arg(&k);
    // SAFETY: argument types and order match the kernel's signature.
    unsafe { args.launch(per_element(dims)) }.w()?;
    Ok(CudaStorage::wrap_cuda_slice(out, dev))
}

/// `dxz`'s x half and the conv's `(dw, dbias)` from `dpre = dL/d(pre-activation)`; with `zero_z`
/// the z half of `dxz` is zeroed too (otherwise the caller writes it).
pub(super) fn conv_input_grads<T: Io>(
    dims: &MixerDims,
    dev: &CudaDevice,
    xzv: &candle_core::cuda_backend::cudarc::driver::CudaView<'_, T>,
    wv: &candle_core::cuda_backend::cudarc::driver::CudaView<'_, f32>,
    dpre: &CudaSlice<f32>,
    dxz: &mut CudaSlice<T>,
    zero_z: bool,
) -> Result<(Tensor, Tensor)> {
    let (b, l, d, k) = (dims.b as i32, dims.l as i32, dims.d as i32, dims.k as i32);
    let func = dev.get_or_load_custom_func(
        &format!("mixer_conv_dx_k{}_{}", conv_window(dims.k), T::SUFFIX),
        CONV_MODULE,
        ptx::MIXER_CONV,
    )?;
    let zero_z = i32::from(zero_z);
    let mut args = func.builder();
    args.arg(dpre).arg(wv).arg(dxz).arg(&l).arg(&d).arg(&k).arg(&zero_z);
    // SAFETY: argument types and order match the kernel's signature.
    unsafe { args.launch(per_element(dims)) }.w()?;

    let strips = (dims.b * dims.l).div_ceil(DW_ROWS);
    // SAFETY: the kernel writes every (strip, channel) row of the partials.
    let dw_part = unsafe { dev.alloc::<f32>(strips * dims.d * (dims.k + 1))? };
    let func = dev.get_or_load_custom_func(
        &format!("mixer_conv_dw_k{}_{}", conv_window(dims.k), T::SUFFIX),
        CONV_MODULE,
        ptx::MIXER_CONV,
    )?;
    let rows = DW_ROWS as i32;
    let cfg = LaunchConfig {
        grid_dim: (dims.d.div_ceil(128) as u32, strips as u32, 1),
        block_dim: (128, 1, 1),
        shared_mem_bytes: 0,
    };
    let mut args = func.builder();
    args.arg(xzv).arg(dpre).arg(&dw_part).arg(&b).arg(&l).arg(&d).arg(&k).arg(&rows);
    // SAFETY: as above.
    unsafe { args.launch(cfg) }.w()?;
    dw_and_bias(dims, dev, &dw_part, strips)
}

/// The conv's `(dw (d, k), dbias (d,))` from per-part partials `(parts, d, k + 1)`, summed over the
/// parts in a fixed order.
fn dw_and_bias(dims: &MixerDims, dev: &CudaDevice, part: &CudaSlice<f32>, parts: usize) -> Result<(Tensor, Tensor)> {
    let dwb = tensor(sum_partials(dev, part, (1, parts, dims.d * (dims.k + 1)))?, dev, (dims.d, dims.k + 1)); // (d, k + 1)
    Ok((dwb.narrow(1, 0, dims.k)?.contiguous()?, dwb.narrow(1, dims.k, 1)?.squeeze(1)?.contiguous()?))
}

/// Gradients of `mixer_conv` for `(xz, weight, bias)`.
pub(crate) fn conv_backward(
    op: &str,
    dims: &MixerDims,
    xz: &Tensor,
    w: &Tensor,
    cb: &Tensor,
    g: &Tensor,
) -> Result<[Tensor; 3]> {
    check_k(op, dims)?;
    dispatch!(op, xz.dtype(), conv_backward_t(op, dims, xz, w, cb, g, None))
}

/// [`conv_backward`] for both uses of the conv's output at once: `g` is the gradient of its
/// output through x_proj, `share` the scan's; one pass of the dx and dw kernels, writing the x half
/// of the scan's `dxz`.
pub(crate) fn conv_backward_with(
    op: &str,
    dims: &MixerDims,
    xz: &Tensor,
    w: &Tensor,
    cb: &Tensor,
    g: &Tensor,
    share: ScanShare,
) -> Result<[Tensor; 3]> {
    check_k(op, dims)?;
    dispatch!(op, xz.dtype(), conv_backward_t(op, dims, xz, w, cb, g, Some(share)))
}

fn conv_backward_t<T: Io>(
    op: &str,
    dims: &MixerDims,
    xz: &Tensor,
    w: &Tensor,
    cb: &Tensor,
    g: &Tensor,
    share: Option<ScanShare>,
) -> Result<[Tensor; 3]> {
    let (xzs, lxz) = xz.storage_and_layout();
    let (ws, lw) = w.storage_and_layout();
    let (cbs, lcb) = cb.storage_and_layout();
    let (gs, lg) = g.storage_and_layout();
    let (xzs, ws, cbs, gs) = (
        cuda_storage(op, "xz", &xzs)?,
        cuda_storage(op, "weight", &ws)?,
        cuda_storage(op, "bias", &cbs)?,
        cuda_storage(op, "grad", &gs)?,
    );
    let dev = device(xzs);
    let xzv = view_of::<T>(op, "xz", xzs, lxz)?;
    let (wv, cbv, gv) = (view(op, "weight", ws, lw)?, view(op, "bias", cbs, lcb)?, view_of::<T>(op, "grad", gs, lg)?);
    let n = dims.b * dims.l * dims.d;
    let (l, d, k) = (dims.l as i32, dims.d as i32, dims.k as i32);
    // With a scan share the kernel adds its du to g and writes the x half of its dxz; without one
    // a fresh dxz, both halves (SAFETY: with zero_z the kernel writes both halves of every row).
    let (du, mut dxz, with_share) = match share {
        Some(ScanShare { du, dxz }) => (Some(du), dxz, 1i32),
        None => (None, CudaStorage::wrap_cuda_slice(unsafe { dev.alloc::<T>(2 * n)? }, dev.clone()), 0i32),
    };
    if du.as_ref().map_or(Ok(n), |du| du.as_cuda_slice::<f32>().map(|s| s.len()))? != n
        || dxz.as_cuda_slice::<T>()?.len() != 2 * n
    {
        bail!("{op}: internal error: the scan's share does not match the conv's size")
    }
    let groups = dims.b * dims.l.div_ceil(CONV_BWD_ROWS);
    // SAFETY: the kernel writes every (group, channel) row of the partials.
    let dw_part = unsafe { dev.alloc::<f32>(groups * dims.d * (dims.k + 1))? };
    let func = dev.get_or_load_custom_func(
        &format!("mixer_conv_bwd_k{}_{}", conv_window(dims.k), T::SUFFIX),
        CONV_MODULE,
        ptx::MIXER_CONV,
    )?;
    let zero_z = 1 - with_share;
    let mut args = func.builder();
    args.arg(&xzv).arg(&wv).arg(&cbv).arg(&gv);
    // Without a share the kernel reads no du: the partials stand in for the argument.
    match &du {
        Some(du) => args.arg(du.as_cuda_slice::<f32>()?),
        None => args.arg(&dw_part),
    };
    args.arg(dxz.as_cuda_slice_mut::<T>()?).arg(&dw_part).arg(&l).arg(&d).arg(&k).arg(&with_share).arg(&zero_z);
    let cfg = LaunchConfig {
        grid_dim: (groups as u32, dims.d.div_ceil(CONV_THREADS) as u32, 1),
        block_dim: (CONV_THREADS as u32, 1, 1),
        shared_mem_bytes: 0,
    };
    // SAFETY: argument types and order match the kernel's signature.
    unsafe { args.launch(cfg) }.w()?;
    let (dw, db) = dw_and_bias(dims, &dev, &dw_part, groups)?;
    Ok([tensor_of(dxz, dims.act_shape(2 * dims.d)), dw, db])
}
