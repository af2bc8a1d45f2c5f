//! The optimizer's configuration. The default learning rates come from the optimizer study
//! (docs/results.md, issue 7): hybrid Muon 3e-3 + AdamW 3e-3, and 1e-3 for AdamW alone. The seed
//! recipe of issue 3 (Muon 1e-3, AdamW 1e-4, [`SEED_LRS`]) stays available through the flags and
//! `trainer/configs/seed.toml`; the study found its AdamW rate far too low (docs/results.md).

use super::error::{OptimError, Result};
use super::routing::OptimizerKind;
use serde::{Deserialize, Serialize};

/// Hyper-parameters of the hybrid Muon + AdamW optimizer and its schedule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OptimConfig {
    /// `hybrid` (Muon + AdamW) or `adamw` (AdamW only).
    pub kind: OptimizerKind,
    /// Peak learning rate of the Muon group (its updates are RMS-matched to AdamW's).
    pub muon_lr: f64,
    /// Peak learning rate of the AdamW groups.
    pub adamw_lr: f64,
    /// Decoupled weight decay of Muon and of the AdamW decay group.
    pub weight_decay: f64,
    pub adam_beta1: f64,
    pub adam_beta2: f64,
    pub adam_eps: f64,
    /// Muon momentum β.
    pub muon_momentum: f64,
    /// Nesterov look-ahead for Muon (update G + βM instead of M).
    pub muon_nesterov: bool,
    /// Newton–Schulz iterations.
    pub ns_steps: usize,
    /// Linear warmup steps.
    pub warmup_steps: usize,
    /// Step at which the cosine decay reaches its floor.
    pub total_steps: usize,
    /// The floor of the cosine decay, as a fraction of the peak learning rate.
    pub final_lr_frac: f64,
    /// Maximum global gradient L2 norm (0 disables clipping).
    pub clip: f64,
}

/// Peak learning rates of the hybrid (Muon, AdamW groups): the best 130m point of the study.
pub const HYBRID_LRS: (f64, f64) = (3e-3, 3e-3);
/// Peak learning rate of AdamW alone (`--optimizer adamw`): the best of 3e-4, 1e-3, 3e-3 at 130m.
pub const ADAMW_ONLY_LR: f64 = 1e-3;
/// The seed recipe's peak learning rates (Muon, AdamW), issue 3.
pub const SEED_LRS: (f64, f64) = (1e-3, 1e-4);

impl Default for OptimConfig {
    fn default() -> Self {
        Self {
            kind: OptimizerKind::Hybrid,
            muon_lr: HYBRID_LRS.0,
            adamw_lr: HYBRID_LRS.1,
            weight_decay: 0.01,
            adam_beta1: 0.9,
            adam_beta2: 0.95,
            adam_eps: 1e-8,
            muon_momentum: 0.95,
            muon_nesterov: true,
            ns_steps: 5,
            warmup_steps: 100,
            total_steps: 10_000,
            final_lr_frac: 0.1,
            clip: 1.0,
        }
    }
}

impl OptimConfig {
    /// Rejects values that cannot train (negative rates, betas outside [0, 1), …).
    pub fn validate(&self) -> Result<()> {
        let bad = |what: String| Err(OptimError::BadConfig(what));
        for (name, v) in [
            ("muon_lr", self.muon_lr),
            ("adamw_lr", self.adamw_lr),
            ("weight_decay", self.weight_decay),
            ("clip", self.clip),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return bad(format!("{name} = {v} must be finite and >= 0"));
            }
        }
        for (name, v) in
            [("adam_beta1", self.adam_beta1), ("adam_beta2", self.adam_beta2), ("muon_momentum", self.muon_momentum)]
        {
            if !(0.0..1.0).contains(&v) {
                return bad(format!("{name} = {v} must be in [0, 1)"));
            }
        }
        if !(self.adam_eps.is_finite() && self.adam_eps > 0.0) {
            return bad(format!("adam_eps = {} must be > 0", self.adam_eps));
        }
        if !(0.0..=1.0).contains(&self.final_lr_frac) {
            return bad(format!("final_lr_frac = {} must be in [0, 1]", self.final_lr_frac));
        }
        if self.ns_steps == 0 {
            return bad("ns_steps must be >= 1".to_string());
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_study_values_and_round_trip() {
        let c = OptimConfig::default();
        c.validate().unwrap();
        assert_eq!((c.muon_lr, c.adamw_lr, c.weight_decay, c.clip), (3e-3, 3e-3, 0.01, 1.0));
        assert_eq!((c.warmup_steps, c.total_steps, c.final_lr_frac), (100, 10_000, 0.1));
        let back: OptimConfig = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn rejects_bad_values() {
        let cases: [fn(&mut OptimConfig); 5] = [
            |c| c.muon_lr = -1.0,
            |c| c.adam_beta2 = 1.0,
            |c| c.adam_eps = 0.0,
            |c| c.final_lr_frac = 1.5,
            |c| c.ns_steps = 0,
        ];
        for f in cases {
            let mut c = OptimConfig::default();
            f(&mut c);
            assert!(matches!(c.validate(), Err(OptimError::BadConfig(_))), "{c:?}");
        }
    }
}
