//! `embedding_rows`: the embedding weight's whole gradient in one pass, for a [`TokenIndex`] of
//! the ids, the lookup's gradient and, for a tied LM head, the head's gradient:
//! `dW[v] = head_grad[v] (or 0) + Σ_{p : ids[p] = v} grad[p]`.
//!
//! Order and precision: each row starts from the head's gradient (converted to the compute
//! dtype, or 0) and adds the lookup's gradient rows in increasing position order, in f32 (f64
//! when the result is f64): the same operations in the same order on both devices, so CPU and
//! GPU agree bit for bit in f32. The sum is rounded to the result's dtype once, at the end.
//!
//! Devices: the CPU runs a plain loop; CUDA runs `kernels/embedding.cu` (f32 sums, read from f32
//! or bf16), then converts to the result's dtype; an f64 result on CUDA goes through candle's
//! `index_add` in f64 (the same order, one block: slow, and unused by the trainer).

use super::index::TokenIndex;
use candle_core::{bail, DType, Result, Tensor, WithDType};

const NAME: &str = "embedding_rows";

/// See [`crate::backward::embedding_rows`].
pub(crate) fn embedding_rows(
    index: &TokenIndex,
    grad: &Tensor,
    head_grad: Option<&Tensor>,
    dtype: DType,
) -> Result<Tensor> {
    let (v, n) = (index.vocab(), index.tokens());
    let d = match grad.dims() {
        &[rows, d] if rows == n => d,
        other => bail!("{NAME}: `grad` must be (positions, dim) with {n} positions (the index's), got shape {other:?}"),
    };
    check_float("grad", grad.dtype())?;
    check_float("the result", dtype)?;
    let dev = index.offsets().device();
    if !grad.device().same_device(dev) {
        bail!("{NAME}: `grad` is on {:?}, the index on {:?}", grad.device().location(), dev.location())
    }
    if let Some(h) = head_grad {
        if h.dims() != [v, d] {
            bail!("{NAME}: `head_grad` must be (vocab, dim) = {:?}, got shape {:?}", [v, d], h.dims())
        }
        check_float("head_grad", h.dtype())?;
        if !h.device().same_device(dev) {
            bail!("{NAME}: `head_grad` is on {:?}, the index on {:?}", h.device().location(), dev.location())
        }
    }
    if d == 0 || n == 0 {
        return match head_grad {
            Some(h) => h.to_dtype(dtype), // (V, d)
            None => Tensor::zeros((v, d), dtype, dev),
        };
    }
    #[cfg(feature = "cuda")]
    if dev.is_cuda() && dtype != DType::F64 {
        return super::cuda::rows(index, grad, head_grad, d)?.to_dtype(dtype); // (V, d)
    }
    if dev.is_cuda() {
        // f64 on the GPU: the head's gradient first, then index_add's sums in position order.
        let base = match head_grad {
            Some(h) => h.to_dtype(DType::F64)?,
            None => Tensor::zeros((v, d), DType::F64, dev)?,
        };
        return base.index_add(index.ids(), &grad.to_dtype(DType::F64)?, 0); // (V, d)
    }
    let dw = if dtype == DType::F64 {
        cpu_rows::<f64>(index, grad, head_grad, d)?
    } else {
        cpu_rows::<f32>(index, grad, head_grad, d)?
    };
    dw.to_dtype(dtype) // (V, d)
}

fn check_float(what: &str, dtype: DType) -> Result<()> {
    if !dtype.is_float() {
        bail!("{NAME}: {what} must be a float dtype (f32, bf16, f16 or f64), got {dtype:?}")
    }
    Ok(())
}

/// The CPU loop, summing in `T` (f32 or f64): `(V, d)` in `T`.
fn cpu_rows<T: WithDType>(index: &TokenIndex, grad: &Tensor, head_grad: Option<&Tensor>, d: usize) -> Result<Tensor> {
    let v = index.vocab();
    let offsets = index.offsets().to_vec1::<u32>()?; // (V+1,)
    let positions = index.positions().to_vec1::<u32>()?; // (n,)
    let g = grad.to_dtype(T::DTYPE)?.flatten_all()?.to_vec1::<T>()?; // (n·d,)
    let mut dw = match head_grad {
        Some(h) => h.to_dtype(T::DTYPE)?.flatten_all()?.to_vec1::<T>()?, // (V·d,)
        None => vec![T::zero(); v * d],
    };
    for (row, (w, ends)) in dw.chunks_exact_mut(d).zip(offsets.windows(2)).enumerate() {
        let Some(ps) = positions.get(ends[0] as usize..ends[1] as usize) else {
            bail!("{NAME}: internal error: row {row}'s offsets {ends:?} exceed {} positions", positions.len())
        };
        for &p in ps {
            let p = p as usize;
            for (w, &x) in w.iter_mut().zip(&g[p * d..(p + 1) * d]) {
                *w += x;
            }
        }
    }
    Tensor::from_vec(dw, (v, d), grad.device())
}
