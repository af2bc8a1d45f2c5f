//! The token embedding as one candle `CustomOp2` over `(weight, ids)`: rows of `weight: (V, d)`
//! at `ids: (n,)`, i.e. `weight.index_select(ids, 0)`, with a backward that is deterministic and
//! parallel on the GPU.
//!
//! Backward: `dW[v] = Σ_{p : ids[p] = v} g[p]`, each row summed in position order on both
//! devices, so CPU and GPU agree bit for bit in f32: a [`TokenIndex`] (the positions of each id,
//! built on the host) and [`rows`] (one pass over dW, `kernels/embedding.cu` on the GPU), which
//! also adds a tied LM head's gradient in the same pass.
//!
//! History: candle's `index_add` backward ran the whole `(V, d)` accumulation in one CUDA block
//! (8.5 ms per step at micro-batch 16 for the 130m model on an H200); the bucket kernel that
//! replaced it (256 blocks, each walking all positions) took 1.34 ms per step at micro-batch 16.

#[cfg(feature = "cuda")]
mod cuda;
mod index;
mod rows;

pub use index::TokenIndex;
pub(crate) use rows::embedding_rows;

use crate::util::cpu_storage::contiguous_slice;
use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};
use std::sync::Arc;

const NAME: &str = "embedding";

/// See [`crate::embedding`].
pub(crate) fn embedding(weight: &Tensor, ids: &Tensor) -> Result<Tensor> {
    let (op, weight, ids) = prepare(weight, ids)?;
    let op: Arc<Box<dyn CustomOp2 + Send + Sync>> = Arc::new(Box::new(op));
    weight.apply_op2_arc(&ids, op) // (n, d)
}

/// See [`crate::backward::embedding`].
pub(crate) fn embedding_backward(weight: &Tensor, ids: &Tensor, grad: &Tensor) -> Result<Tensor> {
    let (op, weight, ids) = prepare(weight, ids)?;
    op.backward(&weight, &ids, grad)
}

/// Checks the arguments and returns the op with its inputs, contiguous.
fn prepare(weight: &Tensor, ids: &Tensor) -> Result<(Embedding, Tensor, Tensor)> {
    let (v, d) = match weight.dims() {
        &[v, d] if v > 0 && d > 0 => (v, d),
        other => bail!("{NAME}: `weight` must be (vocab, dim), got shape {other:?}"),
    };
    let n = match ids.dims() {
        &[n] => n,
        other => bail!("{NAME}: `ids` must be 1-D (positions,), got shape {other:?}"),
    };
    if ids.dtype() != DType::U32 {
        bail!("{NAME}: `ids` must be u32, got {:?}", ids.dtype())
    }
    if !matches!(weight.dtype(), DType::F32 | DType::F64 | DType::BF16) {
        bail!("{NAME}: `weight` must be f32, f64 or bf16, got {:?}", weight.dtype())
    }
    Ok((Embedding { v, d, n }, weight.contiguous()?, ids.contiguous()?))
}

struct Embedding {
    v: usize,
    d: usize,
    n: usize,
}

impl Embedding {
    /// dW for the output's gradient `grad: (n, d)`, in w's dtype: the op's autograd backward and
    /// [`embedding_backward`] both run this. Reads the ids back to the host (for the index).
    fn backward(&self, w: &Tensor, ids: &Tensor, grad: &Tensor) -> Result<Tensor> {
        if grad.dims() != [self.n, self.d] {
            bail!("{NAME}: gradient has shape {:?}, expected {:?}", grad.dims(), [self.n, self.d])
        }
        embedding_rows(&TokenIndex::new(ids, self.v)?, grad, None, w.dtype()) // (V, d)
    }
}

impl CustomOp2 for Embedding {
    fn name(&self) -> &'static str {
        NAME
    }

    fn cpu_fwd(&self, w: &CpuStorage, lw: &Layout, ids: &CpuStorage, lids: &Layout) -> Result<(CpuStorage, Shape)> {
        let id_slice = contiguous_slice::<u32>(NAME, "ids", ids, lids)?;
        if let Some((p, &id)) = id_slice.iter().enumerate().find(|(_, &id)| id as usize >= self.v) {
            bail!("{NAME}: id {id} at position {p} is out of range for a vocabulary of {}", self.v)
        }
        Ok((w.index_select(ids, lw, lids, 0)?, Shape::from((self.n, self.d))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        w: &candle_core::CudaStorage,
        lw: &Layout,
        ids: &candle_core::CudaStorage,
        lids: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        Ok((w.index_select(ids, lw, lids, 0)?, Shape::from((self.n, self.d))))
    }

    fn bwd(&self, w: &Tensor, ids: &Tensor, _y: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        Ok((Some(self.backward(w, ids, grad)?), None))
    }
}
