//! The plain depthwise causal conv1d + bias + SiLU as a candle `CustomOp3` over `(x, weight,
//! bias)`, CPU only: argument checks around the CPU loops the fused mixer ops run on the CPU
//! (`crate::mixer::cpu::conv`). The reference the fused ops are tested against (tests/mixer.rs),
//! itself tested against the f64 loops and finite differences.

use crate::cpu_storage::{as_cpu, contiguous_slice};
use crate::real::{compute_dtype, Real};
use candle_core::{bail, CpuStorage, CustomOp3, DType, Device, Layout, Result, Shape, Tensor};
use crate::mixer::cpu::conv::{self as cpu, ConvDims};
use std::sync::Arc;

const NAME: &str = "causal_conv1d_silu";

/// Depthwise causal conv1d + bias + SiLU on the CPU. `x: (b, l, d)`, `weight: (d, k)`, `bias: (d,)`
/// → `(b, l, d)`: `out[i,t,c] = silu(bias[c] + sum_{j<k} weight[c,j] x[i, t-(k-1)+j, c])`,
/// zero-padded on the left (PyTorch's `Conv1d(d, d, k, groups=d, padding=k-1)` truncated to the
/// first `l` outputs). Dtype rules as [`super::selective_scan`]'s.
pub fn causal_conv1d_silu(x: &Tensor, weight: &Tensor, bias: &Tensor) -> Result<Tensor> {
    let (b, l, d) = match x.dims() {
        &[b, l, d] => (b, l, d),
        other => bail!("{NAME}: `x` must be (batch, len, channels), got shape {other:?}"),
    };
    let k = match weight.dims() {
        &[wd, k] if wd == d && k >= 1 => k,
        other => bail!("{NAME}: `weight` must be (channels={d}, kernel>=1), got shape {other:?}"),
    };
    if bias.dims() != [d] {
        bail!("{NAME}: `bias` must have shape [{d}], got {:?}", bias.dims())
    }
    let compute = compute_dtype(NAME, &[x, weight, bias])?;
    let prep = |t: &Tensor| -> Result<Tensor> { t.to_dtype(compute)?.contiguous() };
    let op: Arc<Box<dyn CustomOp3 + Send + Sync>> =
        Arc::new(Box::new(CausalConv1dSilu { dims: ConvDims { b, l, d, k } }));
    let y = prep(x)?.apply_op3_arc(&prep(weight)?, &prep(bias)?, op)?; // (b, l, d)
    y.to_dtype(x.dtype())
}

struct CausalConv1dSilu {
    dims: ConvDims,
}

impl CausalConv1dSilu {
    fn shapes(&self) -> [Shape; 3] {
        let ConvDims { b, l, d, k } = self.dims;
        [(b, l, d).into(), (d, k).into(), d.into()]
    }

    fn check_layouts(&self, layouts: [&Layout; 3]) -> Result<()> {
        for ((layout, want), what) in layouts.iter().zip(self.shapes()).zip(["x", "weight", "bias"]) {
            if layout.shape() != &want {
                bail!("{NAME}: internal error: `{what}` is {:?}, expected {want:?}", layout.shape())
            }
        }
        Ok(())
    }

    fn fwd_typed<T: Real>(&self, inputs: [(&CpuStorage, &Layout); 3]) -> Result<(CpuStorage, Shape)> {
        let [(s1, l1), (s2, l2), (s3, l3)] = inputs;
        let x = contiguous_slice::<T>(NAME, "x", s1, l1)?;
        let w = contiguous_slice::<T>(NAME, "weight", s2, l2)?;
        let bias = contiguous_slice::<T>(NAME, "bias", s3, l3)?;
        let y = cpu::forward(&self.dims, x, w, bias);
        let [shape, _, _] = self.shapes();
        Ok((T::to_cpu_storage_owned(y), shape))
    }

    fn bwd_typed<T: Real>(&self, inputs: [(&CpuStorage, &Layout); 4], device: &Device) -> Result<[Tensor; 3]> {
        let [(s1, l1), (s2, l2), (s3, l3), (sg, lg)] = inputs;
        let x = contiguous_slice::<T>(NAME, "x", s1, l1)?;
        let w = contiguous_slice::<T>(NAME, "weight", s2, l2)?;
        let bias = contiguous_slice::<T>(NAME, "bias", s3, l3)?;
        let g = contiguous_slice::<T>(NAME, "grad", sg, lg)?;
        let grads = cpu::backward(&self.dims, x, w, bias, g);
        let [sx, sw, sb] = self.shapes();
        Ok([
            Tensor::from_vec(grads.dx, sx, device)?,
            Tensor::from_vec(grads.dw, sw, device)?,
            Tensor::from_vec(grads.dbias, sb, device)?,
        ])
    }
}

impl CustomOp3 for CausalConv1dSilu {
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
        self.check_layouts([l1, l2, l3])?;
        let inputs = [(s1, l1), (s2, l2), (s3, l3)];
        match s1 {
            CpuStorage::F32(_) => self.fwd_typed::<f32>(inputs),
            CpuStorage::F64(_) => self.fwd_typed::<f64>(inputs),
            _ => bail!("{NAME}: internal error: cpu_fwd got a dtype other than f32/f64"),
        }
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        bias: &Tensor,
        _y: &Tensor,
        grad_y: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad_y = grad_y.to_dtype(x.dtype())?.contiguous()?; // (b, l, d)
        if grad_y.shape() != &self.shapes()[0] {
            bail!("{NAME}: gradient has shape {:?}, expected {:?}", grad_y.dims(), self.shapes()[0])
        }
        let (xs, xl) = x.storage_and_layout();
        let (ws, wl) = w.storage_and_layout();
        let (bs, bl) = bias.storage_and_layout();
        let (gs, gl) = grad_y.storage_and_layout();
        self.check_layouts([xl, wl, bl])?;
        let inputs = [
            (as_cpu(NAME, "x", x, &xs)?, xl),
            (as_cpu(NAME, "weight", w, &ws)?, wl),
            (as_cpu(NAME, "bias", bias, &bs)?, bl),
            (as_cpu(NAME, "grad", &grad_y, &gs)?, gl),
        ];
        let [dx, dw, db] = match x.dtype() {
            DType::F32 => self.bwd_typed::<f32>(inputs, x.device())?,
            DType::F64 => self.bwd_typed::<f64>(inputs, x.device())?,
            other => bail!("{NAME}: internal error: bwd got dtype {other:?}"),
        };
        Ok((Some(dx), Some(dw), Some(db)))
    }
}
