//! The Mamba language model (state-spaces/mamba `MambaLMHeadModel` = HF `MambaForCausalLM`):
//! config and presets, mamba_ssm's init, parameters under HF names, parallel forward and the
//! recurrent step used for generation, and the hand-written backward the trainer runs.

pub mod backward;
pub mod config;
pub mod cross_entropy;
pub mod head_loss;
pub mod init;
pub mod layers;
pub mod mamba;
pub mod mixer;
mod mixer_train;
pub mod params;

pub use config::MambaConfig;
pub use mamba::MambaLM;
pub use mixer::MixerState;
pub use params::Params;
