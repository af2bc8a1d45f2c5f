//! GPU selective scan: launches `ops/kernels/selective_scan.cu` over the packed layout of
//! `mod.rs`. Forward is one kernel; backward is one kernel plus two candle sums over the
//! kernel's per-block partials (a fixed summation order).

use super::ScanDims;
use crate::cuda_util::{cuda_storage, device, ptx, tensor, view};
use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::{CudaStorage, WrapErr};
use candle_core::{bail, Layout, Result, Shape, Tensor};

const MODULE: &str = "mamba_selective_scan";
/// Time steps per chunk of the backward (`BWD_CHUNK` in the kernel).
const BWD_CHUNK: usize = 8;

/// The kernel instantiation for state size `n`: `(padded state size, channels per block)`, as in
/// the `SCAN_KERNELS` lines of the kernel file.
fn variant(op: &str, n: usize) -> Result<(usize, usize)> {
    match n {
        1..=4 => Ok((4, 64)),
        5..=8 => Ok((8, 64)),
        9..=16 => Ok((16, 64)),
        17..=32 => Ok((32, 32)),
        _ => bail!("{op}: the CUDA kernel supports state sizes 1..=32, got {n}"),
    }
}

pub(crate) fn forward(
    op: &str,
    dims: &ScanDims,
    (x, lx): (&CudaStorage, &Layout),
    (bc, lbc): (&CudaStorage, &Layout),
    (p, lp): (&CudaStorage, &Layout),
) -> Result<(CudaStorage, Shape)> {
    let dev = device(x);
    let (np, cpb) = variant(op, dims.n)?;
    let (xv, bcv, pv) = (view(op, "x", x, lx)?, view(op, "bc", bc, lbc)?, view(op, "p", p, lp)?);
    // SAFETY: every element is written by the kernel (one thread per channel writes all `l` rows).
    let out = unsafe { dev.alloc::<f32>(dims.b * dims.l * dims.d)? };
    let func = dev.get_or_load_custom_func(&format!("selective_scan_fwd_f32_n{np}"), MODULE, ptx::SELECTIVE_SCAN)?;
    let cfg = LaunchConfig {
        grid_dim: (dims.d.div_ceil(cpb) as u32, dims.b as u32, 1),
        block_dim: (cpb as u32, 1, 1),
        shared_mem_bytes: 0,
    };
    let (l, d, n) = (dims.l as i32, dims.d as i32, dims.n as i32);
    let mut b = func.builder();
    b.arg(&xv).arg(&bcv).arg(&pv).arg(&out).arg(&l).arg(&d).arg(&n);
    // SAFETY: argument types and order match the kernel's signature.
    unsafe { b.launch(cfg) }.w()?;
    Ok((CudaStorage::wrap_cuda_slice(out, dev), (dims.b, dims.l, dims.d).into()))
}

/// Gradients for the packed `(x, bc, p)`, given contiguous f32 CUDA tensors.
pub(crate) fn backward(op: &str, dims: &ScanDims, x: &Tensor, bc: &Tensor, p: &Tensor, g: &Tensor) -> Result<[Tensor; 3]> {
    let ScanDims { b: bs, l, d, n } = *dims;
    let (np, cpb) = variant(op, n)?;
    let (xs, lx) = x.storage_and_layout();
    let (bcs, lbc) = bc.storage_and_layout();
    let (ps, lp) = p.storage_and_layout();
    let (gs, lg) = g.storage_and_layout();
    let (xs, bcs, ps, gs) = (
        cuda_storage(op, "x", &xs)?,
        cuda_storage(op, "bc", &bcs)?,
        cuda_storage(op, "p", &ps)?,
        cuda_storage(op, "grad", &gs)?,
    );
    let dev = device(xs);
    let (xv, bcv, pv, gv) = (view(op, "x", xs, lx)?, view(op, "bc", bcs, lbc)?, view(op, "p", ps, lp)?, view(op, "grad", gs, lg)?);
    let (gx, gy) = (d.div_ceil(cpb) as u32, bs as u32);
    let n_chunks = l.div_ceil(BWD_CHUNK);
    // SAFETY: the kernel writes all of dx, every (batch, block, t, j) of the partials and every
    // (batch, channel) row of dp_part; `states` is scratch written before it is read.
    let dx = unsafe { dev.alloc::<f32>(bs * l * 3 * d)? };
    let dbc_part = unsafe { dev.alloc::<f32>(bs * gx as usize * l * 2 * n)? };
    let dp_part = unsafe { dev.alloc::<f32>(bs * d * (n + 2))? };
    let states = unsafe { dev.alloc::<f32>(bs * n_chunks * np * d)? };
    let func = dev.get_or_load_custom_func(&format!("selective_scan_bwd_f32_n{np}"), MODULE, ptx::SELECTIVE_SCAN)?;
    // Shared memory is static (declared in the kernel, < 48 KiB for every instantiation).
    let cfg = LaunchConfig { grid_dim: (gx, gy, 1), block_dim: (cpb as u32, 1, 1), shared_mem_bytes: 0 };
    let (li, di, ni) = (l as i32, d as i32, n as i32);
    let mut b = func.builder();
    b.arg(&xv).arg(&bcv).arg(&pv).arg(&gv).arg(&dx).arg(&dbc_part).arg(&dp_part).arg(&states);
    b.arg(&li).arg(&di).arg(&ni);
    // SAFETY: argument types and order match the kernel's signature.
    unsafe { b.launch(cfg) }.w()?;
    drop(states);
    let dx = tensor(dx, &dev, (bs, l, 3 * d));
    let dbc = tensor(dbc_part, &dev, (bs, gx as usize, l, 2 * n)).sum(1)?; // (b, l, 2n)
    let dp = tensor(dp_part, &dev, (bs, d, n + 2)).sum(0)?; // (d, n + 2)
    Ok([dx, dbc, dp])
}
