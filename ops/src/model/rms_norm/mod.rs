//! RMSNorm as one candle `CustomOp2` over `(x, weight)`: argument checks and device dispatch.
//! The composite it replaces (square, mean, add, sqrt, divide, multiply, and twice as many ops in
//! its backward) saved four row-sized temporaries per norm and launched ~18 kernels on the GPU;
//! this op saves nothing but its inputs and recomputes `1/rms` in the backward. The CPU
//! arithmetic is in `cpu.rs`, the reference in `crate::reference::rms_norm_*`.

mod cpu;
#[cfg(feature = "cuda")]
mod cuda;

use crate::util::cpu_storage::{as_cpu, contiguous_slice};
use crate::util::real::{compute_dtype, Real};
use candle_core::{bail, CpuStorage, CustomOp2, DType, Device, Layout, Result, Shape, Tensor};
use std::sync::Arc;

const NAME: &str = "rms_norm";

/// See [`crate::rms_norm`] (`out` None: the dtype of `x`) and [`crate::rms_norm_to`].
pub(crate) fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64, out: Option<DType>) -> Result<Tensor> {
    let (op, x2, w) = prepare(x, weight, eps, out)?;
    let op: Arc<Box<dyn CustomOp2 + Send + Sync>> = Arc::new(Box::new(op));
    let y = x2.apply_op2_arc(&w, op)?; // (rows, d)
                                       // A 2-D x goes in and comes out as it is: a reshape is an autograd node even when the shape
                                       // does not change, and its backward adds the gradient into a fresh zero tensor (two per norm,
                                       // 3.6 ms per step for the 130m model at micro-batch 16 on an H200).
    if x.rank() == 2 { y } else { y.reshape(x.dims())? }.to_dtype(out.unwrap_or(x.dtype()))
}

/// See [`crate::backward::rms_norm`]: `(dx (+ add), dweight)` in the dtypes of `x` and `weight`.
pub(crate) fn rms_norm_backward(
    x: &Tensor,
    weight: &Tensor,
    eps: f64,
    out: Option<DType>,
    grad: &Tensor,
    add: Option<&Tensor>,
) -> Result<(Tensor, Tensor)> {
    let (dx, dw, _) = backward_with(x, weight, eps, out, grad, add, false)?;
    Ok((dx, dw))
}

/// See [`crate::backward::rms_norm_and_copy`].
pub(crate) fn rms_norm_backward_and_copy(
    x: &Tensor,
    weight: &Tensor,
    eps: f64,
    out: Option<DType>,
    grad: &Tensor,
    add: Option<&Tensor>,
) -> Result<(Tensor, Tensor, Tensor)> {
    let (dx, dw, copy) = backward_with(x, weight, eps, out, grad, add, true)?;
    let copy = match copy {
        Some(c) => c.reshape(x.dims())?,
        None => dx.to_dtype(out.unwrap_or(x.dtype()))?,
    };
    Ok((dx, dw, copy))
}

/// The backward, with dx's bf16 copy from the same kernel when `copy` and the GPU's output is
/// bf16 (else None).
fn backward_with(
    x: &Tensor,
    weight: &Tensor,
    eps: f64,
    out: Option<DType>,
    grad: &Tensor,
    add: Option<&Tensor>,
    copy: bool,
) -> Result<(Tensor, Tensor, Option<Tensor>)> {
    let (op, x2, w) = prepare(x, weight, eps, out)?;
    let grad = grad.reshape((op.rows, op.d))?; // (rows, d)
    if let Some(a) = add {
        if a.dims() != x.dims() || a.dtype() != x.dtype() {
            bail!(
                "{NAME}: `add` must have x's shape {:?} and dtype {:?}, got {:?} {:?}",
                x.dims(),
                x.dtype(),
                a.dims(),
                a.dtype()
            )
        }
    }
    let add = add.map(|a| a.reshape((op.rows, op.d))).transpose()?; // (rows, d)
    let ([dx, dw], lo) = op.backward(&x2, &w, &grad, add.as_ref(), copy)?;
    Ok((dx.reshape(x.dims())?.to_dtype(x.dtype())?, dw.to_dtype(weight.dtype())?, lo))
}

/// Checks the arguments and returns the op with its inputs `x: (rows, d)` and `weight: (d,)` in
/// the compute dtype, contiguous.
fn prepare(x: &Tensor, weight: &Tensor, eps: f64, out: Option<DType>) -> Result<(RmsNorm, Tensor, Tensor)> {
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
    // The op writes its output in `op_out`: the compute dtype, or bf16 straight from f32.
    let op_out = match out {
        None => compute,
        Some(DType::BF16) if compute == DType::F32 => DType::BF16,
        Some(o) if o == compute => compute,
        Some(o) => bail!(
            "{NAME}: output dtype {o:?} is not supported for {compute:?} statistics (bf16 from f32, or {compute:?})"
        ),
    };
    let x2 = x.to_dtype(compute)?;
    let x2 = if x.rank() == 2 { x2 } else { x2.reshape((rows, d))? }.contiguous()?; // (rows, d)
    let w = weight.to_dtype(compute)?.contiguous()?; // (d,)
    Ok((RmsNorm { rows, d, eps, out: op_out }, x2, w))
}

