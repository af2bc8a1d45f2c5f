//! The hybrid optimizer: routes every parameter once (routing.rs) to Muon or AdamW, applies the
//! shared learning-rate schedule, and saves/restores the state of both for checkpoints.

use super::adamw::AdamW;
use super::config::OptimConfig;
use super::error::{OptimError, Result};
use super::muon::Muon;
use super::routing::{route, Group, OptimizerKind};
use super::schedule::lr_multiplier;
use crate::parallel::Comm;
use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use std::collections::{HashMap, HashSet};
use std::time::Instant;

/// What one optimizer step did, for the metrics.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepStats {
    /// Learning rate used by the Muon group (scheduled even if the group is empty).
    pub lr_muon: f64,
    /// Learning rate used by both AdamW groups.
    pub lr_adamw: f64,
    /// Wall time of the Muon update, ms (device synchronized).
    pub muon_ms: f64,
    /// Wall time of the AdamW update, ms (device synchronized).
    pub adamw_ms: f64,
}

/// Muon for the hidden matrices, AdamW for the rest (or AdamW for all in `adamw` mode).
pub struct HybridOptimizer {
    cfg: OptimConfig,
    /// All parameters in the caller's order.
    params: Vec<(String, Var)>,
    /// Per parameter: its group and its index inside the Muon or AdamW component.
    slots: Vec<(Group, usize)>,
    muon: Muon,
    adamw: AdamW,
    device: Device,
}

impl HybridOptimizer {
    /// Routes `params` (Hugging Face Mamba names) and creates zeroed f32 state on their devices.
    /// Errors on an invalid config, no parameters, a duplicate or unknown name, a bad rank.
    pub fn new(params: Vec<(String, Var)>, cfg: OptimConfig) -> Result<Self> {
        cfg.validate()?;
        let device = params.first().ok_or(OptimError::NoParameters)?.1.device().clone();
        let mut seen = HashSet::new();
        let (mut muon_params, mut adamw_params, mut slots) = (Vec::new(), Vec::new(), Vec::new());
        for (name, var) in &params {
            if !seen.insert(name.as_str()) {
                return Err(OptimError::DuplicateParameter(name.clone()));
            }
            let group = route(name, var.dims(), cfg.kind)?;
            match group {
                Group::Muon => {
                    slots.push((group, muon_params.len()));
                    muon_params.push((name.clone(), var.clone()));
                }
                Group::AdamWDecay | Group::AdamWNoDecay => {
                    slots.push((group, adamw_params.len()));
                    adamw_params.push((name.clone(), var.clone(), group == Group::AdamWDecay));
                }
            }
        }
        let muon = Muon::new(muon_params, cfg.muon_momentum, cfg.muon_nesterov, cfg.ns_steps)?;
        let adamw = AdamW::new(adamw_params, cfg.adam_beta1, cfg.adam_beta2, cfg.adam_eps)?;
        Ok(Self { cfg, params, slots, muon, adamw, device })
    }

    /// The dtype Newton–Schulz computes in (default f32; bf16 is meant for CUDA).
    pub fn set_ns_dtype(&mut self, dtype: DType) -> Result<()> {
        self.muon.set_ns_dtype(dtype)
    }

    pub fn config(&self) -> &OptimConfig {
        &self.cfg
    }

    /// The gradient of every parameter from a backward pass, in parameter order, ready for
    /// [`clip_grad_norm`](super::clip_grad_norm) and [`HybridOptimizer::step`]. A parameter
    /// without gradient is an error (every Mamba parameter takes part in the loss).
    pub fn grads_from_store(&self, store: &GradStore) -> Result<Vec<(String, Tensor)>> {
        self.params
            .iter()
            .map(|(name, var)| match store.get(var.as_tensor()) {
                Some(g) => Ok((name.clone(), g.clone())),
                None => Err(OptimError::MissingGrad(name.clone())),
            })
            .collect()
    }

    /// A zero gradient for every parameter, in parameter order (what a data-parallel rank
    /// without micro-batches contributes to the all-reduce).
    pub fn zero_grads(&self) -> Result<Vec<(String, Tensor)>> {
        self.params.iter().map(|(name, var)| Ok((name.clone(), var.as_tensor().zeros_like()?))).collect()
    }

    /// One optimizer update at (0-based) step `step`, with learning rates
    /// `base_lr · lr_multiplier(step, warmup, total, final_frac)`. `grads` must list every
    /// parameter once, in the order given to [`HybridOptimizer::new`]; clip them before.
    pub fn step(&mut self, grads: &[(String, Tensor)], step: usize) -> Result<StepStats> {
        self.step_with(grads, step, None)
    }

