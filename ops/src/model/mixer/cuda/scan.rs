//! Launches `ops/kernels/mixer_scan.cu`: the scan forward and its backward (whole or deferred).

use super::conv::conv_input_grads;
use super::{check_k, ScanShare};
use crate::model::mixer::scan_layout::ScanKernels;
use crate::model::mixer::MixerDims;
use crate::util::cuda_util::{cuda_storage, device, dispatch, ptx, sum_partials, tensor, view, view_of, Io};
use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::sys::CUfunction_attribute;
use candle_core::cuda_backend::cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::{CudaDevice, CudaStorage, WrapErr};
use candle_core::{Layout, Result, Tensor};

const SCAN_MODULE: &str = "mamba_mixer_scan";

/// The scan's forward; with `u_in` (the conv's output, xz's dtype) the kernel reads u from it
/// instead of recomputing the conv, and also returns the states at every segment start of the
/// backward (f32, `ScanKernels::states_len`) for [`scan_backward_deferred`].
pub(crate) fn scan_forward(
    op: &str,
    dims: &MixerDims,
    xz: (&CudaStorage, &Layout),
    u_in: Option<(&CudaStorage, &Layout)>,
    delta: (&CudaStorage, &Layout),
    small: (&CudaStorage, &Layout),
) -> Result<(CudaStorage, Option<Tensor>)> {
    check_k(op, dims)?;
    dispatch!(op, xz.0.dtype(), scan_forward_t(op, dims, xz, u_in, delta, small))
}

fn scan_forward_t<T: Io>(
    op: &str,
    dims: &MixerDims,
    (xz, lxz): (&CudaStorage, &Layout),
    u_in: Option<(&CudaStorage, &Layout)>,
    (delta, ld): (&CudaStorage, &Layout),
    (small, ls): (&CudaStorage, &Layout),
) -> Result<(CudaStorage, Option<Tensor>)> {
    let dev = device(xz);
    let kernels = ScanKernels::choose(op, dims, &dev)?;
    let (xzv, dv, sv) =
        (view_of::<T>(op, "xz", xz, lxz)?, view_of::<T>(op, "delta", delta, ld)?, view(op, "small", small, ls)?);
    // Without u_in the kernel reads no u: xz stands in for the argument.
    let (uv, pass) = match u_in {
        Some((u, lu)) => (view_of::<T>(op, "u", u, lu)?, "fwd_u"),
        None => (view_of::<T>(op, "xz", xz, lxz)?, "fwd"),
    };
    let [o_bc, o_p, o_w, o_cb, end] = dims.small_offsets();
    let (bcv, pv, wv, cbv) = (sv.slice(o_bc..o_p), sv.slice(o_p..o_w), sv.slice(o_w..o_cb), sv.slice(o_cb..end));
    // SAFETY: each block writes every (step, channel) of its channels, chunk by chunk.
    let out = unsafe { dev.alloc::<T>(dims.b * dims.l * dims.d)? };
    let states_shape = kernels.states_shape(dims);
    // SAFETY: the `_u` kernel writes the states of every (batch, segment, channel).
    let states = match u_in {
        Some(_) => Some(unsafe { dev.alloc::<f32>(states_shape.elem_count())? }),
        None => None,
    };
    let func = dev.get_or_load_custom_func(&kernels.name(pass, T::SUFFIX), SCAN_MODULE, ptx::MIXER_SCAN)?;
    let cfg = kernels.launch(dims);
    let (l, d, n, k) = (dims.l as i32, dims.d as i32, dims.n as i32, dims.k as i32);
    let mut args = func.builder();
    args.arg(&xzv).arg(&uv).arg(&dv).arg(&bcv).arg(&pv).arg(&wv).arg(&cbv).arg(&out);
    // Without u_in the kernel never touches the states: out stands in for the argument.
    match &states {
        Some(s) => args.arg(s),
        None => args.arg(&out),
    };
    args.arg(&l).arg(&d).arg(&n).arg(&k);
    // SAFETY: argument types and order match the kernel's signature.
    unsafe { args.launch(cfg) }.w()?;
    let states = states.map(|s| tensor(s, &dev, states_shape));
    Ok((CudaStorage::wrap_cuda_slice(out, dev), states))
}

