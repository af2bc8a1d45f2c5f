//! The plain selective scan as a candle custom op, CPU only: argument checks and the packing of
//! the eight inputs into the three tensors a `CustomOp3` takes, around the CPU loops the fused
//! mixer op runs on the CPU (`crate::model::mixer::cpu::scan`). The reference the fused op is tested
//! against (tests/mixer.rs), itself tested against the f64 loops and finite differences.
//!
//! Packing (all contiguous, compute dtype):
//! - `x:  (b, l, 3d)` = `cat([u, delta, z], dim 2)`, so `x[i, t, k*d + c]` is `u`, `delta`, `z`
//!   for `k = 0, 1, 2`;
//! - `bc: (b, l, 2n)` = `cat([B, C], dim 2)`;
//! - `p:  (d, n + 2)` = `cat([A_log, D[:, None], delta_bias[:, None]], dim 1)`.
//!
//! The op's backward returns gradients for the three packed tensors; candle's own `cat` backward
//! narrows them back to the eight inputs.

use super::cpu_op::{CpuLoops, CpuOp};
use crate::model::mixer::cpu::scan::{self as cpu, ScanDims};
use crate::util::real::{compute_dtype, Real};
use crate::util::shape_check::{expect_shape, state_size};
use candle_core::{bail, CustomOp3, Result, Shape, Tensor};
use std::sync::Arc;

const NAME: &str = "selective_scan";

/// Selective scan with D skip and silu(z) gating, on the CPU (`selective_scan_fn` in
/// state-spaces/mamba; Mamba paper, Algorithm 2).
///
/// Shapes: `u, delta, z: (b, l, d)`, `a_log: (d, n)`, `b, c: (b, l, n)`, `d_skip, delta_bias: (d,)`.
/// Returns `(b, l, d)`. `delta` gets `softplus(delta + delta_bias)` applied inside.
///
/// Per batch `i`, channel `c`, state `s`, with `h_{-1} = 0`:
/// `A = -exp(A_log)`, `dt_t = softplus(delta_t + delta_bias)`,
/// `h_t = exp(dt_t A) h_{t-1} + dt_t B_t u_t`, `y_t = C_t · h_t + D u_t`, `out = y_t silu(z_t)`.
/// Computed in f64 when every input is f64, else in f32 (the result in u's dtype). The backward
/// recomputes the states instead of storing them.
#[allow(clippy::too_many_arguments)]
pub fn selective_scan(
    u: &Tensor,
    delta: &Tensor,
    a_log: &Tensor,
    b: &Tensor,
    c: &Tensor,
    d_skip: &Tensor,
    z: &Tensor,
    delta_bias: &Tensor,
) -> Result<Tensor> {
    let (bs, l, d) = match u.dims() {
        &[bs, l, d] => (bs, l, d),
        other => bail!("{NAME}: `u` must be (batch, len, channels), got shape {other:?}"),
    };
    let n = state_size(NAME, a_log, d)?;
    let expect = |name: &str, t: &Tensor, want: &[usize]| expect_shape(NAME, name, t, want);
    expect("delta", delta, &[bs, l, d])?;
    expect("z", z, &[bs, l, d])?;
    expect("b", b, &[bs, l, n])?;
    expect("c", c, &[bs, l, n])?;
    expect("d_skip", d_skip, &[d])?;
    expect("delta_bias", delta_bias, &[d])?;
    let dims = ScanDims { b: bs, l, d, n };
    let inputs = [u, delta, a_log, b, c, d_skip, z, delta_bias];
    let compute = compute_dtype(NAME, &inputs)?;
    let prep = |t: &Tensor| -> Result<Tensor> { t.to_dtype(compute)?.contiguous() };

    let x = Tensor::cat(&[prep(u)?, prep(delta)?, prep(z)?], 2)?; // (b, l, 3d)
    let bc = Tensor::cat(&[prep(b)?, prep(c)?], 2)?; // (b, l, 2n)
    let p = Tensor::cat(&[prep(a_log)?, prep(d_skip)?.unsqueeze(1)?, prep(delta_bias)?.unsqueeze(1)?], 1)?; // (d, n + 2)

    let op: Arc<Box<dyn CustomOp3 + Send + Sync>> = Arc::new(Box::new(CpuOp(SelectiveScan { dims })));
    let y = x.apply_op3_arc(&bc, &p, op)?; // (b, l, d)
    y.to_dtype(u.dtype())
}

/// The op's loops over the packed tensors `(x, bc, p)`; see the module docs for the packing.
struct SelectiveScan {
    dims: ScanDims,
}

impl CpuLoops for SelectiveScan {
    const NAME: &'static str = NAME;

    fn inputs(&self) -> [(&'static str, Shape); 3] {
        let ScanDims { b, l, d, n } = self.dims;
        [("x", (b, l, 3 * d).into()), ("bc", (b, l, 2 * n).into()), ("p", (d, n + 2).into())]
    }

    fn output(&self) -> Shape {
        let ScanDims { b, l, d, .. } = self.dims;
        (b, l, d).into()
    }

    fn forward<T: Real>(&self, [x, bc, p]: [&[T]; 3]) -> Vec<T> {
        cpu::forward(&self.dims, x, bc, p)
    }

    fn backward<T: Real>(&self, [x, bc, p]: [&[T]; 3], g: &[T]) -> [Vec<T>; 3] {
        let grads = cpu::backward(&self.dims, x, bc, p, g);
        [grads.dx, grads.dbc, grads.dp]
    }
}
