//! The hand-written backward of [`MambaLM::loss`], as llm.c writes its model's backward: the
//! forward saves each block's activations (the tensors candle's autograd graph would hold), and
//! the backward walks the blocks in reverse, calling each op's backward (`mamba_ops::backward`)
//! and the matmuls' transposes directly. Every gradient is written once.
//!
//! Why not `loss.backward()`: candle 0.11.1's autograd adds every node's gradient into a fresh
//! zero tensor (`GradStore::or_insert` in candle-core's `backprop.rs`; upstream PRs
//! huggingface/candle#3578 and #3822 store the first gradient directly, both open), which cost
//! about 32 ms per step at micro-batch 16 for the 130m model on an H200, plus a kernel launch per
//! node for the graph's small reshapes, casts and concatenations. Here the mixer's conv also runs
//! its backward once for both uses of its output (`mamba_ops::backward::mixer_conv`).
//!
//! The autograd path stays: `MambaLM::loss` for evaluation and as the reference the tests below
//! compare every parameter's gradient with.

use candle_core::backprop::GradStore;
use candle_core::{DType, Result, Tensor};
use mamba_ops::TokenIndex;

use super::mamba::{BlockActs, MambaLM};

/// What [`MambaLM::backward`] needs of the forward.
pub struct Saved {
    index: TokenIndex, // the positions of each id in the flattened (b·l,) ids
    blocks: Vec<BlockActs>,
    last_residual: Tensor, // (b·l, d), norm_f's input (f32)
    dhidden: Tensor,       // (b·l, d), the gradient of norm_f's output (compute dtype)
    d_emb_head: Tensor,    // (V, d), the head's share of the embedding's gradient
}

/// The matmul weights in the compute dtype, without autograd history: every layer's in_proj,
/// x_proj, dt_proj and out_proj, and the head (the tied embedding). The weights change only in
/// the optimizer's update, so a step casts them once for all its micro-batches
/// ([`MambaLM::compute_weights`]; under bf16 that was 5 casts per layer and micro-batch). With an
/// f32 model they are the weights themselves (no copies).
pub struct ComputeWeights {
    pub(super) layers: Vec<[Tensor; 4]>,
    pub(super) head: Tensor, // (V, d)
}

impl MambaLM {
    /// The matmul weights as the forward reads them now; valid until the next update.
    pub fn compute_weights(&self) -> Result<ComputeWeights> {
        let layers = self.layers.iter().map(|b| b.mixer.matmul_weights(self.compute)).collect::<Result<_>>()?;
        Ok(ComputeWeights { layers, head: self.embeddings.detach().to_dtype(self.compute)? })
    }

    /// The loss of [`MambaLM::loss`] (scalar, f32 or f64; no autograd history) and what
    /// [`MambaLM::backward`] needs for the gradient of `scale · loss`, with the matmul weights
    /// `weights` (this model's [`MambaLM::compute_weights`] since its last update) and the ids'
    /// `index` for the embedding's gradient (built from the ids, read back from the device, when
    /// not given). The LM head and the loss run their backward here, by row blocks
    /// (`head_loss.rs`): the whole logits are never held.
    pub fn forward_saved(
        &self,
        ids: &Tensor,
        targets: &Tensor,
        weights: &ComputeWeights,
        index: Option<TokenIndex>,
        scale: f64,
    ) -> Result<(Tensor, Saved)> {
        if weights.layers.len() != self.layers.len() {
            candle_core::bail!(
                "forward_saved: weights for {} layers, the model has {}",
                weights.layers.len(),
                self.layers.len()
            )
        }
        let vocab = self.embeddings.dim(0)?;
        let index = match index {
            Some(i) if i.vocab() == vocab && i.tokens() == ids.elem_count() => i,
            Some(i) => candle_core::bail!(
                "forward_saved: a token index of {} ids over {} rows, expected {} over {vocab}",
                i.tokens(),
                i.vocab(),
                ids.elem_count()
            ),
            None => TokenIndex::new(&ids.flatten_all()?, vocab)?,
        };
        let (hidden, blocks, last_residual) = self.hidden_rows_acts(ids, Some(weights))?; // (b·l, d)

        // LM head and loss, with their backward: logits = h Eᵀ (the head tied to the embedding).
        let targets = targets.flatten_all()?; // (b·l,)
        let rows = super::head_loss::block_rows(vocab);
        let head = super::head_loss::head_loss(&hidden, &weights.head, &targets, scale, rows, self.embeddings.dtype())?;
        let saved = Saved { index, blocks, last_residual, dhidden: head.dhidden, d_emb_head: head.dhead };
        Ok((head.loss, saved))
    }