    /// [`HybridOptimizer::step`] on one rank of a data-parallel group: `grads` are the
    /// all-reduced (identical on every rank) gradients; Muon's Newton–Schulz work is shared out
    /// over the ranks of `comm` ([`Muon::step_with`]); AdamW runs replicated.
    pub fn step_with(&mut self, grads: &[(String, Tensor)], step: usize, comm: Option<&dyn Comm>) -> Result<StepStats> {
        if grads.len() != self.params.len() {
            return Err(OptimError::GradCountMismatch { expected: self.params.len(), got: grads.len() });
        }
        let mut muon_grads = Vec::new();
        let mut adamw_grads = Vec::new();
        for (index, (((name, var), (gname, g)), (group, _))) in
            self.params.iter().zip(grads).zip(&self.slots).enumerate()
        {
            if name != gname {
                return Err(OptimError::GradNameMismatch { index, expected: name.clone(), got: gname.clone() });
            }
            if g.dims() != var.dims() {
                return Err(OptimError::GradShapeMismatch {
                    name: name.clone(),
                    expected: var.dims().to_vec(),
                    got: g.dims().to_vec(),
                });
            }
            match group {
                Group::Muon => muon_grads.push(g.clone()),
                Group::AdamWDecay | Group::AdamWNoDecay => adamw_grads.push(g.clone()),
            }
        }
        let c = &self.cfg;
        let mult = lr_multiplier(step, c.warmup_steps, c.total_steps, c.final_lr_frac);
        let (lr_muon, lr_adamw) = (c.muon_lr * mult, c.adamw_lr * mult);

        let t0 = Instant::now();
        self.muon.step_with(&muon_grads, lr_muon, c.weight_decay, comm)?;
        self.device.synchronize()?;
        let t1 = Instant::now();
        self.adamw.step(&adamw_grads, lr_adamw, c.weight_decay)?;
        self.device.synchronize()?;
        let t2 = Instant::now();
        Ok(StepStats {
            lr_muon,
            lr_adamw,
            muon_ms: (t1 - t0).as_secs_f64() * 1e3,
            adamw_ms: (t2 - t1).as_secs_f64() * 1e3,
        })
    }

    /// Both groups with tensor and parameter counts, for the log at start.
    pub fn groups_summary(&self) -> String {
        let c = &self.cfg;
        let fmt = |(n, e): (usize, usize)| format!("{n:>4} tensors {e:>12} params ({:.2}M)", e as f64 / 1e6);
        let (muon, decay, nodecay) = (self.muon.counts(), self.adamw.counts(true), self.adamw.counts(false));
        let total = muon.1 + decay.1 + nodecay.1;
        let kind = match c.kind {
            OptimizerKind::Hybrid => "hybrid",
            OptimizerKind::AdamW => "adamw",
        };
        let mut s =
            format!("optimizer {kind}: {} tensors, {total} params ({:.2}M)\n", self.params.len(), total as f64 / 1e6);
        s += &format!(
            "  muon             {}  lr {:.1e} wd {} momentum {}{} NS {} steps on [{}]\n",
            fmt(muon),
            c.muon_lr,
            c.weight_decay,
            c.muon_momentum,
            if c.muon_nesterov { " nesterov" } else { "" },
            c.ns_steps,
            self.muon.shapes_summary()
        );
        s += &format!(
            "  adamw (decay)    {}  lr {:.1e} wd {} betas ({}, {}) eps {:.0e}\n",
            fmt(decay),
            c.adamw_lr,
            c.weight_decay,
            c.adam_beta1,
            c.adam_beta2,
            c.adam_eps
        );
        s += &format!("  adamw (no decay) {}  lr {:.1e} wd 0", fmt(nodecay), c.adamw_lr);
        s
    }

    /// Every state tensor (f32 moments; `adamw.step` is i64), named `muon.momentum.{param}`,
    /// `adamw.m.{param}`, `adamw.v.{param}`, `adamw.step`. The tensors are never modified in place
    /// by later steps, so they can be saved at leisure.
    pub fn state_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out = self.muon.state_tensors()?;
        out.extend(self.adamw.state_tensors()?);
        Ok(out)
    }

    /// Restores what [`HybridOptimizer::state_tensors`] returned (e.g. loaded from safetensors).
    /// Every expected tensor must be present with the right shape, and no other `muon.*` or
    /// `adamw.*` tensor may be there (other names are ignored). On error nothing is changed.
    pub fn load_state_tensors(&mut self, state: &HashMap<String, Tensor>) -> Result<()> {
        let momenta = self.muon.read_state(state)?;
        let (moments, t) = self.adamw.read_state(state)?;
        let expected: HashSet<String> = self.muon.state_names().into_iter().chain(self.adamw.state_names()).collect();
        let mut extra: Vec<&String> = state
            .keys()
            .filter(|k| (k.starts_with("muon.") || k.starts_with("adamw.")) && !expected.contains(*k))
            .collect();
        extra.sort();
        if let Some(name) = extra.first() {
            return Err(OptimError::UnexpectedState((*name).clone()));
        }
        self.muon.set_state(momenta)?;
        self.adamw.set_state(moments, t)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
