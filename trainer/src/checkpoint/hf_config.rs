//! `config.json` in Hugging Face transformers' Mamba layout (`MambaConfig` in
//! `transformers/models/mamba/configuration_mamba.py`), so that
//! `MambaForCausalLM.from_pretrained(dir)` loads our checkpoints unchanged, and so that we can
//! start from theirs (e.g. state-spaces/mamba-130m-hf).

use serde::{Deserialize, Serialize};

use crate::model::MambaConfig;

/// GPT-2's `<|endoftext|>`, used by the Mamba checkpoints as bos, eos and pad.
pub const GPT2_EOT: u32 = 50256;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HfMambaConfig {
    #[serde(default = "default_architectures")]
    pub architectures: Vec<String>,
    pub model_type: String,
    /// Rows of the embedding (our padded vocabulary).
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub state_size: usize,
    pub num_hidden_layers: usize,
    pub expand: usize,
    pub conv_kernel: usize,
    pub time_step_rank: usize,
    #[serde(default)]
    pub intermediate_size: Option<usize>,
    pub layer_norm_epsilon: f64,
    #[serde(default)]
    pub use_bias: bool,
    #[serde(default = "yes")]
    pub use_conv_bias: bool,
    #[serde(default = "silu")]
    pub hidden_act: String,
    #[serde(default = "yes")]
    pub residual_in_fp32: bool,
    #[serde(default = "yes")]
    pub tie_word_embeddings: bool,
    #[serde(default = "eot")]
    pub bos_token_id: u32,
    #[serde(default = "eot")]
    pub eos_token_id: u32,
    #[serde(default = "eot")]
    pub pad_token_id: u32,
    #[serde(default = "dt_min")]
    pub time_step_min: f64,
    #[serde(default = "dt_max")]
    pub time_step_max: f64,
    #[serde(default = "dt_floor")]
    pub time_step_floor: f64,
    #[serde(default = "one")]
    pub time_step_scale: f64,
    #[serde(default = "random")]
    pub time_step_init_scheme: String,
    #[serde(default = "yes")]
    pub rescale_prenorm_residual: bool,
    #[serde(default = "init_range")]
    pub initializer_range: f64,
    #[serde(default = "float32")]
    pub torch_dtype: String,
    #[serde(default)]
    pub pad_vocab_size_multiple: Option<usize>,
}

fn default_architectures() -> Vec<String> {
    vec!["MambaForCausalLM".into()]
}
fn yes() -> bool {
    true
}
fn silu() -> String {
    "silu".into()
}
fn eot() -> u32 {
    GPT2_EOT
}
fn dt_min() -> f64 {
    1e-3
}
fn dt_max() -> f64 {
    1e-1
}
fn dt_floor() -> f64 {
    1e-4
}
fn one() -> f64 {
    1.0
}
fn random() -> String {
    "random".into()
}
fn init_range() -> f64 {
    0.1
}
fn float32() -> String {
    "float32".into()
}

impl HfMambaConfig {
    pub fn from_model(cfg: &MambaConfig) -> Self {
        HfMambaConfig {
            architectures: default_architectures(),
            model_type: "mamba".into(),
            vocab_size: cfg.padded_vocab(),
            hidden_size: cfg.d_model,
            state_size: cfg.d_state,
            num_hidden_layers: cfg.n_layer,
            expand: cfg.expand,
            conv_kernel: cfg.d_conv,
            time_step_rank: cfg.dt_rank(),
            intermediate_size: Some(cfg.d_inner()),
            layer_norm_epsilon: cfg.norm_eps,
            use_bias: false,
            use_conv_bias: true,
            hidden_act: silu(),
            residual_in_fp32: true,
            tie_word_embeddings: true,
            bos_token_id: GPT2_EOT,
            eos_token_id: GPT2_EOT,
            pad_token_id: GPT2_EOT,
            time_step_min: cfg.dt_min,
            time_step_max: cfg.dt_max,
            time_step_floor: cfg.dt_init_floor,
            time_step_scale: 1.0,
            time_step_init_scheme: random(),
            // Init-only flag, and transformers (5.x) applies it to *loaded* out_proj weights in
            // `_init_weights`, corrupting them; state-spaces/mamba-130m-hf ships false too.
            rescale_prenorm_residual: false,
            initializer_range: cfg.initializer_range,
            torch_dtype: float32(),
            pad_vocab_size_multiple: Some(cfg.pad_vocab_size_multiple),
        }
    }

