//! The mixer ops' backward as plain functions, for a model that runs its own backward pass
//! (`crate::backward`). The scan reads its input u from the conv's output (as the forward
//! `crate::mixer_scan_saving` does) instead of recomputing the conv. The backward is split at the
//! conv: [`scan`] leaves the conv's part of its gradient (dL/du) in a [`ConvShare`], and [`conv`] then runs the conv's backward once for both uses of the conv's
//! output (x_proj's input, through `grad`, and the scan's `u`, through the share) and writes the
//! whole `dxz`. Under candle's autograd the conv's backward kernels run twice (once inside the
//! scan's backward) and the two full-size `dxz` are added into a third tensor.

#[cfg(feature = "cuda")]
use super::cuda;
use super::tensors::ScanTensors;
use super::{conv as conv_op, output_grad, scan as scan_op, MixerDims};
use candle_core::{bail, DType, Result, Tensor, D};

/// The scan's gradients, each in its input's dtype and shape (`b` and `c` possibly column views
/// of one tensor), and what the conv's backward needs of it.
pub struct ScanGrads {
    pub delta: Tensor,
    pub b: Tensor,
    pub c: Tensor,
    pub a_log: Tensor,
    pub d_skip: Tensor,
    pub delta_bias: Tensor,
    /// Hand it to [`crate::backward::mixer_conv`].
    pub conv: ConvShare,
}

/// What the scan's forward ([`crate::mixer_scan_saving`]) keeps for its backward
/// ([`crate::backward::mixer_scan`]), on the GPU: the states at every 16-step segment start
/// of the backward (f32; 100 MB per layer for the 130m model at micro-batch 16), so that the
/// backward need not re-run the recurrence over the whole sequence first, and the packed B, C and
/// per-channel parameters the forward read, so that the backward does not pack them again (about
/// ten small copy kernels per layer). Nothing on the CPU. Opaque. The default (empty) one serves
/// CPU tensors only: the GPU backward reports it missing.
#[derive(Default)]
pub struct ScanSaved {
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    pub(crate) states: Option<Tensor>,
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    pub(crate) small: Option<Tensor>,
}

/// The scan's share of the conv's backward: the gradient it sends into the conv's output, and
/// the z half of `dxz`. Opaque; consumed by the conv's backward.
pub struct ConvShare(Share);

enum Share {
    /// dL/du (u the conv's output) and dL/dz, in the compute dtype.
    Cpu { du: Tensor, dz: Tensor },
    /// dL/du and a dxz with its z half written (boxed: two device storages).
    #[cfg(feature = "cuda")]
    Cuda(Box<cuda::ScanShare>),
}

/// See [`crate::backward::mixer_scan`]. `saved` serves the GPU only: its states, and its packed
/// small tensor in place of packing `b`, `c` and the parameters again.
#[cfg_attr(not(feature = "cuda"), allow(unused_variables))]
pub(crate) fn scan(t: &ScanTensors, u: &Tensor, grad: &Tensor, saved: &ScanSaved) -> Result<ScanGrads> {
    const NAME: &str = "mixer_scan backward";
    let xz = &t.xz;
    // On the GPU the forward's packing of B, C and the parameters (the same tensors) is reused.
    #[cfg(feature = "cuda")]
    let packed = saved.small.as_ref().filter(|_| xz.device().is_cuda());
    #[cfg(not(feature = "cuda"))]
    let packed = None;
    let (op, [xzc, deltac, small]) = scan_op::prepare(t, packed)?;
    let dims = op.dims;
    let u = op.check_u(u, &xzc)?;
    let g = output_grad(NAME, &dims, grad, xz.dtype())?; // (b·l, d)
    let p = &t.params;
    let inputs = [&t.b, &t.c, &p.a_log, &p.d_skip, &p.delta_bias];
    #[cfg(feature = "cuda")]
    if xz.device().is_cuda() {
        let Some(states) = &saved.states else {
            bail!("{NAME}: no saved states: pass what mixer_scan_saving returned for this xz on this device")
        };
        let (share, [ddelta, dbc, dp]) =
            cuda::scan_backward_deferred(NAME, &dims, &xzc, (&u, states), &deltac, &small, &g)?;
        let dbc = dbc.reshape(dims.act_shape(2 * dims.n))?;
        return split_grads(&dims, inputs, ddelta, dbc, dp, Share::Cuda(Box::new(share)));
    }
    let [du, dz, ddelta, dsmall] = match small.dtype() {
        DType::F64 => op.cpu_bwd_deferred::<f64>(&xzc, &u, &deltac, &small, &g)?,
        _ => op.cpu_bwd_deferred::<f32>(&xzc, &u, &deltac, &small, &g)?,
    };
    let [o_bc, o_p, o_w, _, _] = dims.small_offsets();
    let dbc = dsmall.narrow(0, o_bc, o_p - o_bc)?.reshape(dims.act_shape(2 * dims.n))?;
    let dp = dsmall.narrow(0, o_p, o_w - o_p)?.reshape((dims.d, dims.n + 2))?;
    split_grads(&dims, inputs, ddelta, dbc, dp, Share::Cpu { du, dz })
}

