//! Model shape and init hyper-parameters, with named presets.
//!
//! Mirrors `MambaConfig` of state-spaces/mamba (`mamba_ssm/models/config_mamba.py`) plus the
//! `Mamba` mixer's init arguments (`mamba_ssm/modules/mamba_simple.py`): dt_min/dt_max/dt_init_floor
//! and the embedding's `initializer_range`.

use serde::{Deserialize, Serialize};

/// The shape of a Mamba language model and how to initialise it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MambaConfig {
    /// Width of the residual stream.
    pub d_model: usize,
    /// Number of Mamba blocks.
    pub n_layer: usize,
    /// SSM state size N per channel.
    pub d_state: usize,
    /// d_inner = expand · d_model.
    pub expand: usize,
    /// Causal depthwise conv kernel width.
    pub d_conv: usize,
    /// Rank of the Δ projection; `None` = ceil(d_model / 16).
    #[serde(default)]
    pub dt_rank: Option<usize>,
    /// Tokenizer vocabulary (before padding), e.g. 50257 for GPT-2.
    pub vocab_size: usize,
    /// The embedding has `vocab_size` rounded up to a multiple of this many rows.
    pub pad_vocab_size_multiple: usize,
    /// RMSNorm epsilon.
    pub norm_eps: f64,
    /// Std of the embedding's normal init.
    pub initializer_range: f64,
    /// Δ is drawn log-uniform in [dt_min, dt_max] ...
    pub dt_min: f64,
    pub dt_max: f64,
    /// ... and floored at dt_init_floor.
    pub dt_init_floor: f64,
}

/// Names accepted by `--model`.
pub const PRESET_NAMES: &[&str] = &["130m", "370m", "790m", "1.4b", "31m", "tiny", "micro"];

impl MambaConfig {
    /// The 130m model of the seed recipe (= state-spaces/mamba-130m up to vocab padding).
    pub fn mamba_130m() -> Self {
        MambaConfig {
            d_model: 768,
            n_layer: 24,
            d_state: 16,
            expand: 2,
            d_conv: 4,
            dt_rank: None,
            vocab_size: 50257,
            pad_vocab_size_multiple: 8,
            norm_eps: 1e-5,
            initializer_range: 0.02,
            dt_min: 1e-3,
            dt_max: 1e-1,
            dt_init_floor: 1e-4,
        }
    }

    /// Named preset: `130m`, `370m`, `790m`, `1.4b` (the shapes of state-spaces/mamba-130m, -370m,
    /// -790m and -1.4b, with GPT-2's vocabulary padded to a multiple of 8), `31m` (d_model 384, 12
    /// layers: the small model of the optimizer study), `tiny` (the CPU demo's model: 3.3M
    /// parameters, nearly all of them the full GPT-2 vocabulary's embedding) or `micro` (gradient
    /// checks: tiny everything, vocab 64).
    pub fn preset(name: &str) -> Option<Self> {
        let base = Self::mamba_130m();
        Some(match name {
            "130m" => base,
            "370m" => MambaConfig { d_model: 1024, n_layer: 48, ..base },
            "790m" => MambaConfig { d_model: 1536, n_layer: 48, ..base },
            "1.4b" => MambaConfig { d_model: 2048, n_layer: 48, ..base },
            "31m" => MambaConfig { d_model: 384, n_layer: 12, ..base },
            "tiny" => MambaConfig { d_model: 64, n_layer: 2, ..base },
            "micro" => MambaConfig { d_model: 8, n_layer: 2, d_state: 4, vocab_size: 64, ..base },
            _ => return None,
        })
    }

    pub fn d_inner(&self) -> usize {
        self.expand * self.d_model
    }

    pub fn dt_rank(&self) -> usize {
        self.dt_rank.unwrap_or(self.d_model.div_ceil(16))
    }

    /// Rows of the embedding (= columns of the tied head).
    pub fn padded_vocab(&self) -> usize {
        let m = self.pad_vocab_size_multiple.max(1);
        self.vocab_size.div_ceil(m) * m
    }