    /// Our model config for this checkpoint; refuses variants the model does not implement.
    pub fn to_model(&self) -> Result<MambaConfig, String> {
        let unsupported = |what: &str| Err(format!("config.json: {what} is not supported by this trainer"));
        if self.model_type != "mamba" {
            return unsupported(&format!("model_type {:?} (expected \"mamba\")", self.model_type));
        }
        if self.use_bias {
            return unsupported("use_bias = true (in_proj/out_proj with bias)");
        }
        if !self.use_conv_bias {
            return unsupported("use_conv_bias = false");
        }
        if self.hidden_act != "silu" {
            return unsupported(&format!("hidden_act {:?}", self.hidden_act));
        }
        if !self.tie_word_embeddings {
            return unsupported("tie_word_embeddings = false");
        }
        if let Some(di) = self.intermediate_size {
            if di != self.expand * self.hidden_size {
                return unsupported(&format!(
                    "intermediate_size {di} != expand·hidden_size {}",
                    self.expand * self.hidden_size
                ));
            }
        }
        let cfg = MambaConfig {
            d_model: self.hidden_size,
            n_layer: self.num_hidden_layers,
            d_state: self.state_size,
            expand: self.expand,
            d_conv: self.conv_kernel,
            dt_rank: Some(self.time_step_rank),
            // The embedding has exactly `vocab_size` rows, already padded.
            vocab_size: self.vocab_size,
            pad_vocab_size_multiple: 1,
            norm_eps: self.layer_norm_epsilon,
            initializer_range: self.initializer_range,
            dt_min: self.time_step_min,
            dt_max: self.time_step_max,
            dt_init_floor: self.time_step_floor,
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_json_and_keeps_the_shape() {
        let cfg = MambaConfig::preset("130m").unwrap();
        let hf = HfMambaConfig::from_model(&cfg);
        let json = serde_json::to_string(&hf).unwrap();
        let back: HfMambaConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, hf);
        let m = back.to_model().unwrap();
        assert_eq!(m.param_shapes(), cfg.param_shapes());
    }

    #[test]
    fn reads_the_published_mamba_130m_hf_config() {
        // The fields of state-spaces/mamba-130m-hf's config.json that matter (others are ignored).
        let json = r#"{"architectures":["MambaForCausalLM"],"bos_token_id":0,"conv_kernel":4,
            "d_inner":1536,"d_model":768,"eos_token_id":0,"expand":2,"fused_add_norm":true,
            "hidden_act":"silu","hidden_size":768,"initializer_range":0.1,"intermediate_size":1536,
            "layer_norm_epsilon":1e-05,"model_type":"mamba","n_layer":24,"num_hidden_layers":24,
            "pad_token_id":0,"pad_vocab_size_multiple":8,"rescale_prenorm_residual":false,
            "residual_in_fp32":true,"rms_norm":true,"state_size":16,"time_step_floor":0.0001,
            "time_step_init_scheme":"random","time_step_max":0.1,"time_step_min":0.001,
            "time_step_rank":48,"time_step_scale":1.0,"torch_dtype":"float32",
            "transformers_version":"4.39.0.dev0","use_bias":false,"use_cache":true,
            "use_conv_bias":true,"vocab_size":50280}"#;
        let hf: HfMambaConfig = serde_json::from_str(json).unwrap();
        let m = hf.to_model().unwrap();
        assert_eq!((m.d_model, m.n_layer, m.padded_vocab(), m.dt_rank()), (768, 24, 50280, 48));
        let bad: HfMambaConfig =
            serde_json::from_str(&json.replace("\"use_bias\":false", "\"use_bias\":true")).unwrap();
        assert!(bad.to_model().unwrap_err().contains("use_bias"));
    }
}