/// Unpacks `dbc: (.., 2n)` and `dp = [dA_log | dD | ddelta_bias]: (d, n + 2)` into the inputs'
/// gradients, each in its input's dtype. dB and dC are column views of one converted `dbc` when
/// B and C share a dtype (one launch; their consumer, x_proj's backward, concatenates them anyway).
fn split_grads(
    dims: &MixerDims,
    inputs: [&Tensor; 5],
    ddelta: Tensor,
    dbc: Tensor,
    dp: Tensor,
    share: Share,
) -> Result<ScanGrads> {
    let [b, c, a_log, d_skip, delta_bias] = inputs;
    let n = dims.n;
    let (db, dc) =
        if b.dtype() == c.dtype() && b.dims() == c.dims() && dbc.dims()[..dbc.rank() - 1] == b.dims()[..b.rank() - 1] {
            let dbc = dbc.to_dtype(b.dtype())?;
            (dbc.narrow(D::Minus1, 0, n)?, dbc.narrow(D::Minus1, n, n)?)
        } else {
            (columns(&dbc, 0, n, b)?, columns(&dbc, n, n, c)?)
        };
    let [da_log, dd_skip, ddelta_bias] = split_params(&dp, n, [a_log, d_skip, delta_bias])?;
    Ok(ScanGrads {
        delta: ddelta,
        b: db,
        c: dc,
        a_log: da_log,
        d_skip: dd_skip,
        delta_bias: ddelta_bias,
        conv: ConvShare(share),
    })
}

/// `dp = [dA_log | dD | ddelta_bias]: (d, n + 2)` as the three parameters' gradients, contiguous,
/// each in its parameter's shape and dtype: on the GPU, for f32 parameters, one launch
/// (`crate::pack`: the results are views of one buffer) where the narrow copies took three.
fn split_params(dp: &Tensor, n: usize, [a_log, d_skip, delta_bias]: [&Tensor; 3]) -> Result<[Tensor; 3]> {
    #[cfg(feature = "cuda")]
    if dp.device().is_cuda()
        && [a_log, d_skip, delta_bias].iter().all(|t| t.dtype() == DType::F32)
        && dp.dtype() == DType::F32
    {
        use crate::util::pack::Part;
        let d = dp.dim(0)?;
        let cols = |start, len| dp.narrow(D::Minus1, start, len);
        let (pa, pd, pb) = (cols(0, n)?, cols(n, 1)?, cols(n + 1, 1)?);
        let parts = [
            Part { t: &pa, dst_offset: 0, dst_row_stride: n },
            Part { t: &pd, dst_offset: d * n, dst_row_stride: 1 },
            Part { t: &pb, dst_offset: d * n + d, dst_row_stride: 1 },
        ];
        let all = crate::util::pack::pack("mixer_scan backward", &parts, d * (n + 2), DType::F32)?;
        return Ok([
            all.narrow(0, 0, d * n)?.reshape(a_log.shape())?,
            all.narrow(0, d * n, d)?.reshape(d_skip.shape())?,
            all.narrow(0, d * n + d, d)?.reshape(delta_bias.shape())?,
        ]);
    }
    Ok([columns(dp, 0, n, a_log)?, columns(dp, n, 1, d_skip)?, columns(dp, n + 1, 1, delta_bias)?])
}

/// Columns `[start, start + len)` of `t`'s last dimension as a new contiguous tensor in `like`'s
/// shape and dtype.
fn columns(t: &Tensor, start: usize, len: usize, like: &Tensor) -> Result<Tensor> {
    t.narrow(D::Minus1, start, len)?.contiguous()?.reshape(like.shape())?.to_dtype(like.dtype())
}

/// See [`crate::backward::mixer_conv`]: `(dxz, dweight, dbias)`.
pub(crate) fn conv(
    xz: &Tensor,
    seq_len: Option<usize>,
    weight: &Tensor,
    bias: &Tensor,
    grad: &Tensor,
    share: ConvShare,
) -> Result<[Tensor; 3]> {
    const NAME: &str = "mixer_conv backward";
    let (op, [xzc, w, cb]) = conv_op::prepare(xz, seq_len, weight, bias)?;
    let g = output_grad(NAME, &op.dims, grad, xz.dtype())?; // (b·l, d)
    let [dxz, dw, db] = match share.0 {
        #[cfg(feature = "cuda")]
        Share::Cuda(s) => {
            if !xz.device().is_cuda() {
                bail!("{NAME}: the scan's share is on the GPU, xz is not")
            }
            cuda::conv_backward_with(NAME, &op.dims, &xzc, &w, &cb, &g, *s)?
        }
        Share::Cpu { du, dz } => {
            if !xz.device().is_cpu() {
                bail!("{NAME}: the scan's share is on the CPU, xz is not")
            }
            // Both uses of the conv's output: x_proj's gradient and the scan's.
            let g = (g.to_dtype(du.dtype())? + du)?;
            match w.dtype() {
                DType::F64 => op.cpu_bwd_typed::<f64>(&xzc, &w, &cb, &g, Some(&dz))?,
                _ => op.cpu_bwd_typed::<f32>(&xzc, &w, &cb, &g, Some(&dz))?,
            }
        }
    };
    Ok([dxz, dw.to_dtype(weight.dtype())?, db.to_dtype(bias.dtype())?])
}
