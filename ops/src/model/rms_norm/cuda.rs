//! GPU RMSNorm: launches `ops/kernels/rms_norm.cu`. Forward is one kernel; backward is the dx
//! kernel (which also writes 1/rms per row) plus per-strip dw partials, summed in a fixed order
//! by `sum_partials`.

use crate::util::cuda_util::{cuda_storage, device, dispatch, ptx, sum_partials, tensor, view, view_of, Io};
use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::{CudaStorage, WrapErr};
use candle_core::{bail, DType, Layout, Result, Shape, Tensor};

const MODULE: &str = "mamba_rms_norm";
/// Rows per block in the row kernels (one warp each).
const ROWS_PER_BLOCK: usize = 8;
/// Rows each dw thread sums before writing its partial (64: 768 blocks for the 130m model at
/// micro-batch 8; with 256 the kernel took 40 µs per layer there, latency-bound).
const STRIP_ROWS: usize = 64;

fn row_launch(rows: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (rows.div_ceil(ROWS_PER_BLOCK) as u32, 1, 1),
        block_dim: (32 * ROWS_PER_BLOCK as u32, 1, 1),
        shared_mem_bytes: 0,
    }
}

pub(crate) fn forward(
    op: &str,
    rows: usize,
    d: usize,
    eps: f64,
    out: DType,
    x: (&CudaStorage, &Layout),
    w: (&CudaStorage, &Layout),
) -> Result<(CudaStorage, Shape)> {
    dispatch!(op, out, forward_t(op, rows, d, eps, x, w))
}

fn forward_t<T: Io>(
    op: &str,
    rows: usize,
    d: usize,
    eps: f64,
    (x, lx): (&CudaStorage, &Layout),
    (w, lw): (&CudaStorage, &Layout),
) -> Result<(CudaStorage, Shape)> {
    let dev = device(x);
    let (xv, wv) = (view(op, "x", x, lx)?, view(op, "weight", w, lw)?);
    // SAFETY: one warp per row writes every element of its row.
    let y = unsafe { dev.alloc::<T>(rows * d)? };
    let func = dev.get_or_load_custom_func(&format!("rms_norm_fwd_{}", T::SUFFIX), MODULE, ptx::RMS_NORM)?;
    let (ri, di, e) = (rows as i32, d as i32, eps as f32);
    let mut args = func.builder();
    args.arg(&xv).arg(&wv).arg(&y).arg(&ri).arg(&di).arg(&e);
    // SAFETY: argument types and order match the kernel's signature.
    unsafe { args.launch(row_launch(rows)) }.w()?;
    Ok((CudaStorage::wrap_cuda_slice(y, dev), (rows, d).into()))
}

/// `[dx, dw]` from contiguous CUDA tensors `x (rows, d)`, `w (d)` (f32) and `g (rows, d)` (f32
/// or bf16); `add` (f32, `(rows, d)`) is added to dx in the same kernel, and with `copy` the
/// kernel also writes dx in bf16.
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward(
    op: &str,
    rows: usize,
    d: usize,
    eps: f64,
    x: &Tensor,
    w: &Tensor,
    g: &Tensor,
    add: Option<&Tensor>,
    copy: bool,
) -> Result<([Tensor; 2], Option<Tensor>)> {
    dispatch!(op, g.dtype(), backward_t(op, rows, d, eps, x, w, g, add, copy))
}

#[allow(clippy::too_many_arguments)]
fn backward_t<T: Io>(
    op: &str,
    rows: usize,
    d: usize,
    eps: f64,
    x: &Tensor,
    w: &Tensor,
    g: &Tensor,
    add: Option<&Tensor>,
    copy: bool,
) -> Result<([Tensor; 2], Option<Tensor>)> {
    let sfx = T::SUFFIX;
    let (xs, lx) = x.storage_and_layout();
    let (ws, lw) = w.storage_and_layout();
    let (gs, lg) = g.storage_and_layout();
    let (xs, ws, gs) = (cuda_storage(op, "x", &xs)?, cuda_storage(op, "weight", &ws)?, cuda_storage(op, "grad", &gs)?);
    let dev = device(xs);
    let (xv, wv, gv) = (view(op, "x", xs, lx)?, view(op, "weight", ws, lw)?, view_of::<T>(op, "grad", gs, lg)?);
    let (ri, di, e) = (rows as i32, d as i32, eps as f32);

    // SAFETY (both allocations): the kernel writes every row of dx and every entry of inv_rms.
    let dx = unsafe { dev.alloc::<f32>(rows * d)? };
    let inv_rms = unsafe { dev.alloc::<f32>(rows)? };
    // Without `add` the kernel is given x in its place and does not read it.
    let add_guard = add.map(|t| t.storage_and_layout());
    let addv = match (&add_guard, add) {
        (Some((s, l)), Some(t)) => {
            if t.dims() != [rows, d] {
                bail!("{op}: `add` has shape {:?}, expected [{rows}, {d}]", t.dims())
            }
            view(op, "add", cuda_storage(op, "add", s)?, l)?
        }
        _ => view(op, "x", xs, lx)?,
    };
    let has_add = i32::from(add.is_some());
    // SAFETY: with `copy` the kernel writes every element (as dx's).
    let dx_lo = if copy { Some(unsafe { dev.alloc::<half::bf16>(rows * d)? }) } else { None };
    let null: u64 = 0; // no copy: a null pointer
    let func = dev.get_or_load_custom_func(&format!("rms_norm_bwd_dx_{sfx}"), MODULE, ptx::RMS_NORM)?;
    let mut args = func.builder();
    args.arg(&xv).arg(&wv).arg(&gv).arg(&addv).arg(&has_add).arg(&dx);
    match &dx_lo {
        Some(lo) => args.arg(lo),
        None => args.arg(&null),
    };
    args.arg(&inv_rms).arg(&ri).arg(&di).arg(&e);
    // SAFETY: argument types and order match the kernel's signature.
    unsafe { args.launch(row_launch(rows)) }.w()?;

    let strips = rows.div_ceil(STRIP_ROWS);
    // SAFETY: one thread per (strip, column) writes every partial.
    let dw_part = unsafe { dev.alloc::<f32>(strips * d)? };
    let func = dev.get_or_load_custom_func(&format!("rms_norm_bwd_dw_{sfx}"), MODULE, ptx::RMS_NORM)?;
    let cfg = LaunchConfig {
        grid_dim: (d.div_ceil(128) as u32, strips as u32, 1),
        block_dim: (128, 1, 1),
        shared_mem_bytes: 0,
    };
    let sr = STRIP_ROWS as i32;
    let mut args = func.builder();
    args.arg(&xv).arg(&gv).arg(&inv_rms).arg(&dw_part).arg(&ri).arg(&di).arg(&sr);
    // SAFETY: as above.
    unsafe { args.launch(cfg) }.w()?;

    let dx = tensor(dx, &dev, (rows, d));
    let dw = tensor(sum_partials(&dev, &dw_part, (1, strips, d))?, &dev, d); // (d,)
    Ok(([dx, dw], dx_lo.map(|lo| tensor(lo, &dev, (rows, d)))))
}
