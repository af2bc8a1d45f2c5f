//! The Mamba language model: `MambaLMHeadModel` of state-spaces/mamba
//! (`mamba_ssm/models/mixer_seq_simple.py`) = HF `MambaForCausalLM`.
//! Pre-norm residual blocks (residual stream in f32), final RMSNorm, LM head tied to the embedding.
//!
//! Mixed precision like PyTorch AMP (`with_compute_dtype(BF16)`): the parameters stay f32 (the
//! optimizer's master copy); each matmul weight is cast to bf16 where it is used, so matmuls and
//! activations are bf16, while the residual stream, the norms' statistics, the scan's recurrence
//! (its op computes in f32) and the loss stay f32. Gradients flow back through the casts into the
//! f32 parameters.

use candle_core::{bail, DType, Result, Tensor};
use candle_nn::VarBuilder;

use super::backward::ComputeWeights;
use super::config::MambaConfig;
use super::layers::{acc_dtype, rms_norm, rms_norm_into};
use super::mixer::{Mixer, MixerState};
use super::mixer_train::MixerActs;

pub(super) struct Block {
    pub norm: Tensor, // (d_model,)
    pub mixer: Mixer,
}

/// One block's activations for the hand-written backward (`backward.rs`).
pub(super) struct BlockActs {
    pub residual: Tensor, // (b·l, d_model), the block's input (f32)
    pub mixer: MixerActs,
}

pub struct MambaLM {
    pub(super) cfg: MambaConfig,
    pub(super) embeddings: Tensor, // (vocab_padded, d_model), also the LM head
    pub(super) layers: Vec<Block>,
    pub(super) norm_f: Tensor, // (d_model,)
    /// Dtype of matmuls and activations: f32 (default), bf16 (mixed precision) or f64 (tests).
    pub(super) compute: DType,
}

impl MambaLM {
    /// Builds the model over `vb`, which must hold every parameter under its HF name.
    pub fn new(cfg: &MambaConfig, vb: VarBuilder) -> Result<MambaLM> {
        let vb = vb.pp("backbone");
        let embeddings = vb.pp("embeddings").get((cfg.padded_vocab(), cfg.d_model), "weight")?;
        let mut layers = Vec::with_capacity(cfg.n_layer);
        for i in 0..cfg.n_layer {
            let vb = vb.pp("layers").pp(i);
            layers.push(Block {
                norm: vb.pp("norm").get(cfg.d_model, "weight")?,
                mixer: Mixer::new(cfg, vb.pp("mixer"))?,
            });
        }
        let norm_f = vb.pp("norm_f").get(cfg.d_model, "weight")?;
        let compute = embeddings.dtype();
        Ok(MambaLM { cfg: cfg.clone(), embeddings, layers, norm_f, compute })
    }

    /// Runs matmuls and activations in `dtype` (bf16: mixed precision; see the module docs).
    pub fn with_compute_dtype(mut self, dtype: DType) -> Result<MambaLM> {
        match (self.embeddings.dtype(), dtype) {
            (p, c) if p == c => {}
            (DType::F32, DType::BF16) => {}
            (p, c) => bail!("compute dtype {c:?} with {p:?} parameters is not supported"),
        }
        self.compute = dtype;
        Ok(self)
    }

    pub fn compute_dtype(&self) -> DType {
        self.compute
    }

    pub fn config(&self) -> &MambaConfig {
        &self.cfg
    }

    /// Token ids `(b, l)` (u32) → final hidden states `(b, l, d_model)` after norm_f.
    pub fn hidden(&self, ids: &Tensor) -> Result<Tensor> {
        let (b, l) = ids.dims2()?;
        self.hidden_rows(ids)?.reshape((b, l, self.cfg.d_model)) // (b, l, d)
    }

    /// Token ids `(b, l)` → final hidden states as rows `(b·l, d_model)`. The activations stay
    /// 2-D through every layer: each reshape would be an autograd node whose backward adds the
    /// gradient into a zero tensor of its size (about 16 ms per step at micro-batch 16 for the
    /// reshapes `linear` needs on 3-D inputs; docs/benchmarks.md).
    fn hidden_rows(&self, ids: &Tensor) -> Result<Tensor> {
        Ok(self.hidden_rows_acts(ids, None)?.0)
    }

