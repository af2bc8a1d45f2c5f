//! AdamW (Loshchilov & Hutter, "Decoupled Weight Decay Regularization", 2019), as
//! `torch.optim.AdamW`: for every parameter p with gradient g, at update number t (1-based),
//!   m ← β1 m + (1 − β1) g,   v ← β2 v + (1 − β2) g²          (f32 state)
//!   p ← p (1 − lr·wd)                                        (decay group only)
//!   p ← p − lr · (m / (1 − β1ᵗ)) / (sqrt(v / (1 − β2ᵗ)) + eps)
//! The update count t is shared by all parameters of the group and saved with the state.
//!
//! Parameters of the same shape, dtype and decay setting are updated together on stacked
//! (k, ..shape) tensors (their moments are kept stacked too, as `[m | v]`): one fused op per such
//! group (`mamba_ops::adamw_step`, 130m: ~10 groups instead of ~170 tensors of ~12 candle ops
//! each), the same arithmetic element by element. Checkpoints hold one m and v per parameter.

use super::error::{OptimError, Result};
use super::state::read_state_tensor;
use candle_core::{DType, Tensor, Var};
use std::collections::HashMap;

/// Checkpoint name of the update counter (a one-element i64 tensor).
pub const STEP_STATE_NAME: &str = "adamw.step";

/// Checkpoint names of a parameter's first and second moments.
pub fn moment_state_names(param: &str) -> (String, String) {
    (format!("adamw.m.{param}"), format!("adamw.v.{param}"))
}

struct AdamWParam {
    name: String,
    var: Var,
    decay: bool,
}

/// Parameters updated together: same shape, dtype and decay setting.
struct AdamWGroup {
    decay: bool,
    /// Indices into `AdamW::params`, in order of first appearance.
    members: Vec<usize>,
    /// `[m | v]`: (2, k, ..shape), f32; after a step, a view of the fused op's output.
    mv: Tensor,
}

/// The AdamW group(s): parameters with and without weight decay.
pub struct AdamW {
    params: Vec<AdamWParam>,
    groups: Vec<AdamWGroup>,
    beta1: f64,
    beta2: f64,
    eps: f64,
    /// Updates done so far (t of the bias correction).
    t: u64,
}

/// `ts` stacked on a new leading dim; a single tensor becomes a view, not a copy.
fn stack(ts: &[Tensor]) -> candle_core::Result<Tensor> {
    match ts {
        [one] => one.unsqueeze(0),
        _ => Tensor::stack(ts, 0),
    }
}

