//! The LM head and the loss, forward and backward together, by blocks of rows: the training
//! path's `logits = h Eᵀ` (the head tied to the embedding E), the mean cross-entropy, and their
//! gradients for `h` and `E`. The loss is the graph's end, so its gradient is known as soon as a
//! block's logits are: each block's logits and their gradient live only while that block is
//! worked on, never the whole (b·l, V). At the 130m model's micro-batch 16 in bf16 that is
//! 2 × 1.65 GB of logits and their gradient that the step no longer holds at once (Liger
//! Kernel's "fused linear cross entropy" does the same in PyTorch).
//!
//! Per block of m rows (of n): `logits = h Eᵀ` (m, V); the per-row `[loss, lse]`
//! (`mamba_ops::cross_entropy_rows`); `dlogits = scale/n · (softmax − onehot)`
//! (`mamba_ops::backward::cross_entropy`); `dh = dlogits E` (m, d) and `dE += dlogitsᵀ h` (V, d),
//! summed over the blocks in f32 in block order (deterministic). One block: the previous path's
//! arithmetic exactly.

use candle_core::{DType, Result, Tensor};

use super::backward::linear_backward;

/// The most logits one block holds: 2²⁷ elements, 256 MiB in bf16 (2,560 rows of the padded
/// 50,264-token vocabulary; the 130m model's micro-batch 16 of 16,384 rows takes 7 blocks).
pub const BLOCK_LOGITS: usize = 1 << 27;

/// Rows per block for a vocabulary of `vocab`: as many as fit [`BLOCK_LOGITS`], a multiple of
/// 256 when that is at least 256 (whole tiles for the matmuls), at least one.
pub fn block_rows(vocab: usize) -> usize {
    let rows = BLOCK_LOGITS / vocab.max(1);
    if rows >= 256 {
        rows / 256 * 256
    } else {
        rows.max(1)
    }
}

/// What [`head_loss`] returns: the loss and the gradients of `scale · loss`.
pub struct HeadLoss {
    /// The mean of the rows' losses, () f32 (f64 for f64 logits).
    pub loss: Tensor,
    /// The gradient for the head's input `h`: (n, d), `h`'s dtype.
    pub dhidden: Tensor,
    /// The gradient for the head's weight E: (V, d), in `E`'s dtype when there is one block,
    /// else in `acc_dtype`.
    pub dhead: Tensor,
}

/// The loss `mean_i CE(h_i Eᵀ, t_i)` for `hidden: (n, d)`, `head: (V, d)` (E, in `hidden`'s
/// dtype) and `targets: (n,)` u32, with the gradients of `scale · loss`, `rows` rows at a time.
/// With several blocks E's gradient is summed in `acc_dtype` (the embedding's master dtype: f32,
/// or f64 in the f64 tests).
pub fn head_loss(
    hidden: &Tensor,
    head: &Tensor,
    targets: &Tensor,
    scale: f64,
    rows: usize,
    acc_dtype: DType,
) -> Result<HeadLoss> {
    let n = hidden.dim(0)?;
    if n == 0 || rows == 0 {
        candle_core::bail!("head_loss: {n} rows in blocks of {rows}")
    }
    let mut row_losses = Vec::new(); // (m, 2) per block: [loss, lse]
    let mut dhidden = Vec::new(); // (m, d) per block
    let mut dhead: Option<Tensor> = None; // (V, d)
    for start in (0..n).step_by(rows) {
        let m = rows.min(n - start);
        let h = hidden.narrow(0, start, m)?; // (m, d)
        let t = targets.narrow(0, start, m)?; // (m,)
        let logits = h.matmul(&head.t()?)?; // (m, V)
        let r = mamba_ops::cross_entropy_rows(&logits, &t)?; // (m, 2)

        // The kernel scales by 1/m (its rows); the loss is the mean over all n rows.
        let block_scale = if m == n { scale } else { scale * m as f64 / n as f64 };
        let dlogits = mamba_ops::backward::cross_entropy(&logits, &t, &r, block_scale)?; // (m, V)
        drop(logits);
        let (dh, de) = linear_backward(&h, head, &dlogits)?; // (m, d), (V, d)
        drop(dlogits);
        dhead = Some(match dhead {
            None if m == n => de,
            None => de.to_dtype(acc_dtype)?,
            Some(acc) => add_into(acc, &de)?,
        });
        row_losses.push(r);
        dhidden.push(dh);
    }
    let row_losses = Tensor::cat(&row_losses, 0)?; // (n, 2)
    let loss = row_losses.narrow(1, 0, 1)?.mean_all()?; // ()
    let dhidden = Tensor::cat(&dhidden, 0)?; // (n, d)
    let dhead = dhead.ok_or_else(|| candle_core::Error::Msg("head_loss: no block".into()))?;
    Ok(HeadLoss { loss, dhidden, dhead })
}

