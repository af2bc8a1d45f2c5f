//! The hybrid Muon + AdamW optimizer (issue 3, "Hybrid optimizer").
//!
//! Muon (momentum orthogonalized by Newton–Schulz) updates the 2-D hidden matrices in_proj,
//! x_proj and out_proj; AdamW updates everything else; `--optimizer adamw` uses AdamW for all.
//!
//! # API used by the training loop
//! ```text
//! // Build (params: Vec<(String, Var)> with Hugging Face Mamba names, model order):
//! let mut opt = HybridOptimizer::new(params, cfg)?;       // cfg: OptimConfig (Default = seed)
//! tracing::info!("\n{}", opt.groups_summary());           // groups with tensor/param counts
//! // opt.set_ns_dtype(DType::BF16)?;                      // on CUDA (default F32)
//!
//! // Each optimizer step (step = 0-based optimizer step index; lr schedule applied inside):
//! let mut grads: Vec<(String, Tensor)> = opt.grads_from_store(&grad_store)?; // param order
//! //   (with accumulation: sum/average micro-batch grads yourself, same names and order)
//! let grad_norm: f64 = clip_grad_norm(&mut grads, cfg.clip)?;   // pre-clip global L2 norm
//! let stats: StepStats = opt.step(&grads, step)?;  // { lr_muon, lr_adamw, muon_ms, adamw_ms }
//!
//! // Checkpoints:
//! let state: Vec<(String, Tensor)> = opt.state_tensors()?;  // f32 moments + "adamw.step" (i64)
//! opt.load_state_tensors(&state_map)?;   // HashMap<String, Tensor>; clear error on mismatch
//! ```
//! State names: `muon.momentum.{param}`, `adamw.m.{param}`, `adamw.v.{param}`, `adamw.step`.
//! Other pieces: [`route`]`(name, shape, kind) -> Result<Group>` (the single routing function;
//! an unknown name or a rank that does not fit the name is an error),
//! [`lr_multiplier`] (schedule), [`newton_schulz_batched`] (k, r, c) for benchmarks.
//! All errors are [`OptimError`]; `clip_grad_norm` returns `candle_core::Result`.

pub mod adamw;
pub mod clip;
pub mod config;
pub mod error;
pub mod hybrid;
pub mod muon;
pub mod muon_shard;
pub mod newton_schulz;
pub mod routing;
pub mod schedule;
pub mod state;

#[cfg(test)]
mod testutil;

pub use clip::{clip_grad_norm, global_grad_norm};
pub use config::OptimConfig;
pub use error::{OptimError, Result};
pub use hybrid::{HybridOptimizer, StepStats};
pub use newton_schulz::{newton_schulz, newton_schulz_batched};
pub use routing::{route, Group, OptimizerKind};
pub use schedule::lr_multiplier;