impl AdamW {
    /// `params` as (name, var, decay?).
    pub fn new(params: Vec<(String, Var, bool)>, beta1: f64, beta2: f64, eps: f64) -> Result<Self> {
        let params: Vec<AdamWParam> = params.into_iter().map(|(name, var, decay)| AdamWParam { name, var, decay }).collect();
        // Members of each group: same decay setting, shape and dtype, in order of first appearance.
        let mut members: Vec<Vec<usize>> = Vec::new();
        for (i, p) in params.iter().enumerate() {
            let same = |m: &&mut Vec<usize>| {
                let q = &params[m[0]];
                q.decay == p.decay && q.var.dims() == p.var.dims() && q.var.dtype() == p.var.dtype()
            };
            match members.iter_mut().find(same) {
                Some(m) => m.push(i),
                None => members.push(vec![i]),
            }
        }
        let groups = members
            .into_iter()
            .map(|members| {
                let first = &params[members[0]];
                let mut dims = vec![2, members.len()];
                dims.extend_from_slice(first.var.dims());
                let mv = Tensor::zeros(dims.as_slice(), DType::F32, first.var.device())?;
                Ok(AdamWGroup { decay: first.decay, members, mv })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { params, groups, beta1, beta2, eps, t: 0 })
    }

    /// (tensors, scalar parameters) with weight decay if `decay`, else without.
    pub fn counts(&self, decay: bool) -> (usize, usize) {
        let ps = self.params.iter().filter(|p| p.decay == decay);
        ps.fold((0, 0), |(n, e), p| (n + 1, e + p.var.elem_count()))
    }

    /// Updates done so far.
    pub fn update_count(&self) -> u64 {
        self.t
    }

    /// One update of every parameter; `grads[i]` belongs to the i-th parameter given to `new`.
    pub fn step(&mut self, grads: &[Tensor], lr: f64, weight_decay: f64) -> Result<()> {
        if grads.len() != self.params.len() {
            return Err(OptimError::GradCountMismatch { expected: self.params.len(), got: grads.len() });
        }
        self.t += 1;
        let t = self.t as i32;
        let bias1 = 1.0 - self.beta1.powi(t);
        let bias2 = 1.0 - self.beta2.powi(t);
        for group in &mut self.groups {
            let g: Vec<Tensor> = group.members.iter().map(|&i| grads[i].to_dtype(DType::F32)).collect::<candle_core::Result<_>>()?;
            let g = stack(&g)?; // (k, ..shape)
            let w: Vec<Tensor> = group.members.iter().map(|&i| self.params[i].var.as_tensor().to_dtype(DType::F32)).collect::<candle_core::Result<_>>()?;
            let w = stack(&w)?; // (k, ..shape)
            let decay = if group.decay { 1.0 - lr * weight_decay } else { 1.0 };
            let step = mamba_ops::AdamWStep { lr, beta1: self.beta1, beta2: self.beta2, eps: self.eps, bias1, bias2, decay };
            // One fused op: [w' | m' | v'] (3, k, ..shape).
            let out = mamba_ops::adamw_step(&w, &g, &group.mv, step)?;
            group.mv = out.narrow(0, 1, 2)?; // [m' | v'], contiguous (a view: keeps w' too)
            let w = out.get(0)?; // (k, ..shape)
            for (j, &i) in group.members.iter().enumerate() {
                let var = &self.params[i].var;
                var.set(&w.get(j)?.to_dtype(var.dtype())?)?;
            }
        }
        Ok(())
    }

    /// The (group, position in the group) of every parameter, in parameter order.
    fn slots(&self) -> Vec<(usize, usize)> {
        super::state::member_slots(self.groups.iter().map(|g| g.members.as_slice()), self.params.len())
    }

    /// (name, tensor) of every state tensor: the moments in parameter order, then the counter.
    pub fn state_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out = Vec::with_capacity(2 * self.params.len() + 1);
        for (p, (gi, j)) in self.params.iter().zip(self.slots()) {
            let (m, v) = moment_state_names(&p.name);
            out.push((m, self.groups[gi].mv.get(0)?.get(j)?));
            out.push((v, self.groups[gi].mv.get(1)?.get(j)?));
        }
        let device = self.params.first().map(|p| p.var.device().clone());
        let device = device.unwrap_or(candle_core::Device::Cpu); // no parameter: a plain counter
        out.push((STEP_STATE_NAME.to_string(), Tensor::new(&[self.t as i64], &device)?));
        Ok(out)
    }

    /// The moments and counter read from `state`, checked; nothing changes until `set_state`.
    pub fn read_state(&self, state: &HashMap<String, Tensor>) -> Result<(Vec<(Tensor, Tensor)>, u64)> {
        let moments = self
            .params
            .iter()
            .map(|p| {
                let (m, v) = moment_state_names(&p.name);
                Ok((read_state_tensor(state, &m, &p.var)?, read_state_tensor(state, &v, &p.var)?))
            })
            .collect::<Result<Vec<_>>>()?;
        let step = state
            .get(STEP_STATE_NAME)
            .ok_or_else(|| OptimError::MissingState(STEP_STATE_NAME.to_string()))?;
        let bad = |got: &[usize]| OptimError::StateShapeMismatch {
            name: STEP_STATE_NAME.to_string(),
            expected: vec![1],
            got: got.to_vec(),
        };
        if step.dims() != [1] {
            return Err(bad(step.dims()));
        }
        let t = step.to_dtype(DType::F64)?.to_vec1::<f64>()?[0];
        if !(t >= 0.0 && t.fract() == 0.0) {
            return Err(OptimError::BadConfig(format!("{STEP_STATE_NAME} = {t} is not a step count")));
        }
        Ok((moments, t as u64))
    }

