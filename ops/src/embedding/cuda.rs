//! The embedding's backward on the GPU: `kernels/embedding.cu` for f32 weights; other dtypes go
//! through candle's `index_add` (slow but correct; the model's weights are f32).

use crate::cuda_util::{cuda_storage, device, ptx, tensor, view, view_of};
use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::WrapErr;
use candle_core::{DType, Result, Tensor};

/// Blocks of the backward, each owning the vocabulary rows `v % BUCKETS` (a power of two): enough
/// to fill an H200, few enough that walking all positions per block stays cheap.
const BUCKETS: usize = 256;
const THREADS: usize = 256;

/// `dW: (v, d)` from `ids: (n,)` u32 and `g: (n, d)` (contiguous, the weight's dtype).
pub(crate) fn backward(op: &str, v: usize, d: usize, ids: &Tensor, g: &Tensor) -> Result<Tensor> {
    if g.dtype() != DType::F32 {
        return Tensor::zeros((v, d), g.dtype(), g.device())?.index_add(ids, g, 0);
    }
    let n = ids.elem_count();
    let (is, il) = ids.storage_and_layout();
    let (gs, gl) = g.storage_and_layout();
    let (is, gs) = (cuda_storage(op, "ids", &is)?, cuda_storage(op, "grad", &gs)?);
    let dev = device(gs);
    let (idv, gv) = (view_of::<u32>(op, "ids", is, il)?, view(op, "grad", gs, gl)?);
    let dw = dev.alloc_zeros::<f32>(v * d)?;
    let func = dev.get_or_load_custom_func("embedding_bwd_f32", "mamba_embedding", ptx::EMBEDDING)?;
    let (ni, di, vocab, mask) = (n as i32, d as i32, v as u32, (BUCKETS - 1) as u32);
    let cfg = LaunchConfig { grid_dim: (BUCKETS as u32, 1, 1), block_dim: (THREADS as u32, 1, 1), shared_mem_bytes: 0 };
    let mut args = func.builder();
    args.arg(&idv).arg(&gv).arg(&dw).arg(&ni).arg(&di).arg(&vocab).arg(&mask);
    // SAFETY: argument types and order match the kernel's signature; dw is zeroed and has v·d
    // elements, and the kernel skips ids >= v.
    unsafe { args.launch(cfg) }.w()?;
    Ok(tensor(dw, &dev, (v, d)))
}