    /// Every parameter's HF name and shape, in model order (embedding, blocks, final norm).
    pub fn param_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let (d, di, n, r, k) = (self.d_model, self.d_inner(), self.d_state, self.dt_rank(), self.d_conv);
        let mut out = vec![("backbone.embeddings.weight".to_string(), vec![self.padded_vocab(), d])];
        for i in 0..self.n_layer {
            let p = |s: &str| format!("backbone.layers.{i}.{s}");
            out.push((p("norm.weight"), vec![d]));
            out.push((p("mixer.in_proj.weight"), vec![2 * di, d]));
            out.push((p("mixer.conv1d.weight"), vec![di, 1, k]));
            out.push((p("mixer.conv1d.bias"), vec![di]));
            out.push((p("mixer.x_proj.weight"), vec![r + 2 * n, di]));
            out.push((p("mixer.dt_proj.weight"), vec![di, r]));
            out.push((p("mixer.dt_proj.bias"), vec![di]));
            out.push((p("mixer.A_log"), vec![di, n]));
            out.push((p("mixer.D"), vec![di]));
            out.push((p("mixer.out_proj.weight"), vec![d, di]));
        }
        out.push(("backbone.norm_f.weight".to_string(), vec![d]));
        out
    }

    /// Number of parameters (the tied head counted once).
    pub fn n_params(&self) -> usize {
        self.param_shapes().iter().map(|(_, s)| s.iter().product::<usize>()).sum()
    }

    /// Checks that the shape is usable; the message names the bad field.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("d_model", self.d_model),
            ("n_layer", self.n_layer),
            ("d_state", self.d_state),
            ("expand", self.expand),
            ("d_conv", self.d_conv),
            ("dt_rank", self.dt_rank()),
            ("vocab_size", self.vocab_size),
        ];
        for (name, v) in positive {
            if v == 0 {
                return Err(format!("model config: {name} must be positive"));
            }
        }
        if !(self.dt_min > 0.0 && self.dt_min <= self.dt_max) {
            return Err(format!("model config: need 0 < dt_min ({}) <= dt_max ({})", self.dt_min, self.dt_max));
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn preset_130m_has_129_1m_params() {
        let c = MambaConfig::preset("130m").unwrap();
        assert_eq!(c.dt_rank(), 48);
        assert_eq!(c.d_inner(), 1536);
        assert_eq!(c.padded_vocab(), 50264);
        assert_eq!(c.n_params(), 129_123_072);
    }

    #[test]
    fn preset_31m_is_the_study_model() {
        let c = MambaConfig::preset("31m").unwrap();
        assert_eq!((c.d_model, c.n_layer, c.dt_rank()), (384, 12, 24));
        assert_eq!(c.n_params(), 30_872_448);
    }

    #[test]
    fn the_large_presets_have_the_published_shapes() {
        // state-spaces/mamba-{370m,790m,1.4b}-hf config.json: hidden_size, num_hidden_layers,
        // time_step_rank, intermediate_size; their vocab is 50280 (50277 padded), ours 50264.
        let shape = |n: &str| {
            let c = MambaConfig::preset(n).unwrap();
            (c.d_model, c.n_layer, c.dt_rank(), c.d_inner(), c.d_state, c.d_conv)
        };
        assert_eq!(shape("370m"), (1024, 48, 64, 2048, 16, 4));
        assert_eq!(shape("790m"), (1536, 48, 96, 3072, 16, 4));
        assert_eq!(shape("1.4b"), (2048, 48, 128, 4096, 16, 4));
        // With the published embedding of 50280 rows (16 more than ours) the counts are the
        // model cards' ~370M, ~790M and ~1.4B.
        assert_eq!(MambaConfig::preset("370m").unwrap().n_params() + 16 * 1024, 371_516_416);
        assert_eq!(MambaConfig::preset("790m").unwrap().n_params() + 16 * 1536, 793_204_224);
        assert_eq!(MambaConfig::preset("1.4b").unwrap().n_params() + 16 * 2048, 1_372_178_432);
    }

    #[test]
    fn every_preset_is_valid() {
        for name in PRESET_NAMES {
            MambaConfig::preset(name).unwrap().validate().unwrap();
        }
        assert!(MambaConfig::preset("7b").is_none());
    }
}
