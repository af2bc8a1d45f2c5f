//! The token embedding as one candle `CustomOp2` over `(weight, ids)`: rows of `weight: (V, d)`
//! at `ids: (n,)`, i.e. `weight.index_select(ids, 0)`, with a backward that is deterministic and
//! parallel on the GPU. candle's `index_add` backward ran the whole `(V, d)` accumulation in one
//! CUDA block (8.5 ms per step at micro-batch 16 for the 130m model on an H200).
//!
//! Backward: `dW[v] = Σ_{p : ids[p] = v} g[p]`, each row summed in position order on both
//! devices (`kernels/embedding.cu` on the GPU), so CPU and GPU agree bit for bit in f32.

#[cfg(feature = "cuda")]
mod cuda;

use crate::cpu_storage::{as_cpu, contiguous_slice};
use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor, WithDType};
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
    /// [`embedding_backward`] both run this.
    fn backward(&self, w: &Tensor, ids: &Tensor, grad: &Tensor) -> Result<Tensor> {
        let g = grad.to_dtype(w.dtype())?.contiguous()?; // (n, d)
        if g.dims() != [self.n, self.d] {
            bail!("{NAME}: gradient has shape {:?}, expected {:?}", g.dims(), [self.n, self.d])
        }
        #[cfg(feature = "cuda")]
        if w.device().is_cuda() {
            return cuda::backward(NAME, self.v, self.d, ids, &g);
        }
        let (is, il) = ids.storage_and_layout();
        let (gs, gl) = g.storage_and_layout();
        let id_slice = contiguous_slice::<u32>(NAME, "ids", as_cpu(NAME, "ids", ids, &is)?, il)?;
        let gs = as_cpu(NAME, "grad", &g, &gs)?;
        let dw = match w.dtype() {
            DType::F32 => Tensor::from_vec(self.cpu_bwd(id_slice, contiguous_slice::<f32>(NAME, "grad", gs, gl)?)?, (self.v, self.d), w.device())?,
            DType::F64 => Tensor::from_vec(self.cpu_bwd(id_slice, contiguous_slice::<f64>(NAME, "grad", gs, gl)?)?, (self.v, self.d), w.device())?,
            DType::BF16 => {
                let g32: Vec<f32> = contiguous_slice::<half::bf16>(NAME, "grad", gs, gl)?.iter().map(|x| x.to_f32()).collect();
                Tensor::from_vec(self.cpu_bwd(id_slice, &g32)?, (self.v, self.d), w.device())?.to_dtype(DType::BF16)?
            }
            other => bail!("{NAME}: internal error: bwd got dtype {other:?}"),
        };
        Ok(dw)
    }

    /// dW for CPU gradients `g: (n, d)` of type `T`: each row summed in position order.
    fn cpu_bwd<T: WithDType>(&self, ids: &[u32], g: &[T]) -> Result<Vec<T>> {
        let mut dw = vec![T::zero(); self.v * self.d];
        for (p, (&id, gr)) in ids.iter().zip(g.chunks_exact(self.d)).enumerate() {
            let Some(row) = dw.get_mut(id as usize * self.d..(id as usize + 1) * self.d) else {
                bail!("{NAME}: id {id} at position {p} is out of range for a vocabulary of {}", self.v)
            };
            for (w, &x) in row.iter_mut().zip(gr) {
                *w += x;
            }
        }
        Ok(dw)
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
