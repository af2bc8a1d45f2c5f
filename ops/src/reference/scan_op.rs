//! The plain selective scan as a candle custom op, CPU only: argument checks and the packing of
//! the eight inputs into the three tensors a `CustomOp3` takes, around the CPU loops the fused
//! mixer op runs on the CPU (`crate::mixer::cpu::scan`). The reference the fused op is tested
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

use crate::cpu_storage::{as_cpu, contiguous_slice};
use crate::mixer::cpu::scan::{self as cpu, ScanDims};
use crate::shape_check::{expect_shape, state_size};
use crate::real::{compute_dtype, Real};
use candle_core::{bail, CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor};
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
    let dims = check_shapes(u, delta, a_log, b, c, d_skip, z, delta_bias)?;
    let inputs = [u, delta, a_log, b, c, d_skip, z, delta_bias];
    let compute = compute_dtype(NAME, &inputs)?;
    let prep = |t: &Tensor| -> Result<Tensor> { t.to_dtype(compute)?.contiguous() };

    let x = Tensor::cat(&[prep(u)?, prep(delta)?, prep(z)?], 2)?; // (b, l, 3d)
    let bc = Tensor::cat(&[prep(b)?, prep(c)?], 2)?; // (b, l, 2n)
    let p = Tensor::cat(
        &[prep(a_log)?, prep(d_skip)?.unsqueeze(1)?, prep(delta_bias)?.unsqueeze(1)?],
        1,
    )?; // (d, n + 2)

    let op: Arc<Box<dyn CustomOp3 + Send + Sync>> = Arc::new(Box::new(SelectiveScan { dims }));
    let y = x.apply_op3_arc(&bc, &p, op)?; // (b, l, d)
    y.to_dtype(u.dtype())
}

/// Checks every shape against `u: (b, l, d)` and `a_log: (d, n)`, naming the offending argument.
#[allow(clippy::too_many_arguments)]
fn check_shapes(
    u: &Tensor,
    delta: &Tensor,
    a_log: &Tensor,
    b: &Tensor,
    c: &Tensor,
    d_skip: &Tensor,
    z: &Tensor,
    delta_bias: &Tensor,
) -> Result<ScanDims> {
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
    Ok(ScanDims { b: bs, l, d, n })
}

/// The custom op over the packed tensors `(x, bc, p)`; see the module docs for the packing.
struct SelectiveScan {
    dims: ScanDims,
}

impl SelectiveScan {
    fn packed_shapes(&self) -> [Shape; 3] {
        let ScanDims { b, l, d, n } = self.dims;
        [(b, l, 3 * d).into(), (b, l, 2 * n).into(), (d, n + 2).into()]
    }

    fn check_layouts(&self, layouts: [&Layout; 3]) -> Result<()> {
        for ((layout, want), what) in layouts.iter().zip(self.packed_shapes()).zip(["x", "bc", "p"]) {
            if layout.shape() != &want {
                bail!("{NAME}: internal error: packed `{what}` is {:?}, expected {want:?}", layout.shape())
            }
        }
        Ok(())
    }

    fn fwd_typed<T: Real>(
        &self,
        (s1, l1): (&CpuStorage, &Layout),
        (s2, l2): (&CpuStorage, &Layout),
        (s3, l3): (&CpuStorage, &Layout),
    ) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_slice::<T>(NAME, "x", s1, l1)?;
        let bc = contiguous_slice::<T>(NAME, "bc", s2, l2)?;
        let p = contiguous_slice::<T>(NAME, "p", s3, l3)?;
        let y = cpu::forward(&self.dims, x, bc, p);
        let ScanDims { b, l, d, .. } = self.dims;
        Ok((T::to_cpu_storage_owned(y), (b, l, d).into()))
    }

    fn bwd_typed<T: Real>(
        &self,
        inputs: [(&CpuStorage, &Layout); 4],
        device: &candle_core::Device,
    ) -> Result<[Tensor; 3]> {
        let [(s1, l1), (s2, l2), (s3, l3), (sg, lg)] = inputs;
        let x = contiguous_slice::<T>(NAME, "x", s1, l1)?;
        let bc = contiguous_slice::<T>(NAME, "bc", s2, l2)?;
        let p = contiguous_slice::<T>(NAME, "p", s3, l3)?;
        let g = contiguous_slice::<T>(NAME, "grad", sg, lg)?;
        let grads = cpu::backward(&self.dims, x, bc, p, g);
        let [sx, sbc, sp] = self.packed_shapes();
        Ok([
            Tensor::from_vec(grads.dx, sx, device)?,
            Tensor::from_vec(grads.dbc, sbc, device)?,
            Tensor::from_vec(grads.dp, sp, device)?,
        ])
    }
}

impl CustomOp3 for SelectiveScan {
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
        match s1 {
            CpuStorage::F32(_) => self.fwd_typed::<f32>((s1, l1), (s2, l2), (s3, l3)),
            CpuStorage::F64(_) => self.fwd_typed::<f64>((s1, l1), (s2, l2), (s3, l3)),
            _ => bail!("{NAME}: internal error: cpu_fwd got a dtype other than f32/f64"),
        }
    }

    fn bwd(
        &self,
        x: &Tensor,
        bc: &Tensor,
        p: &Tensor,
        _y: &Tensor,
        grad_y: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let ScanDims { b, l, d, .. } = self.dims;
        let grad_y = grad_y.to_dtype(x.dtype())?.contiguous()?; // (b, l, d)
        if grad_y.dims() != [b, l, d] {
            bail!("{NAME}: gradient has shape {:?}, expected {:?}", grad_y.dims(), [b, l, d])
        }
        let (xs, xl) = x.storage_and_layout();
        let (bcs, bcl) = bc.storage_and_layout();
        let (ps, pl) = p.storage_and_layout();
        let (gs, gl) = grad_y.storage_and_layout();
        self.check_layouts([xl, bcl, pl])?;
        let inputs = [
            (as_cpu(NAME, "x", x, &xs)?, xl),
            (as_cpu(NAME, "bc", bc, &bcs)?, bcl),
            (as_cpu(NAME, "p", p, &ps)?, pl),
            (as_cpu(NAME, "grad", &grad_y, &gs)?, gl),
        ];
        let [dx, dbc, dp] = match x.dtype() {
            DType::F32 => self.bwd_typed::<f32>(inputs, x.device())?,
            DType::F64 => self.bwd_typed::<f64>(inputs, x.device())?,
            other => bail!("{NAME}: internal error: bwd got dtype {other:?}"),
        };
        Ok((Some(dx), Some(dbc), Some(dp)))
    }
}
