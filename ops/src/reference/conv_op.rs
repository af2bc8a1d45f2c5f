//! The plain depthwise causal conv1d + bias + SiLU as a candle `CustomOp3` over `(x, weight,
//! bias)`, CPU only: argument checks around the CPU loops the fused mixer ops run on the CPU
//! (`crate::model::mixer::cpu::conv`). The reference the fused ops are tested against (tests/mixer.rs),
//! itself tested against the f64 loops and finite differences.

use super::cpu_op::{CpuLoops, CpuOp};
use crate::model::mixer::cpu::conv::{self as cpu, ConvDims};
use crate::util::real::{compute_dtype, Real};
use candle_core::{bail, CustomOp3, Result, Shape, Tensor};
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
        Arc::new(Box::new(CpuOp(CausalConv1dSilu { dims: ConvDims { b, l, d, k } })));
    let y = prep(x)?.apply_op3_arc(&prep(weight)?, &prep(bias)?, op)?; // (b, l, d)
    y.to_dtype(x.dtype())
}

struct CausalConv1dSilu {
    dims: ConvDims,
}

impl CpuLoops for CausalConv1dSilu {
    const NAME: &'static str = NAME;

    fn inputs(&self) -> [(&'static str, Shape); 3] {
        let ConvDims { b, l, d, k } = self.dims;
        [("x", (b, l, d).into()), ("weight", (d, k).into()), ("bias", d.into())]
    }

    fn output(&self) -> Shape {
        let ConvDims { b, l, d, .. } = self.dims;
        (b, l, d).into()
    }

    fn forward<T: Real>(&self, [x, w, bias]: [&[T]; 3]) -> Vec<T> {
        cpu::forward(&self.dims, x, w, bias)
    }

    fn backward<T: Real>(&self, [x, w, bias]: [&[T]; 3], g: &[T]) -> [Vec<T>; 3] {
        let grads = cpu::backward(&self.dims, x, w, bias, g);
        [grads.dx, grads.dw, grads.dbias]
    }
}
