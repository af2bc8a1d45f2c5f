//! `residual_add`: the residual stream (f32, or f64) plus a block's output in the compute dtype
//! (bf16 under mixed precision), converted in the same pass: one kernel instead of candle's cast
//! and add (three passes over the stream, 2.8 + 1.7 ms per step for the 130m model at
//! micro-batch 16 on an H200). The backward passes the gradient to the stream as it is and to
//! the block's output converted to its dtype, as the cast + add would.

use crate::util::cpu_storage::contiguous_slice;
use candle_core::{bail, CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};

const NAME: &str = "residual_add";

/// See [`crate::residual_add`].
pub(crate) fn residual_add(residual: &Tensor, x: &Tensor) -> Result<Tensor> {
    let ok = match residual.dtype() {
        DType::F32 => matches!(x.dtype(), DType::F32 | DType::BF16),
        DType::F64 => x.dtype() == DType::F64,
        _ => false,
    };
    if !ok || residual.dims() != x.dims() {
        bail!(
            "{NAME}: the stream must be f32 (x f32 or bf16) or f64 (x f64), of x's shape; got {:?} {:?} and {:?} {:?}",
            residual.dtype(),
            residual.dims(),
            x.dtype(),
            x.dims()
        )
    }
    residual.contiguous()?.apply_op2_arc(&x.contiguous()?, std::sync::Arc::new(Box::new(ResidualAdd)))
}

struct ResidualAdd;

impl CustomOp2 for ResidualAdd {
    fn name(&self) -> &'static str {
        NAME
    }

    fn cpu_fwd(&self, rs: &CpuStorage, rl: &Layout, xs: &CpuStorage, xl: &Layout) -> Result<(CpuStorage, Shape)> {
        let out = match (rs, xs) {
            (CpuStorage::F64(_), _) => {
                let (r, x) =
                    (contiguous_slice::<f64>(NAME, "residual", rs, rl)?, contiguous_slice::<f64>(NAME, "x", xs, xl)?);
                CpuStorage::F64(r.iter().zip(x).map(|(r, x)| r + x).collect())
            }
            (_, CpuStorage::BF16(_)) => {
                let (r, x) = (
                    contiguous_slice::<f32>(NAME, "residual", rs, rl)?,
                    contiguous_slice::<half::bf16>(NAME, "x", xs, xl)?,
                );
                CpuStorage::F32(r.iter().zip(x).map(|(r, x)| r + x.to_f32()).collect())
            }
            _ => {
                let (r, x) =
                    (contiguous_slice::<f32>(NAME, "residual", rs, rl)?, contiguous_slice::<f32>(NAME, "x", xs, xl)?);
                CpuStorage::F32(r.iter().zip(x).map(|(r, x)| r + x).collect())
            }
        };
        Ok((out, rl.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        rs: &candle_core::CudaStorage,
        rl: &Layout,
        xs: &candle_core::CudaStorage,
        xl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        use crate::util::cuda_util::dispatch;
        use candle_core::backend::BackendStorage;
        Ok((dispatch!(NAME, xs.dtype(), cuda_fwd_t(rs, rl, xs, xl))?, rl.shape().clone()))
    }

    fn bwd(
        &self,
        _residual: &Tensor,
        x: &Tensor,
        _out: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        Ok((Some(grad.clone()), Some(grad.to_dtype(x.dtype())?)))
    }
}

#[cfg(feature = "cuda")]
fn cuda_fwd_t<T: crate::util::cuda_util::Io>(
    rs: &candle_core::CudaStorage,
    rl: &Layout,
    xs: &candle_core::CudaStorage,
    xl: &Layout,
) -> Result<candle_core::CudaStorage> {
    use crate::util::cuda_util::{device, grid_stride, ptx, view, view_of};
    use candle_core::cuda_backend::cudarc::driver::PushKernelArg;
    use candle_core::cuda_backend::WrapErr;
    let dev = device(rs);
    let (rv, xv) = (view(NAME, "residual", rs, rl)?, view_of::<T>(NAME, "x", xs, xl)?);
    let n = rv.len();
    // SAFETY: the grid-stride loop writes every element.
    let out = unsafe { dev.alloc::<f32>(n)? };
    let func = dev.get_or_load_custom_func(&format!("residual_add_{}", T::SUFFIX), "mamba_residual", ptx::RESIDUAL)?;
    let cfg = grid_stride(n, 4096);
    let mut args = func.builder();
    args.arg(&rv).arg(&xv).arg(&out).arg(&n);
    // SAFETY: argument types and order match the kernel's signature (n: size_t).
    unsafe { args.launch(cfg) }.w()?;
    Ok(candle_core::CudaStorage::wrap_cuda_slice(out, dev))
}