    /// The gradient of `scale · loss` (the `scale` given to [`MambaLM::forward_saved`]) for every
    /// parameter, filed under the parameter's tensor (what `loss.affine(scale, 0)?.backward()`
    /// returns for the parameters).
    pub fn backward(&self, saved: Saved) -> Result<GradStore> {
        let Saved { index, blocks, last_residual, dhidden, d_emb_head } = saved;
        let (cd, eps) = (self.compute, self.cfg.norm_eps);
        let mut grads = GradStore::default();
        // Gradients in another dtype than their parameter's (the bf16 matmul weights') wait for
        // one batched conversion at the end (`mamba_ops::cast_many`: one launch on the GPU).
        let mut convert: Vec<(Tensor, Tensor)> = Vec::new();
        let mut put = |param: &Tensor, g: Tensor| -> Result<()> {
            if g.dtype() == param.dtype() {
                grads.insert(param, g.reshape(param.shape())?);
            } else {
                convert.push((param.clone(), g));
            }
            Ok(())
        };
        // The LM head's backward ran in the forward (dhidden, d_emb_head).
        // The stream's gradient dres (f32) and its copy in the compute dtype for the matmuls.
        let (mut dres, d_norm_f, mut dres_cd) =
            rms_norm_into_backward(&last_residual, &self.norm_f, eps, cd, &dhidden, None)?; // (b·l, d)
        put(&self.norm_f, d_norm_f)?;
        // The blocks in reverse: residual_out = residual + mixer(norm(residual)).
        for (block, acts) in self.layers.iter().zip(blocks).rev() {
            let dx = block.mixer.backward(&acts.mixer, &dres_cd, &mut put)?; // (b·l, d)
                                                                             // The stream's gradient: what passed through the add plus the norm's (one kernel).
            let (dres_in, d_norm, dres_in_cd) =
                rms_norm_into_backward(&acts.residual, &block.norm, eps, cd, &dx, Some(&dres))?; // (b·l, d)
            put(&block.norm, d_norm)?;
            (dres, dres_cd) = (dres_in, dres_in_cd);
        }
        // The embedding: the head's gradient plus its lookup's, in one pass.
        let d_emb = mamba_ops::backward::embedding_rows(&index, &dres, Some(&d_emb_head), self.embeddings.dtype())?; // (V, d)
        put(&self.embeddings, d_emb)?;
        // One conversion per parameter dtype (f32 for all of them in practice).
        while let Some(dtype) = convert.first().map(|(p, _)| p.dtype()) {
            let (now, rest): (Vec<_>, Vec<_>) = convert.into_iter().partition(|(p, _)| p.dtype() == dtype);
            convert = rest;
            let (params, gs): (Vec<Tensor>, Vec<Tensor>) = now.into_iter().unzip();
            for (p, g) in params.iter().zip(mamba_ops::cast_many(&gs, dtype)?) {
                grads.insert(p, g.reshape(p.shape())?);
            }
        }
        Ok(grads)
    }
}

/// The backward of `y = x wᵀ` (`layers::linear` on 2-D input) for `dy: (rows, out)`:
/// `(dx = dy w: (rows, in), dw = dyᵀ x: (out, in))`.
pub(super) fn linear_backward(x: &Tensor, w: &Tensor, dy: &Tensor) -> Result<(Tensor, Tensor)> {
    Ok((dy.matmul(w)?, dy.t()?.matmul(x)?))
}

/// The backward of `layers::rms_norm_into(x, weight, eps, dtype)`: `(dx (+ add), dweight, dx in
/// dtype)` (on the GPU under bf16 the same kernel writes both dx).
fn rms_norm_into_backward(
    x: &Tensor,
    weight: &Tensor,
    eps: f64,
    dtype: DType,
    grad: &Tensor,
    add: Option<&Tensor>,
) -> Result<(Tensor, Tensor, Tensor)> {
    let out = (x.dtype() != dtype).then_some(dtype);
    mamba_ops::backward::rms_norm_and_copy(x, &weight.detach(), eps, out, grad, add)
}

#[cfg(test)]
mod tests;