    /// [`MambaLM::hidden_rows`] and, given `weights` (the hand-written backward's forward: the
    /// parameters read without autograd history, the matmul weights already cast), every block's
    /// activations and the last residual (norm_f's input).
    pub(super) fn hidden_rows_acts(
        &self,
        ids: &Tensor,
        weights: Option<&ComputeWeights>,
    ) -> Result<(Tensor, Vec<BlockActs>, Tensor)> {
        let (_, l) = ids.dims2()?;
        let detached = weights.is_some();
        let p = |t: &Tensor| if detached { t.detach() } else { t.clone() };
        // The fused embedding op: index_select's gather with a parallel, deterministic backward.
        let h = mamba_ops::embedding(&p(&self.embeddings), &ids.flatten_all()?)?; // (b·l, d)
        let acc = acc_dtype(self.embeddings.dtype());
        let mut residual = h.to_dtype(acc)?; // (b·l, d)
        let mut acts = Vec::new();
        for (i, block) in self.layers.iter().enumerate() {
            let x = rms_norm_into(&residual, &p(&block.norm), self.cfg.norm_eps, self.compute)?; // (b·l, d)
            let x = match weights {
                Some(w) => {
                    let (x, mixer) = block.mixer.forward_saved(&x, l, &w.layers[i])?; // (b·l, d)
                    acts.push(BlockActs { residual: residual.clone(), mixer });
                    x
                }
                None => block.mixer.forward(&x, l)?, // (b·l, d)
            };
            residual = mamba_ops::residual_add(&residual, &x)?; // (b·l, d): + x in acc's dtype
        }
        let h = rms_norm_into(&residual, &p(&self.norm_f), self.cfg.norm_eps, self.compute)?; // (b·l, d)
        Ok((h, acts, residual))
    }

    /// Token ids `(b, l)` → logits `(b, l, vocab_padded)` in the compute dtype.
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        let (b, l) = ids.dims2()?;
        let h = self.hidden_rows(ids)?; // (b·l, d)
        let logits = super::layers::linear(&h, &self.embeddings.to_dtype(self.compute)?)?; // (b·l, V)
        logits.reshape((b, l, ())) // (b, l, V)
    }

    /// Mean next-token cross-entropy: `ids (b, l)` predict `targets (b, l)`. Scalar f32 (f64
    /// for an f64 model). The fused loss reads bf16 logits directly and computes in f32.
    ///
    /// The logits are made 2-D by the matmul itself, from the 2-D hidden states: every reshape
    /// is an autograd node whose backward adds the gradient into a zero tensor of its size, and
    /// at (b·l, V) that costs about 3.5 ms per reshape per step at micro-batch 16 on an H200.
    pub fn loss(&self, ids: &Tensor, targets: &Tensor) -> Result<Tensor> {
        let h = self.hidden_rows(ids)?; // (b·l, d)
        let logits = h.matmul(&self.embeddings.to_dtype(self.compute)?.t()?)?; // (b·l, V)
        super::cross_entropy::cross_entropy(&logits, &targets.flatten_all()?) // ()
    }

    /// Recurrent state of every layer, zeros.
    pub fn zero_state(&self, batch: usize) -> Result<Vec<MixerState>> {
        self.layers.iter().map(|b| b.mixer.zero_state(batch)).collect()
    }

    /// One token per sequence `(b,)` → logits `(b, vocab_padded)` of the next token; O(1) in the
    /// length so far (HF `MambaForCausalLM` with `cache_params`).
    pub fn step(&self, ids: &Tensor, state: &mut [MixerState]) -> Result<Tensor> {
        let mut residual = self.embeddings.index_select(ids, 0)?.to_dtype(acc_dtype(self.embeddings.dtype()))?; // (b, d)
        for (block, st) in self.layers.iter().zip(state.iter_mut()) {
            let x = rms_norm(&residual, &block.norm, self.cfg.norm_eps)?; // (b, d)
            residual = (residual + block.mixer.step(&x, st)?)?; // (b, d)
        }
        let h = rms_norm(&residual, &self.norm_f, self.cfg.norm_eps)?; // (b, d)
        super::layers::linear(&h, &self.embeddings) // (b, V)
    }
}