/// `acc + x`, in place when `acc` is f32 and `x` f32 or bf16 (one launch on the GPU), else by
/// candle ops in `acc`'s dtype.
fn add_into(acc: Tensor, x: &Tensor) -> Result<Tensor> {
    if acc.dtype() == DType::F32 && matches!(x.dtype(), DType::F32 | DType::BF16) && acc.is_contiguous() {
        mamba_ops::add_in_place(std::slice::from_ref(&acc), &[x.contiguous()?])?;
        Ok(acc)
    } else {
        let x = x.to_dtype(acc.dtype())?;
        acc + x
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use candle_core::Device;
    use rand::{Rng, SeedableRng};

    fn rand(rng: &mut rand_chacha::ChaCha8Rng, dims: &[usize], dtype: DType) -> Tensor {
        let v: Vec<f32> = (0..dims.iter().product()).map(|_| rng.gen_range(-1f32..1.0)).collect();
        Tensor::from_vec(v, dims, &Device::Cpu).unwrap().to_dtype(dtype).unwrap()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
        let a = a.to_dtype(DType::F64).unwrap().flatten_all().unwrap();
        let b = b.to_dtype(DType::F64).unwrap().flatten_all().unwrap();
        (a - b).unwrap().abs().unwrap().max(0).unwrap().to_scalar::<f64>().unwrap()
    }

    /// Blocks of 1, 3, 7 and all 20 rows against candle's autograd through the whole logits,
    /// in f64 (to rounding) and bf16 (to bf16 noise, E's gradient summed in f32).
    #[test]
    fn blocks_match_autograd_through_the_whole_logits() {
        let (n, d, v) = (20, 8, 37);
        for dtype in [DType::F64, DType::BF16] {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
            let hidden = candle_core::Var::from_tensor(&rand(&mut rng, &[n, d], dtype)).unwrap();
            let head = candle_core::Var::from_tensor(&rand(&mut rng, &[v, d], dtype)).unwrap();
            let ids: Vec<u32> = (0..n).map(|_| rng.gen_range(0..v as u32)).collect();
            let targets = Tensor::from_vec(ids, n, &Device::Cpu).unwrap();
            let scale = 0.375;
            let logits = hidden.as_tensor().matmul(&head.as_tensor().t().unwrap()).unwrap();
            let want_loss = candle_nn::loss::cross_entropy(&logits.to_dtype(DType::F64).unwrap(), &targets).unwrap();
            let grads =
                mamba_ops::cross_entropy(&logits, &targets).unwrap().affine(scale, 0.0).unwrap().backward().unwrap();
            let (want_dh, want_de) = (grads.get(hidden.as_tensor()).unwrap(), grads.get(head.as_tensor()).unwrap());
            let acc = if dtype == DType::F64 { DType::F64 } else { DType::F32 };
            let tol = if dtype == DType::F64 { 1e-12 } else { 2e-2 };
            for rows in [1, 3, 7, n] {
                let got = head_loss(hidden.as_tensor(), head.as_tensor(), &targets, scale, rows, acc).unwrap();
                let loss_diff = max_diff(&got.loss.reshape(1).unwrap(), &want_loss.reshape(1).unwrap());
                assert!(loss_diff < tol, "{dtype:?} rows {rows}: loss differs by {loss_diff}");
                assert_eq!(got.dhidden.dims(), &[n, d]);
                assert_eq!(got.dhead.dims(), &[v, d]);
                assert_eq!(got.dhead.dtype(), if rows == n { dtype } else { acc }, "rows {rows}");
                let (eh, ee) = (max_diff(&got.dhidden, want_dh), max_diff(&got.dhead, want_de));
                assert!(eh < tol && ee < tol, "{dtype:?} rows {rows}: dh off by {eh}, dE off by {ee}");
            }
        }
    }

    #[test]
    fn one_block_is_the_whole_logits_bit_for_bit() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
        let (hidden, head) = (rand(&mut rng, &[12, 8], DType::F32), rand(&mut rng, &[29, 8], DType::F32));
        let targets = Tensor::from_vec((0..12u32).map(|i| i * 2 % 29).collect::<Vec<_>>(), 12, &Device::Cpu).unwrap();
        let got = head_loss(&hidden, &head, &targets, 0.5, 12, DType::F32).unwrap();
        let logits = hidden.matmul(&head.t().unwrap()).unwrap();
        let rows = mamba_ops::cross_entropy_rows(&logits, &targets).unwrap();
        let dlogits = mamba_ops::backward::cross_entropy(&logits, &targets, &rows, 0.5).unwrap();
        let (dh, de) = linear_backward(&hidden, &head, &dlogits).unwrap();
        assert_eq!(max_diff(&got.dhidden, &dh), 0.0);
        assert_eq!(max_diff(&got.dhead, &de), 0.0);
        let loss = rows.narrow(1, 0, 1).unwrap().mean_all().unwrap();
        assert_eq!(got.loss.to_scalar::<f32>().unwrap(), loss.to_scalar::<f32>().unwrap());
    }

    #[test]
    fn block_rows_fill_the_budget_in_whole_tiles() {
        assert_eq!(block_rows(50_264), 2_560); // 130m..1.4b's padded vocabulary
        assert_eq!(block_rows(1 << 27), 1);
        assert_eq!(block_rows(1 << 28), 1);
        assert_eq!(block_rows(1 << 10), 1 << 17);
        assert_eq!(block_rows(600_000), 223); // fewer than 256: as many as fit
        assert!(head_loss(
            &Tensor::zeros((0, 4), DType::F32, &Device::Cpu).unwrap(),
            &Tensor::zeros((3, 4), DType::F32, &Device::Cpu).unwrap(),
            &Tensor::zeros(0, DType::U32, &Device::Cpu).unwrap(),
            1.0,
            4,
            DType::F32
        )
        .is_err());
    }
}
