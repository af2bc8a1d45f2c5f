//! GPU causal conv1d + SiLU: launches `ops/kernels/causal_conv1d.cu`. Backward = dpre kernel,
//! dx kernel, and per-strip dw/dbias partials summed by candle (fixed order).

use super::cpu::ConvDims;
use crate::cuda_util::{cuda_storage, device, ptx, tensor, view};
use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::{CudaStorage, WrapErr};
use candle_core::{bail, Layout, Result, Shape, Tensor};

const MODULE: &str = "mamba_causal_conv1d";
/// Rows of (batch, time) each dw thread sums before writing its partial.
const DW_ROWS: usize = 256;

fn elementwise(n: usize) -> LaunchConfig {
    LaunchConfig::for_num_elems(n as u32)
}

fn check(op: &str, dims: &ConvDims) -> Result<()> {
    if dims.k > 8 {
        bail!("{op}: the CUDA kernel supports kernel sizes up to 8, got {}", dims.k)
    }
    Ok(())
}

pub(crate) fn forward(
    op: &str,
    dims: &ConvDims,
    (x, lx): (&CudaStorage, &Layout),
    (w, lw): (&CudaStorage, &Layout),
    (bias, lb): (&CudaStorage, &Layout),
) -> Result<(CudaStorage, Shape)> {
    check(op, dims)?;
    let dev = device(x);
    let (xv, wv, bv) = (view(op, "x", x, lx)?, view(op, "weight", w, lw)?, view(op, "bias", bias, lb)?);
    let n = dims.b * dims.l * dims.d;
    // SAFETY: one thread per element writes every element.
    let out = unsafe { dev.alloc::<f32>(n)? };
    let func = dev.get_or_load_custom_func("causal_conv1d_silu_fwd_f32", MODULE, ptx::CAUSAL_CONV1D)?;
    let (b, l, d, k) = (dims.b as i32, dims.l as i32, dims.d as i32, dims.k as i32);
    let mut args = func.builder();
    args.arg(&xv).arg(&wv).arg(&bv).arg(&out).arg(&b).arg(&l).arg(&d).arg(&k);
    // SAFETY: argument types and order match the kernel's signature.
    unsafe { args.launch(elementwise(n)) }.w()?;
    Ok((CudaStorage::wrap_cuda_slice(out, dev), (dims.b, dims.l, dims.d).into()))
}

/// Gradients for `(x, weight, bias)` from contiguous f32 CUDA tensors.
pub(crate) fn backward(op: &str, dims: &ConvDims, x: &Tensor, w: &Tensor, bias: &Tensor, g: &Tensor) -> Result<[Tensor; 3]> {
    check(op, dims)?;
    let (xs, lx) = x.storage_and_layout();
    let (ws, lw) = w.storage_and_layout();
    let (bs, lb) = bias.storage_and_layout();
    let (gs, lg) = g.storage_and_layout();
    let (xs, ws, bs, gs) = (
        cuda_storage(op, "x", &xs)?,
        cuda_storage(op, "weight", &ws)?,
        cuda_storage(op, "bias", &bs)?,
        cuda_storage(op, "grad", &gs)?,
    );
    let dev = device(xs);
    let (xv, wv, bv, gv) = (view(op, "x", xs, lx)?, view(op, "weight", ws, lw)?, view(op, "bias", bs, lb)?, view(op, "grad", gs, lg)?);
    let n = dims.b * dims.l * dims.d;
    let (b, l, d, k) = (dims.b as i32, dims.l as i32, dims.d as i32, dims.k as i32);

    // SAFETY (all three allocations): each kernel writes every element of its output.
    let dpre = unsafe { dev.alloc::<f32>(n)? };
    let func = dev.get_or_load_custom_func("causal_conv1d_silu_dpre_f32", MODULE, ptx::CAUSAL_CONV1D)?;
    let mut args = func.builder();
    args.arg(&xv).arg(&wv).arg(&bv).arg(&gv).arg(&dpre).arg(&b).arg(&l).arg(&d).arg(&k);
    // SAFETY: argument types and order match the kernel's signature.
    unsafe { args.launch(elementwise(n)) }.w()?;

    let dx = unsafe { dev.alloc::<f32>(n)? };
    let func = dev.get_or_load_custom_func("causal_conv1d_dx_f32", MODULE, ptx::CAUSAL_CONV1D)?;
    let mut args = func.builder();
    args.arg(&dpre).arg(&wv).arg(&dx).arg(&b).arg(&l).arg(&d).arg(&k);
    // SAFETY: as above.
    unsafe { args.launch(elementwise(n)) }.w()?;

    let strips = (dims.b * dims.l).div_ceil(DW_ROWS);
    let dw_part = unsafe { dev.alloc::<f32>(strips * dims.d * (dims.k + 1))? };
    let func = dev.get_or_load_custom_func("causal_conv1d_dw_f32", MODULE, ptx::CAUSAL_CONV1D)?;
    let rows = DW_ROWS as i32;
    let cfg = LaunchConfig { grid_dim: (dims.d.div_ceil(128) as u32, strips as u32, 1), block_dim: (128, 1, 1), shared_mem_bytes: 0 };
    let mut args = func.builder();
    args.arg(&xv).arg(&dpre).arg(&dw_part).arg(&b).arg(&l).arg(&d).arg(&k).arg(&rows);
    // SAFETY: as above.
    unsafe { args.launch(cfg) }.w()?;

    let dx = tensor(dx, &dev, (dims.b, dims.l, dims.d));
    let dwb = tensor(dw_part, &dev, (strips, dims.d, dims.k + 1)).sum(0)?; // (d, k + 1)
    let dw = dwb.narrow(1, 0, dims.k)?.contiguous()?;
    let dbias = dwb.narrow(1, dims.k, 1)?.squeeze(1)?.contiguous()?;
    Ok([dx, dw, dbias])
}
