//! `mixer_scan`: the selective scan with D skip and silu(z) gate, reading `u = silu(conv1d(x) +
//! conv_b)` (recomputed) and `z` from `xz = [x | z]`, as a `CustomOp3` over `(xz, delta, small)`;
//! `small` packs B, C and the per-channel parameters (layout in the `mixer` module docs).
//! Gradients: `xz` (both halves: the conv's input gradient and the gate's) and `delta` in the IO
//! dtype, `small` in the compute dtype.

use super::backward::ScanSaved;
use super::cpu::conv as conv_cpu;
use super::cpu::scan as scan_cpu;
use super::tensors::{ChannelParams, ScanTensors};
use super::{dtypes, join_xz, load, output_grad, split_xz, store, xz_dims, MixerDims};
use crate::util::cpu_storage::as_cpu;
use crate::util::real::Real;
use crate::util::shape_check::{expect_shape, state_size};
use candle_core::backend::BackendStorage;
use candle_core::op::BackpropOp;
use candle_core::{bail, CpuStorage, CustomOp3, DType, Layout, Result, Shape, Storage, Tensor, D};
use std::sync::Arc;

const NAME: &str = "mixer_scan";

/// See [`crate::mixer_scan`].
pub(crate) fn mixer_scan(t: &ScanTensors) -> Result<Tensor> {
    let (op, [xz, delta, small]) = prepare(t, None)?;
    let op: Arc<Box<dyn CustomOp3 + Send + Sync>> = Arc::new(Box::new(op));
    xz.apply_op3_arc(&delta, &small, op) // (b, l, d)
}

/// Checks the arguments and returns the op with its inputs `(xz, delta, small)`: the first two
/// contiguous, the third packed (layout in the `mixer` module docs), or `packed` when given (the
/// small tensor an earlier `prepare` of the same tensors returned; only its length and dtype are
/// checked) instead of packing `b`, `c` and the parameters again.
pub(crate) fn prepare(t: &ScanTensors, packed: Option<&Tensor>) -> Result<(MixerScan, [Tensor; 3])> {
    let ScanTensors { xz, seq_len, delta, b, c, params } = t;
    let ChannelParams { conv_w, conv_b, a_log, d_skip, delta_bias } = params;
    let mut dims = xz_dims(NAME, xz, *seq_len, conv_w)?;
    let d = dims.d;
    let n = state_size(NAME, a_log, d)?;
    dims.n = n;
    let expect = |name: &str, t: &Tensor, want: &[usize]| expect_shape(NAME, name, t, want);
    expect("delta", delta, dims.act_shape(d).dims())?;
    expect("b", b, dims.act_shape(n).dims())?;
    expect("c", c, dims.act_shape(n).dims())?;
    expect("conv_b", conv_b, &[d])?;
    expect("d_skip", d_skip, &[d])?;
    expect("delta_bias", delta_bias, &[d])?;
    let (io, compute) = dtypes(NAME, xz)?;
    if delta.dtype() != io {
        bail!("{NAME}: `delta` must have xz's dtype {io:?}, got {:?}", delta.dtype())
    }
    if let Some(small) = packed {
        let end = dims.small_offsets()[4];
        if small.dims() != [end] || small.dtype() != compute {
            bail!("{NAME}: the saved packed inputs are {:?} {:?}, this scan needs ({end},) {compute:?}: pass the forward's own", small.dims(), small.dtype())
        }
        return Ok((MixerScan { dims }, [xz.contiguous()?, delta.contiguous()?, small.clone()]));
    }
    // Without autograd history (the hand-written backward's forward) one launch on the GPU; the
    // candle ops below keep the graph to b, c and the parameters for autograd.
    #[cfg(feature = "cuda")]
    if xz.device().is_cuda() && compute == DType::F32 && !t.small_parts().iter().any(|t| t.track_op()) {
        return Ok((MixerScan { dims }, [xz.contiguous()?, delta.contiguous()?, pack_small(&dims, t.small_parts())?]));
    }
    let flat = |t: &Tensor| -> Result<Tensor> { t.to_dtype(compute)?.flatten_all() };
    let bc = Tensor::cat(&[b.to_dtype(compute)?, c.to_dtype(compute)?], D::Minus1)?; // (b, l, 2n)
    let p = Tensor::cat(
        &[
            a_log.to_dtype(compute)?,
            d_skip.to_dtype(compute)?.unsqueeze(1)?,
            delta_bias.to_dtype(compute)?.unsqueeze(1)?,
        ],
        1,
    )?; // (d, n + 2)
    let small = Tensor::cat(&[bc.flatten_all()?, p.flatten_all()?, flat(conv_w)?, flat(conv_b)?], 0)?;
    Ok((MixerScan { dims }, [xz.contiguous()?, delta.contiguous()?, small]))
}

