//! GPU mixer ops: launches `ops/kernels/mixer_conv.cu` and `mixer_scan.cu` with the IO type of
//! `xz` (bf16 or f32).
//! Backward partials (dB, dC per block, per-channel parameters per batch element, conv weights
//! per strip of rows) are summed in a fixed order by `kernels/partials.cu`, so results are
//! deterministic.

use super::scan_layout::ScanKernels;
use super::MixerDims;
use crate::util::cuda_util::{cuda_storage, device, dispatch, ptx, sum_partials, tensor, tensor_of, view, view_of, Io};
use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::sys::CUfunction_attribute;
use candle_core::cuda_backend::cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::{CudaDevice, CudaStorage, WrapErr};
use candle_core::{bail, Layout, Result, Tensor};

const CONV_MODULE: &str = "mamba_mixer_conv";
const SCAN_MODULE: &str = "mamba_mixer_scan";
/// Rows of (batch, time) each conv weight-gradient thread sums before writing its partial (64:
/// enough blocks to fill the GPU at micro-batch 16; 256 left it a third idle).
const DW_ROWS: usize = 64;

fn check_k(op: &str, dims: &MixerDims) -> Result<()> {
    if dims.k > 8 {
        bail!("{op}: the CUDA kernels support conv widths up to 8, got {}", dims.k)
    }
    Ok(())
}

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
fn conv_input_grads<T: Io>(
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
    let dwb = tensor(sum_partials(dev, &dw_part, (1, strips, dims.d * (dims.k + 1)))?, dev, (dims.d, dims.k + 1)); // (d, k + 1)
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

/// What [`scan_backward_deferred`] leaves for the conv: `du`, the scan's share of the gradient of
/// the conv's output (f32, `(b·l, d)`), and `dxz` with its z half written.
pub(crate) struct ScanShare {
    pub du: CudaStorage,
    pub dxz: CudaStorage,
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
    // Without a scan share: fresh buffers (SAFETY: the dpre kernel writes every element, the dx
    // kernel both halves of every row with zero_z). With one: the dpre kernel adds g to its du
    // and turns the sum into dL/d(pre) in place, and the dx kernel writes the x half of its dxz.
    let (mut dpre, mut dxz, with_share) = match share {
        Some(ScanShare { du, dxz }) => (du, dxz, 1i32),
        None => unsafe {
            (
                CudaStorage::wrap_cuda_slice(dev.alloc::<f32>(n)?, dev.clone()),
                CudaStorage::wrap_cuda_slice(dev.alloc::<T>(2 * n)?, dev.clone()),
                0i32,
            )
        },
    };
    if dpre.as_cuda_slice::<f32>()?.len() != n || dxz.as_cuda_slice::<T>()?.len() != 2 * n {
        bail!("{op}: internal error: the scan's share does not match the conv's size")
    }
    let dpre_slice = dpre.as_cuda_slice_mut::<f32>()?;
    let func = dev.get_or_load_custom_func(
        &format!("mixer_conv_dpre_k{}_{}", conv_window(dims.k), T::SUFFIX),
        CONV_MODULE,
        ptx::MIXER_CONV,
    )?;
    let mut args = func.builder();
    args.arg(&xzv).arg(&wv).arg(&cbv).arg(&gv).arg(&*dpre_slice).arg(&l).arg(&d).arg(&k).arg(&with_share);
    // SAFETY: argument types and order match the kernel's signature.
    unsafe { args.launch(per_element(dims)) }.w()?;
    let (dw, db) =
        conv_input_grads::<T>(dims, &dev, &xzv, &wv, &*dpre_slice, dxz.as_cuda_slice_mut::<T>()?, with_share == 0)?;
    Ok([tensor_of(dxz, dims.act_shape(2 * dims.d)), dw, db])
}

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