struct RmsNorm {
    rows: usize,
    d: usize,
    eps: f64,
    /// The output's dtype (and its gradient's): the compute dtype, or bf16 from f32.
    out: DType,
}

impl RmsNorm {
    fn check_layouts(&self, lx: &Layout, lw: &Layout) -> Result<()> {
        if lx.shape().dims() != [self.rows, self.d] || lw.shape().dims() != [self.d] {
            bail!(
                "{NAME}: internal error: got x {:?} and w {:?} for ({}, {})",
                lx.shape(),
                lw.shape(),
                self.rows,
                self.d
            )
        }
        Ok(())
    }

    /// `[dx (+ add), dw]` for `x: (rows, d)`, `w: (d,)` in the compute dtype and the output's
    /// gradient `grad_y`; `add` (rows, d), when given, is added to dx (in the kernel on the GPU);
    /// on the GPU with `copy` and a bf16 output, also dx in bf16 from the same kernel. The op's
    /// autograd backward and [`rms_norm_backward`] both run this.
    #[cfg_attr(not(feature = "cuda"), allow(unused_variables))]
    fn backward(
        &self,
        x: &Tensor,
        w: &Tensor,
        grad_y: &Tensor,
        add: Option<&Tensor>,
        copy: bool,
    ) -> Result<([Tensor; 2], Option<Tensor>)> {
        if grad_y.dims() != [self.rows, self.d] {
            bail!("{NAME}: gradient has shape {:?}, expected {:?}", grad_y.dims(), [self.rows, self.d])
        }
        #[cfg(feature = "cuda")]
        if x.device().is_cuda() {
            if x.dtype() != DType::F32 {
                bail!("{NAME}: the CUDA kernels compute in f32, got {:?}", x.dtype())
            }
            // The kernels read the gradient in the output's dtype (bf16 or f32).
            let grad_y = grad_y.to_dtype(self.out)?.contiguous()?; // (rows, d)
            let add = add.map(|a| a.to_dtype(DType::F32)?.contiguous()).transpose()?;
            return cuda::backward(
                NAME,
                self.rows,
                self.d,
                self.eps,
                x,
                w,
                &grad_y,
                add.as_ref(),
                copy && self.out == DType::BF16,
            );
        }
        let grad_y = grad_y.to_dtype(x.dtype())?.contiguous()?; // (rows, d)
        let (xs, xl) = x.storage_and_layout();
        let (ws, wl) = w.storage_and_layout();
        let (gs, gl) = grad_y.storage_and_layout();
        self.check_layouts(xl, wl)?;
        let inputs = (
            (as_cpu(NAME, "x", x, &xs)?, xl),
            (as_cpu(NAME, "weight", w, &ws)?, wl),
            (as_cpu(NAME, "grad", &grad_y, &gs)?, gl),
        );
        let [dx, dw] = match x.dtype() {
            DType::F32 => self.bwd_typed::<f32>(inputs.0, inputs.1, inputs.2, x.device())?,
            DType::F64 => self.bwd_typed::<f64>(inputs.0, inputs.1, inputs.2, x.device())?,
            other => bail!("{NAME}: internal error: bwd got dtype {other:?}"),
        };
        let dx = match add {
            Some(a) => (dx + a.to_dtype(x.dtype())?)?,
            None => dx,
        };
        Ok(([dx, dw], None))
    }

    fn bwd_typed<T: Real>(
        &self,
        (x, lx): (&CpuStorage, &Layout),
        (w, lw): (&CpuStorage, &Layout),
        (g, lg): (&CpuStorage, &Layout),
        dev: &Device,
    ) -> Result<[Tensor; 2]> {
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
                let y = cpu::forward(
                    contiguous_slice::<f32>(NAME, "x", s1, l1)?,
                    contiguous_slice::<f32>(NAME, "weight", s2, l2)?,
                    self.eps as f32,
                );
                if self.out == DType::BF16 {
                    return Ok((CpuStorage::BF16(y.iter().map(|&v| half::bf16::from_f32(v)).collect()), shape));
                }
                Ok((CpuStorage::F32(y), shape))
            }
            CpuStorage::F64(_) => {
                let y = cpu::forward(
                    contiguous_slice::<f64>(NAME, "x", s1, l1)?,
                    contiguous_slice::<f64>(NAME, "weight", s2, l2)?,
                    self.eps,
                );
                Ok((CpuStorage::F64(y), shape))
            }
            _ => bail!("{NAME}: internal error: cpu_fwd got a dtype other than f32/f64"),
        }
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        self.check_layouts(l1, l2)?;
        cuda::forward(NAME, self.rows, self.d, self.eps, self.out, (s1, l1), (s2, l2))
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, _y: &Tensor, grad_y: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let ([dx, dw], _) = self.backward(x, w, grad_y, None, false)?;
        Ok((Some(dx), Some(dw)))
    }
}