/// The packed small inputs on the GPU (`small_offsets`): B | C per row, then `[A_log | D |
/// delta_bias]` per channel, the conv's weight and bias, f32, in one launch
/// ([`crate::pack`]) where the casts and concatenations below took about ten.
#[cfg(feature = "cuda")]
fn pack_small(dims: &MixerDims, [b, c, a_log, d_skip, delta_bias, conv_w, conv_b]: [&Tensor; 7]) -> Result<Tensor> {
    use crate::util::pack::Part;
    let (n, rows) = (dims.n, dims.b * dims.l);
    let [o_bc, o_p, o_w, o_cb, end] = dims.small_offsets();
    // (b·l, n): as given when 2-D (the model's column views of x_proj's output, rows r + 2n
    // apart), else flattened (a copy only for a strided 3-D view).
    let rows_of = |t: &Tensor| if t.rank() == 2 { Ok(t.clone()) } else { t.reshape((rows, n)) };
    let (b, c) = (rows_of(b)?, rows_of(c)?);
    let (d_skip, delta_bias) = (d_skip.unsqueeze(1)?, delta_bias.unsqueeze(1)?); // (d, 1)
    let part = |t, dst_offset, dst_row_stride| Part { t, dst_offset, dst_row_stride };
    let parts = [
        part(&b, o_bc, 2 * n),
        part(&c, o_bc + n, 2 * n),
        part(a_log, o_p, n + 2),
        part(&d_skip, o_p + n, n + 2),
        part(&delta_bias, o_p + n + 1, n + 2),
        part(conv_w, o_w, dims.k),
        part(conv_b, o_cb, 1),
    ];
    crate::util::pack::pack(NAME, &parts, end, DType::F32)
}

/// See [`crate::mixer_scan_saving`]: the scan reading u from `u` (the conv's output), no
/// autograd; also what its backward keeps (the GPU's segment states).
pub(crate) fn mixer_scan_saving(t: &ScanTensors, u: &Tensor) -> Result<(Tensor, ScanSaved)> {
    let (op, [xz, delta, small]) = prepare(&t.detach(), None)?;
    let u = op.check_u(u, &xz)?;
    let shape = op.dims.act_shape(op.dims.d);
    let ((xs, xl), (us, ul), (ds, dl), (ss, sl)) =
        (xz.storage_and_layout(), u.storage_and_layout(), delta.storage_and_layout(), small.storage_and_layout());
    #[cfg(feature = "cuda")]
    if xz.device().is_cuda() {
        use crate::util::cuda_util::cuda_storage as on_gpu;
        let (x, us, d, sm) = (
            on_gpu(NAME, "xz", &xs)?,
            on_gpu(NAME, "u", &us)?,
            on_gpu(NAME, "delta", &ds)?,
            on_gpu(NAME, "small", &ss)?,
        );
        let (y, states) = super::cuda::scan_forward(NAME, &op.dims, (x, xl), Some((us, ul)), (d, dl), (sm, sl))?;
        return Ok((crate::util::cuda_util::tensor_of(y, shape), ScanSaved { states, small: Some(small.clone()) }));
    }
    let (x, d, sm) = (
        (as_cpu(NAME, "xz", &xz, &xs)?, xl),
        (as_cpu(NAME, "delta", &delta, &ds)?, dl),
        (as_cpu(NAME, "small", &small, &ss)?, sl),
    );
    let us = as_cpu(NAME, "u", &u, &us)?;
    let y = match small.dtype() {
        DType::F64 => op.cpu_fwd_typed::<f64>(x, Some(load(NAME, "u", us, ul)?), d, sm)?,
        _ => op.cpu_fwd_typed::<f32>(x, Some(load(NAME, "u", us, ul)?), d, sm)?,
    };
    Ok((Tensor::from_storage(Storage::Cpu(y), shape, BackpropOp::none(), false), ScanSaved::default()))
}

/// A CPU tensor's values in the compute type `C`.
fn cpu_values<C: Real>(what: &str, t: &Tensor) -> Result<Vec<C>> {
    let (s, l) = t.storage_and_layout();
    load::<C>(NAME, what, as_cpu(NAME, what, t, &s)?, l)
}

pub(crate) struct MixerScan {
    pub dims: MixerDims,
}

