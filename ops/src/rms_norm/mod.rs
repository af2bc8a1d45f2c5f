//! RMSNorm as one candle `CustomOp2` over `(x, weight)`: argument checks and device dispatch.
//! The composite it replaces (square, mean, add, sqrt, divide, multiply, and twice as many ops in
//! its backward) saved four row-sized temporaries per norm and launched ~18 kernels on the GPU;
//! this op saves nothing but its inputs and recomputes `1/rms` in the backward. The CPU
//! arithmetic is in `cpu.rs`, the reference in `crate::reference::rms_norm_*`.

mod cpu;
#[cfg(feature = "cuda")]
mod cuda;

use crate::cpu_storage::{as_cpu, contiguous_slice};
use crate::real::{compute_dtype, Real};
use candle_core::{bail, CpuStorage, CustomOp2, DType, Device, Layout, Result, Shape, Tensor};
use std::sync::Arc;

const NAME: &str = "rms_norm";

/// See [`crate::rms_norm`] for the public contract.
pub(crate) fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    let d = match x.dims().last() {
        Some(&d) if d > 0 => d,
        _ => bail!("{NAME}: `x` must have a non-empty last dimension, got shape {:?}", x.dims()),
    };
    if weight.dims() != [d] {
        bail!("{NAME}: `weight` must have shape [{d}] (the last dim of x), got {:?}", weight.dims())
    }
    if !(eps >= 0.0 && eps.is_finite()) {
        bail!("{NAME}: eps must be finite and >= 0, got {eps}")
    }
    let rows = x.elem_count() / d;
    let compute = compute_dtype(NAME, &[x, weight])?;
    let x2 = x.to_dtype(compute)?.reshape((rows, d))?.contiguous()?; // (rows, d)
    let w = weight.to_dtype(compute)?.contiguous()?; // (d,)
    let op: Arc<Box<dyn CustomOp2 + Send + Sync>> = Arc::new(Box::new(RmsNorm { rows, d, eps }));
    let y = x2.apply_op2_arc(&w, op)?; // (rows, d)
    y.reshape(x.dims())?.to_dtype(x.dtype())
}

struct RmsNorm {
    rows: usize,
    d: usize,
    eps: f64,
}

impl RmsNorm {
    fn check_layouts(&self, lx: &Layout, lw: &Layout) -> Result<()> {
        if lx.shape().dims() != [self.rows, self.d] || lw.shape().dims() != [self.d] {
            bail!("{NAME}: internal error: got x {:?} and w {:?} for ({}, {})", lx.shape(), lw.shape(), self.rows, self.d)
        }
        Ok(())
    }

    fn bwd_typed<T: Real>(&self, (x, lx): (&CpuStorage, &Layout), (w, lw): (&CpuStorage, &Layout), (g, lg): (&CpuStorage, &Layout), dev: &Device) -> Result<[Tensor; 2]> {
        let x = contiguous_slice::<T>(NAME, "x", x, lx)?;
        let w = contiguous_slice::<T>(NAME, "weight", w, lw)?;
        let g = contiguous_slice::<T>(NAME, "grad", g, lg)?;
        let (dx, dw) = cpu::backward(x, w, g, T::from_f64(self.eps));
        Ok([Tensor::from_vec(dx, (self.rows, self.d), dev)?, Tensor::from_vec(dw, self.d, dev)?])
    }
}

impl CustomOp2 for RmsNorm {
    fn name(&self) -> &'static str {
        NAME
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        self.check_layouts(l1, l2)?;
        let shape = Shape::from((self.rows, self.d));
        match s1 {
            CpuStorage::F32(_) => {
                let y = cpu::forward(contiguous_slice::<f32>(NAME, "x", s1, l1)?, contiguous_slice::<f32>(NAME, "weight", s2, l2)?, self.eps as f32);
                Ok((CpuStorage::F32(y), shape))
            }
            CpuStorage::F64(_) => {
                let y = cpu::forward(contiguous_slice::<f64>(NAME, "x", s1, l1)?, contiguous_slice::<f64>(NAME, "weight", s2, l2)?, self.eps);
                Ok((CpuStorage::F64(y), shape))
            }
            _ => bail!("{NAME}: internal error: cpu_fwd got a dtype other than f32/f64"),
        }
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s1: &candle_core::CudaStorage, l1: &Layout, s2: &candle_core::CudaStorage, l2: &Layout) -> Result<(candle_core::CudaStorage, Shape)> {
        self.check_layouts(l1, l2)?;
        cuda::forward(NAME, self.rows, self.d, self.eps, (s1, l1), (s2, l2))
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, _y: &Tensor, grad_y: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad_y = grad_y.to_dtype(x.dtype())?.contiguous()?; // (rows, d)
        if grad_y.dims() != [self.rows, self.d] {
            bail!("{NAME}: gradient has shape {:?}, expected {:?}", grad_y.dims(), [self.rows, self.d])
        }
        #[cfg(feature = "cuda")]
        if x.device().is_cuda() {
            if x.dtype() != DType::F32 {
                bail!("{NAME}: the CUDA kernels compute in f32, got {:?}", x.dtype())
            }
            let [dx, dw] = cuda::backward(NAME, self.rows, self.d, self.eps, x, w, &grad_y)?;
            return Ok((Some(dx), Some(dw)));
        }
        let (xs, xl) = x.storage_and_layout();
        let (ws, wl) = w.storage_and_layout();
        let (gs, gl) = grad_y.storage_and_layout();
        self.check_layouts(xl, wl)?;
        let inputs = ((as_cpu(NAME, "x", x, &xs)?, xl), (as_cpu(NAME, "weight", w, &ws)?, wl), (as_cpu(NAME, "grad", &grad_y, &gs)?, gl));
        let [dx, dw] = match x.dtype() {
            DType::F32 => self.bwd_typed::<f32>(inputs.0, inputs.1, inputs.2, x.device())?,
            DType::F64 => self.bwd_typed::<f64>(inputs.0, inputs.1, inputs.2, x.device())?,
            other => bail!("{NAME}: internal error: bwd got dtype {other:?}"),
        };
        Ok((Some(dx), Some(dw)))
    }
}