/// Gradients of `mixer_scan` for `(xz, delta, small)`.
pub(crate) fn scan_backward(
    op: &str,
    dims: &MixerDims,
    xz: &Tensor,
    delta: &Tensor,
    small: &Tensor,
    g: &Tensor,
) -> Result<[Tensor; 3]> {
    check_k(op, dims)?;
    dispatch!(op, xz.dtype(), scan_backward_t(op, dims, xz, delta, small, g))
}

fn scan_backward_t<T: Io>(
    op: &str,
    dims: &MixerDims,
    xz: &Tensor,
    delta: &Tensor,
    small: &Tensor,
    g: &Tensor,
) -> Result<[Tensor; 3]> {
    let (mut o, dev) = scan_backward_core::<T>(op, dims, xz, None, delta, small, g)?;
    let (xzs, lxz) = xz.storage_and_layout();
    let (ss, ls) = small.storage_and_layout();
    let (xzv, sv) = (
        view_of::<T>(op, "xz", cuda_storage(op, "xz", &xzs)?, lxz)?,
        view(op, "small", cuda_storage(op, "small", &ss)?, ls)?,
    );
    let [_, _, o_w, o_cb, _] = dims.small_offsets();
    let (dw, db) = conv_input_grads::<T>(dims, &dev, &xzv, &sv.slice(o_w..o_cb), &o.dpre, &mut o.dxz, false)?;
    let dsmall = Tensor::cat(&[o.dbc.flatten_all()?, o.dp.flatten_all()?, dw.flatten_all()?, db], 0)?;
    Ok([tensor(o.dxz, &dev, dims.act_shape(2 * dims.d)), tensor(o.ddelta, &dev, dims.act_shape(dims.d)), dsmall])
}

/// The scan's backward reading u from `u` (the conv's output) and without its conv part:
/// `(share, ddelta, dbc (b, l, 2n), dp (d, n + 2))`, the share holding dL/du; the conv's input
/// and weight gradients are left to [`conv_backward_with`]. `(u, states)`: the conv's output and
/// what [`scan_forward`] returned with it.
pub(crate) fn scan_backward_deferred(
    op: &str,
    dims: &MixerDims,
    xz: &Tensor,
    saved: (&Tensor, &Tensor),
    delta: &Tensor,
    small: &Tensor,
    g: &Tensor,
) -> Result<(ScanShare, [Tensor; 3])> {
    check_k(op, dims)?;
    dispatch!(op, xz.dtype(), scan_backward_deferred_t(op, dims, xz, saved, delta, small, g))
}

fn scan_backward_deferred_t<T: Io>(
    op: &str,
    dims: &MixerDims,
    xz: &Tensor,
    saved: (&Tensor, &Tensor),
    delta: &Tensor,
    small: &Tensor,
    g: &Tensor,
) -> Result<(ScanShare, [Tensor; 3])> {
    let (o, dev) = scan_backward_core::<T>(op, dims, xz, Some(saved), delta, small, g)?;
    let share = ScanShare {
        du: CudaStorage::wrap_cuda_slice(o.dpre, dev.clone()),
        dxz: CudaStorage::wrap_cuda_slice(o.dxz, dev.clone()),
    };
    Ok((share, [tensor(o.ddelta, &dev, dims.act_shape(dims.d)), o.dbc, o.dp]))
}

/// The scan kernel's results: dxz with only its z half written, ddelta, dpre (the conv
/// pre-activation's gradient through the scan; dL/du when u came in), and the summed dB | dC and
/// per-channel partials.
struct ScanGrads<T> {
    dxz: CudaSlice<T>,
    ddelta: CudaSlice<T>,
    dpre: CudaSlice<f32>,
    dbc: Tensor,
    dp: Tensor,
}