/// `[du, ddelta, dz]`, the inputs and `dbc ++ dp` of [`MixerScan::cpu_scan_grads`].
type CpuScanGrads<C> = ([Vec<C>; 3], CpuInputs<C>, Vec<C>);

/// The CPU inputs in the compute type: the packed scan input `[u | delta | z]: (b, l, 3d)` with
/// `u` recomputed by the conv (or given), the conv input `x`, and the small tensor's parts.
struct CpuInputs<C> {
    x: Vec<C>,
    packed: Vec<C>,
    bc: Vec<C>,
    p: Vec<C>,
    w: Vec<C>,
    cb: Vec<C>,
}

impl MixerScan {
    /// `u` (the conv's output) checked against the op: xz's dtype, shape `(b·l, d)` / `(b, l, d)`;
    /// returned contiguous.
    pub(crate) fn check_u(&self, u: &Tensor, xz: &Tensor) -> Result<Tensor> {
        expect_shape(NAME, "u", u, self.dims.act_shape(self.dims.d).dims())?;
        if u.dtype() != xz.dtype() {
            bail!("{NAME}: `u` must have xz's dtype {:?}, got {:?}", xz.dtype(), u.dtype())
        }
        u.detach().contiguous()
    }

    fn cpu_inputs<C: Real>(
        &self,
        xz: (&CpuStorage, &Layout),
        u: Option<Vec<C>>,
        delta: (&CpuStorage, &Layout),
        small: (&CpuStorage, &Layout),
    ) -> Result<CpuInputs<C>> {
        let d = self.dims.d;
        let xz_v = load::<C>(NAME, "xz", xz.0, xz.1)?;
        let delta = load::<C>(NAME, "delta", delta.0, delta.1)?;
        let small = load::<C>(NAME, "small", small.0, small.1)?;
        let [o_bc, o_p, o_w, o_cb, end] = self.dims.small_offsets();
        if small.len() != end {
            bail!("{NAME}: internal error: packed small tensor has {} elements, expected {end}", small.len())
        }
        let (x, z) = split_xz(&xz_v, d);
        let (w, cb) = (small[o_w..o_cb].to_vec(), small[o_cb..end].to_vec());
        let u = match u {
            Some(u) => u,
            None => conv_cpu::forward(&self.dims.conv(), &x, &w, &cb),
        };
        let mut packed = Vec::with_capacity(3 * u.len());
        for ((ur, dr), zr) in u.chunks_exact(d).zip(delta.chunks_exact(d)).zip(z.chunks_exact(d)) {
            packed.extend_from_slice(ur);
            packed.extend_from_slice(dr);
            packed.extend_from_slice(zr);
        }
        Ok(CpuInputs { x, packed, bc: small[o_bc..o_p].to_vec(), p: small[o_p..o_w].to_vec(), w, cb })
    }

    /// The scan's output on the CPU in xz's dtype; u recomputed by the conv unless given.
    fn cpu_fwd_typed<C: Real>(
        &self,
        xz: (&CpuStorage, &Layout),
        u: Option<Vec<C>>,
        delta: (&CpuStorage, &Layout),
        small: (&CpuStorage, &Layout),
    ) -> Result<CpuStorage> {
        let inp = self.cpu_inputs::<C>(xz, u, delta, small)?;
        let y = scan_cpu::forward(&self.dims.scan(), &inp.packed, &inp.bc, &inp.p);
        store(NAME, &y, xz.0.dtype())
    }

    /// The scan's gradients on the CPU without the conv's part: `[du, ddelta, dz]` (b·l·d each,
    /// du = dL/du for u the conv's output) in the compute type, the inputs (for the conv) and the
    /// small tensor's gradients `dbc ++ dp`.
    fn cpu_scan_grads<C: Real>(
        &self,
        xz: &Tensor,
        u: Option<&Tensor>,
        delta: &Tensor,
        small: &Tensor,
        g: &Tensor,
    ) -> Result<CpuScanGrads<C>> {
        let u = u.map(|t| cpu_values::<C>("u", t)).transpose()?;
        let (xs, xl) = xz.storage_and_layout();
        let (ds, dl) = delta.storage_and_layout();
        let (ss, sl) = small.storage_and_layout();
        let (gs, gl) = g.storage_and_layout();
        let inp = self.cpu_inputs::<C>(
            (as_cpu(NAME, "xz", xz, &xs)?, xl),
            u,
            (as_cpu(NAME, "delta", delta, &ds)?, dl),
            (as_cpu(NAME, "small", small, &ss)?, sl),
        )?;
        let g = load::<C>(NAME, "grad", as_cpu(NAME, "grad", g, &gs)?, gl)?;
        let d = self.dims.d;
        let sg = scan_cpu::backward(&self.dims.scan(), &inp.packed, &inp.bc, &inp.p, &g);
        // sg.dx is [du | ddelta | dz] per row.
        let (mut du, mut ddelta, mut dz) = (Vec::new(), Vec::new(), Vec::new());
        for row in sg.dx.chunks_exact(3 * d) {
            du.extend_from_slice(&row[..d]);
            ddelta.extend_from_slice(&row[d..2 * d]);
            dz.extend_from_slice(&row[2 * d..]);
        }
        let mut dsmall = sg.dbc;
        dsmall.extend(sg.dp);
        Ok(([du, ddelta, dz], inp, dsmall))
    }

