//! AdamW (Loshchilov & Hutter, "Decoupled Weight Decay Regularization", 2019), as
//! `torch.optim.AdamW`: for every parameter p with gradient g, at update number t (1-based),
//!   m ← β1 m + (1 − β1) g,   v ← β2 v + (1 − β2) g²          (f32 state)
//!   p ← p (1 − lr·wd)                                        (decay group only)
//!   p ← p − lr · (m / (1 − β1ᵗ)) / (sqrt(v / (1 − β2ᵗ)) + eps)
//! The update count t is shared by all parameters of the group and saved with the state.
//!
//! Every parameter is updated in its own storage with its own f32 moments, all in one op
//! (`mamba_ops::adamw_step_in_place`: one launch for the whole group on the GPU, the same
//! arithmetic element by element). Parameters that are not f32 are updated through an f32 copy.

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
    /// First and second moments, f32 of the parameter's shape, updated in place.
    m: Tensor,
    v: Tensor,
}

/// The AdamW group(s): parameters with and without weight decay.
pub struct AdamW {
    params: Vec<AdamWParam>,
    beta1: f64,
    beta2: f64,
    eps: f64,
    /// Updates done so far (t of the bias correction).
    t: u64,
}

impl AdamW {
    /// `params` as (name, var, decay?).
    pub fn new(params: Vec<(String, Var, bool)>, beta1: f64, beta2: f64, eps: f64) -> Result<Self> {
        let params = params
            .into_iter()
            .map(|(name, var, decay)| {
                let zeros = || Tensor::zeros(var.shape(), DType::F32, var.device());
                Ok(AdamWParam { m: zeros()?, v: zeros()?, name, var, decay })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { params, beta1, beta2, eps, t: 0 })
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
        let step = mamba_ops::AdamWStep {
            lr,
            beta1: self.beta1,
            beta2: self.beta2,
            eps: self.eps,
            bias1: 1.0 - self.beta1.powi(t),
            bias2: 1.0 - self.beta2.powi(t),
            decay: 1.0 - lr * weight_decay,
        };
        // f32 weights are updated where they are; others through an f32 copy, set back after.
        let grads =
            grads.iter().map(|g| g.to_dtype(DType::F32)?.contiguous()).collect::<candle_core::Result<Vec<_>>>()?;
        let in_place = |p: &AdamWParam| p.var.dtype() == DType::F32 && p.var.is_contiguous();
        let weights = self
            .params
            .iter()
            .map(|p| {
                if in_place(p) {
                    Ok(p.var.as_tensor().clone())
                } else {
                    p.var.as_tensor().to_dtype(DType::F32)?.copy()
                }
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        let items: Vec<mamba_ops::AdamWParam> = self
            .params
            .iter()
            .zip(&weights)
            .zip(&grads)
            .map(|((p, w), g)| mamba_ops::AdamWParam { w, g, m: &p.m, v: &p.v, decay: p.decay })
            .collect();
        mamba_ops::adamw_step_in_place(&items, step)?;
        for (p, w) in self.params.iter().zip(&weights).filter(|(p, _)| !in_place(p)) {
            p.var.set(&w.to_dtype(p.var.dtype())?)?;
        }
        Ok(())
    }

    /// (name, tensor) of every state tensor: the moments in parameter order, then the counter.
    /// Host copies, one at a time (`state::host_copy`; later steps update the moments in place).
    pub fn state_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out = Vec::with_capacity(2 * self.params.len() + 1);
        for p in &self.params {
            let (m, v) = moment_state_names(&p.name);
            out.push((m, super::state::host_copy(&p.m)?));
            out.push((v, super::state::host_copy(&p.v)?));
        }
        out.push((STEP_STATE_NAME.to_string(), Tensor::new(&[self.t as i64], &candle_core::Device::Cpu)?));
        Ok(out)
    }

    /// The names [`AdamW::state_tensors`] returns, without copying anything.
    pub fn state_names(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .params
            .iter()
            .flat_map(|p| {
                let (m, v) = moment_state_names(&p.name);
                [m, v]
            })
            .collect();
        out.push(STEP_STATE_NAME.to_string());
        out
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
        let step = state.get(STEP_STATE_NAME).ok_or_else(|| OptimError::MissingState(STEP_STATE_NAME.to_string()))?;
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
        // `read_state` made them f32 copies of their own: the steps update them in place.
        for (p, (m, v)) in self.params.iter_mut().zip(moments) {
            p.m = m;
            p.v = v;
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
        let mut opt =
            AdamW::new(vec![("d".into(), d.clone(), true), ("n".into(), n.clone(), false)], 0.9, 0.95, 1e-8).unwrap();
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
        let mut opt =
            AdamW::new(vec![("d".into(), d.clone(), true), ("n".into(), n.clone(), false)], 0.9, 0.95, 1e-8).unwrap();
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
