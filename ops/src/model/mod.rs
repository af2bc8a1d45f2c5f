//! The model's ops: what a forward and backward of the Mamba LM runs, each a candle custom op
//! with a CPU path, a CUDA path and its backward (`crate::backward` has the backwards as
//! functions for the trainer's hand-written backward).
//!
//! - `mixer`: the fused causal conv + selective scan of the mixer (the model's hot path);
//! - `rms_norm`, `residual`: the pre-norm block's norm and residual update;
//! - `embedding`, `cross_entropy`: the tied embedding's lookup and the LM head's loss.

pub(crate) mod cross_entropy;
pub(crate) mod embedding;
pub(crate) mod mixer;
pub(crate) mod residual;
pub(crate) mod rms_norm;