    fn cpu_bwd_typed<C: Real>(&self, xz: &Tensor, delta: &Tensor, small: &Tensor, g: &Tensor) -> Result<[Tensor; 3]> {
        let ([du, ddelta, dz], inp, mut dsmall) = self.cpu_scan_grads::<C>(xz, None, delta, small, g)?;
        let d = self.dims.d;
        // du flows on through the conv.
        let cg = conv_cpu::backward(&self.dims.conv(), &inp.x, &inp.w, &inp.cb, &du);
        let dev = xz.device();
        let dxz = Tensor::from_vec(join_xz(&cg.dx, &dz, d), self.dims.act_shape(2 * d), dev)?.to_dtype(xz.dtype())?;
        let ddelta = Tensor::from_vec(ddelta, self.dims.act_shape(d), dev)?.to_dtype(xz.dtype())?;
        dsmall.extend(cg.dw);
        dsmall.extend(cg.dbias);
        let n_small = dsmall.len();
        Ok([dxz, ddelta, Tensor::from_vec(dsmall, n_small, dev)?])
    }

    /// [`Self::cpu_scan_grads`] with u given, as tensors: `[du, dz, ddelta, dbc ++ dp]`; du and
    /// dz in the compute dtype, ddelta in xz's.
    pub(crate) fn cpu_bwd_deferred<C: Real>(
        &self,
        xz: &Tensor,
        u: &Tensor,
        delta: &Tensor,
        small: &Tensor,
        g: &Tensor,
    ) -> Result<[Tensor; 4]> {
        let ([du, ddelta, dz], _, dsmall) = self.cpu_scan_grads::<C>(xz, Some(u), delta, small, g)?;
        let (dev, shape) = (xz.device(), self.dims.act_shape(self.dims.d));
        let n_small = dsmall.len();
        Ok([
            Tensor::from_vec(du, shape.clone(), dev)?,
            Tensor::from_vec(dz, shape.clone(), dev)?,
            Tensor::from_vec(ddelta, shape, dev)?.to_dtype(xz.dtype())?,
            Tensor::from_vec(dsmall, n_small, dev)?,
        ])
    }
}

impl CustomOp3 for MixerScan {
    fn name(&self) -> &'static str {
        NAME
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let y = match s3 {
            CpuStorage::F64(_) => self.cpu_fwd_typed::<f64>((s1, l1), None, (s2, l2), (s3, l3))?,
            _ => self.cpu_fwd_typed::<f32>((s1, l1), None, (s2, l2), (s3, l3))?,
        };
        Ok((y, self.dims.act_shape(self.dims.d)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
        s3: &candle_core::CudaStorage,
        l3: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let (y, _) = super::cuda::scan_forward(NAME, &self.dims, (s1, l1), None, (s2, l2), (s3, l3))?;
        Ok((y, self.dims.act_shape(self.dims.d)))
    }

    fn bwd(
        &self,
        xz: &Tensor,
        delta: &Tensor,
        small: &Tensor,
        _y: &Tensor,
        grad_y: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let g = output_grad(NAME, &self.dims, grad_y, xz.dtype())?; // (b, l, d) or (b·l, d)
        #[cfg(feature = "cuda")]
        if xz.device().is_cuda() {
            let [dxz, ddelta, dsmall] = super::cuda::scan_backward(NAME, &self.dims, xz, delta, small, &g)?;
            return Ok((Some(dxz), Some(ddelta), Some(dsmall)));
        }
        let [dxz, ddelta, dsmall] = match small.dtype() {
            DType::F64 => self.cpu_bwd_typed::<f64>(xz, delta, small, &g)?,
            _ => self.cpu_bwd_typed::<f32>(xz, delta, small, &g)?,
        };
        Ok((Some(dxz), Some(ddelta), Some(dsmall)))
    }
}
