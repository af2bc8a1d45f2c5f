//! `mixer_conv`: depthwise causal conv1d + bias + SiLU over the `x` half of `xz = [x | z]`,
//! a `CustomOp3` over `(xz, weight, bias)`. Output and `xz`'s gradient (zero in the `z` half) in
//! xz's dtype; see the module docs of `mixer` for the dtype rules.

use super::cpu::conv as conv_cpu;
use super::{dtypes, join_xz, load, output_grad, split_xz, store, xz_dims, MixerDims};
use crate::util::cpu_storage::as_cpu;
use crate::util::real::Real;
use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor};
use std::sync::Arc;

const NAME: &str = "mixer_conv";

/// See [`crate::mixer_conv`].
pub(crate) fn mixer_conv(xz: &Tensor, seq_len: Option<usize>, weight: &Tensor, bias: &Tensor) -> Result<Tensor> {
    let (op, [xz, weight, bias]) = prepare(xz, seq_len, weight, bias)?;
    let op: Arc<Box<dyn CustomOp3 + Send + Sync>> = Arc::new(Box::new(op));
    xz.apply_op3_arc(&weight, &bias, op) // (b, l, d)
}

/// Checks the arguments and returns the op with its inputs: `xz` contiguous, the weight and bias
/// in the compute dtype.
pub(crate) fn prepare(
    xz: &Tensor,
    seq_len: Option<usize>,
    weight: &Tensor,
    bias: &Tensor,
) -> Result<(MixerConv, [Tensor; 3])> {
    let dims = xz_dims(NAME, xz, seq_len, weight)?;
    if bias.dims() != [dims.d] {
        bail!("{NAME}: `bias` must have shape [{}], got {:?}", dims.d, bias.dims())
    }
    let (_, compute) = dtypes(NAME, xz)?;
    let prep = |t: &Tensor| -> Result<Tensor> { t.to_dtype(compute)?.contiguous() };
    Ok((MixerConv { dims }, [xz.contiguous()?, prep(weight)?, prep(bias)?]))
}

pub(crate) struct MixerConv {
    pub dims: MixerDims,
}

impl MixerConv {
    fn cpu_fwd_typed<C: Real>(
        &self,
        xz: (&CpuStorage, &Layout),
        w: (&CpuStorage, &Layout),
        bias: (&CpuStorage, &Layout),
    ) -> Result<CpuStorage> {
        let xz_v = load::<C>(NAME, "xz", xz.0, xz.1)?;
        let (x, _) = split_xz(&xz_v, self.dims.d);
        let w = load::<C>(NAME, "weight", w.0, w.1)?;
        let bias = load::<C>(NAME, "bias", bias.0, bias.1)?;
        let y = conv_cpu::forward(&self.dims.conv(), &x, &w, &bias);
        store(NAME, &y, xz.0.dtype())
    }

    /// `(dxz, dw, dbias)` on the CPU; `dz` (compute dtype), when given, becomes the z half of
    /// dxz (otherwise zeros).
    pub(crate) fn cpu_bwd_typed<C: Real>(
        &self,
        xz: &Tensor,
        w: &Tensor,
        bias: &Tensor,
        g: &Tensor,
        dz: Option<&Tensor>,
    ) -> Result<[Tensor; 3]> {
        let (xs, xl) = xz.storage_and_layout();
        let (ws, wl) = w.storage_and_layout();
        let (bs, bl) = bias.storage_and_layout();
        let (gs, gl) = g.storage_and_layout();
        let xz_v = load::<C>(NAME, "xz", as_cpu(NAME, "xz", xz, &xs)?, xl)?;
        let w_v = load::<C>(NAME, "weight", as_cpu(NAME, "weight", w, &ws)?, wl)?;
        let b_v = load::<C>(NAME, "bias", as_cpu(NAME, "bias", bias, &bs)?, bl)?;
        let g_v = load::<C>(NAME, "grad", as_cpu(NAME, "grad", g, &gs)?, gl)?;
        let MixerDims { d, k, .. } = self.dims;
        let (x, _) = split_xz(&xz_v, d);
        let grads = conv_cpu::backward(&self.dims.conv(), &x, &w_v, &b_v, &g_v);
        let dz = match dz {
            Some(t) => {
                let (zs, zl) = t.storage_and_layout();
                load::<C>(NAME, "dz", as_cpu(NAME, "dz", t, &zs)?, zl)?
            }
            None => vec![C::zero(); grads.dx.len()],
        };
        let dxz = join_xz(&grads.dx, &dz, d);
        let dev = xz.device();
        let dxz = Tensor::from_vec(dxz, self.dims.act_shape(2 * d), dev)?.to_dtype(xz.dtype())?;
        Ok([dxz, Tensor::from_vec(grads.dw, (d, k), dev)?, Tensor::from_vec(grads.dbias, d, dev)?])
    }
}

impl CustomOp3 for MixerConv {
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
        let y = match s2 {
            CpuStorage::F64(_) => self.cpu_fwd_typed::<f64>((s1, l1), (s2, l2), (s3, l3))?,
            _ => self.cpu_fwd_typed::<f32>((s1, l1), (s2, l2), (s3, l3))?,
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
        let y = super::cuda::conv_forward(NAME, &self.dims, (s1, l1), (s2, l2), (s3, l3))?;
        Ok((y, self.dims.act_shape(self.dims.d)))
    }

    fn bwd(
        &self,
        xz: &Tensor,
        w: &Tensor,
        bias: &Tensor,
        _y: &Tensor,
        grad_y: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let g = output_grad(NAME, &self.dims, grad_y, xz.dtype())?; // (b, l, d) or (b·l, d)
        #[cfg(feature = "cuda")]
        if xz.device().is_cuda() {
            let [dxz, dw, db] = super::cuda::conv_backward(NAME, &self.dims, xz, w, bias, &g)?;
            return Ok((Some(dxz), Some(dw), Some(db)));
        }
        let [dxz, dw, db] = match w.dtype() {
            DType::F64 => self.cpu_bwd_typed::<f64>(xz, w, bias, &g, None)?,
            _ => self.cpu_bwd_typed::<f32>(xz, w, bias, &g, None)?,
        };
        Ok((Some(dxz), Some(dw), Some(db)))
    }
}
