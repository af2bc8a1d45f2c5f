//! One model replica: parameters, model and optimizer on one device, plus the rank's
//! communicator in data-parallel training. A single-device run is one replica without a
//! communicator, which takes exactly the steps `train_step` always took.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};

use super::step::{train_step_on_rank, Shard, StepResult};
use crate::data::Batch;
use crate::model::{MambaConfig, MambaLM, Params};
use crate::optim::{HybridOptimizer, OptimConfig};
use crate::parallel::Comm;

/// What every replica starts from, held as CPU tensors shared by the rank threads: each replica
/// copies the same values to its device, so all ranks start identical. Dropped once every replica
/// is built.
pub struct ReplicaInit {
    pub model: MambaConfig,
    /// Initial weights (fresh, `--init-from` or resumed), by Hugging Face name.
    pub weights: HashMap<String, Tensor>,
    /// Resumed optimizer state and the checkpoint it came from (for error messages).
    pub optimizer_state: Option<(PathBuf, HashMap<String, Tensor>)>,
    pub optim: OptimConfig,
    /// Compute dtype (bf16 = mixed precision with f32 master weights).
    pub dtype: DType,
    pub clip: f64,
}

pub struct Replica {
    pub device: Device,
    pub params: Params,
    pub model: MambaLM,
    pub opt: HybridOptimizer,
    /// The rank's group; `None` on a single device.
    pub comm: Option<Box<dyn Comm>>,
    clip: f64,
}

impl Replica {
    /// Builds the replica on `device` from `init` (weights and optimizer state copied there).
    pub fn build(init: &ReplicaInit, device: Device, comm: Option<Box<dyn Comm>>) -> Result<Replica> {
        let params = Params::from_tensors(&init.model, init.weights.clone(), &device)
            .context("copying the initial weights to the device")?;
        let model = MambaLM::new(&init.model, params.var_builder(&device))?.with_compute_dtype(init.dtype)?;
        let mut opt = HybridOptimizer::new(params.named_vars().to_vec(), init.optim.clone())?;
        if init.dtype == DType::BF16 {
            // Mixed precision: Newton–Schulz in bf16 as in Keller Jordan's Muon (momentum stays f32).
            opt.set_ns_dtype(init.dtype)?;
        }
        if let Some((dir, state)) = &init.optimizer_state {
            opt.load_state_tensors(state).with_context(|| format!("{}: optimizer.safetensors", dir.display()))?;
        }
        Ok(Replica { device, params, model, opt, comm, clip: init.clip })
    }

    /// This rank's part of optimizer step `step` (0-based) on `batches`, of `global_rows`
    /// sequences over all ranks.
    pub fn step(&mut self, batches: &[Batch], global_rows: usize, step: usize) -> Result<StepResult> {
        let shard = Shard { comm: self.comm.as_deref(), global_rows };
        train_step_on_rank(&self.model, &mut self.opt, batches, self.clip, step, &self.device, shard)
    }

    /// Tells the other ranks this one failed, so none waits for it in a collective.
    pub fn abort(&self, reason: &str) {
        if let Some(comm) = &self.comm {
            comm.abort(reason);
        }
    }
}