/// `u`: the conv's output and the forward's segment states (`_u` kernel), or None (the kernel
/// recomputes u and runs its pass 0 into scratch).
fn scan_backward_core<T: Io>(
    op: &str,
    dims: &MixerDims,
    xz: &Tensor,
    u: Option<(&Tensor, &Tensor)>,
    delta: &Tensor,
    small: &Tensor,
    g: &Tensor,
) -> Result<(ScanGrads<T>, CudaDevice)> {
    let MixerDims { b: bs, l, d, n, .. } = *dims;
    let (xzs, lxz) = xz.storage_and_layout();
    let (ds, ld) = delta.storage_and_layout();
    let (ss, ls) = small.storage_and_layout();
    let (gs, lg) = g.storage_and_layout();
    let (xzs, ds, ss, gs) = (
        cuda_storage(op, "xz", &xzs)?,
        cuda_storage(op, "delta", &ds)?,
        cuda_storage(op, "small", &ss)?,
        cuda_storage(op, "grad", &gs)?,
    );
    let dev = device(xzs);
    // With the forward's states, the layout it used (their shape says which); else a fresh choice.
    let kernels = match u {
        Some((_, states)) => ScanKernels::of_states(op, dims, states.shape())?,
        None => ScanKernels::choose(op, dims, &dev)?,
    };
    let smem = kernels.bwd_shared_bytes();
    let cfg = LaunchConfig { shared_mem_bytes: smem as u32, ..kernels.launch(dims) };
    let (xzv, dv, gv) =
        (view_of::<T>(op, "xz", xzs, lxz)?, view_of::<T>(op, "delta", ds, ld)?, view_of::<T>(op, "grad", gs, lg)?);
    let sv = view(op, "small", ss, ls)?;
    let [o_bc, o_p, o_w, o_cb, end] = dims.small_offsets();
    let (bcv, pv, wv, cbv) = (sv.slice(o_bc..o_p), sv.slice(o_p..o_w), sv.slice(o_w..o_cb), sv.slice(o_cb..end));
    // Without u the kernel reads no u: xz stands in for the argument.
    let u_guard = u.map(|(t, states)| (t.storage_and_layout(), states.storage_and_layout()));
    let (uv, pass) = match &u_guard {
        Some(((us, lu), _)) => (view_of::<T>(op, "u", cuda_storage(op, "u", us)?, lu)?, "bwd_u"),
        None => (view_of::<T>(op, "xz", xzs, lxz)?, "bwd"),
    };
    let gx = cfg.grid_dim.0 as usize;
    // SAFETY: the scan kernel writes the z half of dxz, all of ddelta and dpre, every
    // (batch, block, t, j) of dbc_part and every (batch, channel) row of dp_part; the conv's dx
    // kernel writes the x half of dxz afterwards (`scan_backward_t`, `conv_backward_with`);
    // `scratch` (the states without u) is written by the kernel's pass 0 before it is read.
    let dxz = unsafe { dev.alloc::<T>(bs * l * 2 * d)? };
    let ddelta = unsafe { dev.alloc::<T>(bs * l * d)? };
    let dpre = unsafe { dev.alloc::<f32>(bs * l * d)? };
    let dbc_part = unsafe { dev.alloc::<f32>(bs * gx * l * 2 * n)? };
    let dp_part = unsafe { dev.alloc::<f32>(bs * d * (n + 2))? };
    let scratch;
    let states = match &u_guard {
        Some((_, (ss, ls))) => view(op, "saved states", cuda_storage(op, "saved states", ss)?, ls)?,
        None => {
            scratch = unsafe { dev.alloc::<f32>(kernels.states_shape(dims).elem_count())? };
            scratch.slice(..)
        }
    };
    let func = dev.get_or_load_custom_func(&kernels.name(pass, T::SUFFIX), SCAN_MODULE, ptx::MIXER_SCAN)?;
    // More than 48 KiB of dynamic shared memory must be allowed per function.
    func.set_attribute(CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, smem as i32).w()?;
    let (li, di, ni, ki) = (l as i32, d as i32, n as i32, dims.k as i32);
    let mut args = func.builder();
    args.arg(&xzv).arg(&uv).arg(&dv).arg(&bcv).arg(&pv).arg(&wv).arg(&cbv).arg(&gv);
    args.arg(&dxz).arg(&ddelta).arg(&dpre).arg(&dbc_part).arg(&dp_part).arg(&states);
    args.arg(&li).arg(&di).arg(&ni).arg(&ki);
    // SAFETY: argument types and order match the kernel's signature.
    unsafe { args.launch(cfg) }.w()?;
    let dbc = tensor(sum_partials(&dev, &dbc_part, (bs, gx, l * 2 * n))?, &dev, (bs, l, 2 * n));
    let dp = tensor(sum_partials(&dev, &dp_part, (1, bs, d * (n + 2)))?, &dev, (d, n + 2));
    Ok((ScanGrads { dxz, ddelta, dpre, dbc, dp }, dev))
}