    /// Installs state returned by [`AdamW::read_state`] (one (m, v) per parameter, in parameter
    /// order); on an error nothing is changed.
    pub fn set_state(&mut self, moments: Vec<(Tensor, Tensor)>, t: u64) -> Result<()> {
        let stacked = self
            .groups
            .iter()
            .map(|g| {
                let m: Vec<Tensor> = g.members.iter().map(|&i| moments[i].0.clone()).collect();
                let v: Vec<Tensor> = g.members.iter().map(|&i| moments[i].1.clone()).collect();
                Ok(Tensor::stack(&[Tensor::stack(&m, 0)?, Tensor::stack(&v, 0)?], 0)?)
            })
            .collect::<Result<Vec<_>>>()?;
        for (g, mv) in self.groups.iter_mut().zip(stacked) {
            g.mv = mv; // (2, k, ..shape)
        }
        self.t = t;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn scalar_var(x: f32) -> Var {
        Var::from_tensor(&Tensor::new(&[x], &Device::Cpu).unwrap()).unwrap()
    }
    fn value(v: &Var) -> f64 {
        v.as_tensor().to_vec1::<f32>().unwrap()[0] as f64
    }

    #[test]
    fn two_steps_against_hand_computed_values() {
        // lr 0.1, wd 0.1, betas (0.9, 0.95), eps 1e-8, p0 = 1, g1 = 0.5, g2 = -0.25.
        // Step 1: m = 0.05, v = 0.0125, m̂ = 0.5, v̂ = 0.25 → p = 1·0.99 − 0.1·0.5/(0.5+1e-8)
        //         = 0.890000002.
        // Step 2: m = 0.02, v = 0.015, m̂ = 0.02/0.19, v̂ = 0.015/0.0975
        //         → p = 0.890000002·0.99 − 0.1·m̂/(sqrt(v̂)+1e-8) = 0.854263057855827.
        let (d, n) = (scalar_var(1.0), scalar_var(1.0));
        let mut opt = AdamW::new(vec![("d".into(), d.clone(), true), ("n".into(), n.clone(), false)], 0.9, 0.95, 1e-8).unwrap();
        let g1 = Tensor::new(&[0.5f32], &Device::Cpu).unwrap();
        opt.step(&[g1.clone(), g1], 0.1, 0.1).unwrap();
        assert!((value(&d) - 0.890000002).abs() < 1e-6, "{}", value(&d));
        // Without decay: 1 − 0.1·0.5/(0.5+1e-8) = 0.900000002.
        assert!((value(&n) - 0.900000002).abs() < 1e-6, "{}", value(&n));
        let g2 = Tensor::new(&[-0.25f32], &Device::Cpu).unwrap();
        opt.step(&[g2.clone(), g2], 0.1, 0.1).unwrap();
        assert!((value(&d) - 0.854263057855827).abs() < 1e-6, "{}", value(&d));
        assert_eq!(opt.update_count(), 2);
    }

    #[test]
    fn no_decay_group_is_not_decayed() {
        // With zero gradients the Adam update is exactly 0: only weight decay can move a value.
        let (d, n) = (scalar_var(2.0), scalar_var(2.0));
        let mut opt = AdamW::new(vec![("d".into(), d.clone(), true), ("n".into(), n.clone(), false)], 0.9, 0.95, 1e-8).unwrap();
        let z = Tensor::new(&[0f32], &Device::Cpu).unwrap();
        for _ in 0..3 {
            opt.step(&[z.clone(), z.clone()], 0.5, 0.2).unwrap();
        }
        assert!((value(&d) - 2.0 * 0.9f64.powi(3)).abs() < 1e-6, "{}", value(&d));
        assert_eq!(value(&n), 2.0);
        assert_eq!(opt.counts(true), (1, 1));
        assert_eq!(opt.counts(false), (1, 1));
    }

    #[test]
    fn bf16_params_keep_dtype_and_f32_state() {
        let v = Var::from_tensor(&Tensor::ones((2, 2), DType::BF16, &Device::Cpu).unwrap()).unwrap();
        let mut opt = AdamW::new(vec![("w".into(), v.clone(), true)], 0.9, 0.95, 1e-8).unwrap();
        let g = Tensor::ones((2, 2), DType::BF16, &Device::Cpu).unwrap();
        opt.step(&[g], 0.25, 0.0).unwrap();
        assert_eq!(v.dtype(), DType::BF16);
        let w = v.as_tensor().to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(w.iter().all(|x| (x - 0.75).abs() < 1e-2), "{w:?}");
        let state = opt.state_tensors().unwrap();
        assert!(state.iter().filter(|(n, _)| n != STEP_STATE_NAME).all(|(_, t)| t.dtype() == DType::F32));
    }
}
