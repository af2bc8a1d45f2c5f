//! Checkpoints: a directory `ckpt-{step:06}/` holding `model.safetensors` + `config.json` (Hugging
//! Face Mamba layout, loadable by `MambaForCausalLM.from_pretrained`), GPT-2's `tokenizer.json`,
//! `tokenizer_config.json` and `generation_config.json` (`AutoTokenizer` and the text-generation
//! pipeline load the directory as it is), `optimizer.safetensors` and `trainer_state.json`;
//! written atomically, the newest K kept.

pub mod hf_config;
pub mod hf_tokenizer;
pub mod model_files;
pub mod store;
pub mod trainer_state;

pub use model_files::{load_model, params_from_loaded, resolve_init_from, save_model};
pub use store::{latest_checkpoint, list_checkpoints, prepare_run_dir, save_checkpoint, CheckpointContents};
pub use trainer_state::TrainerState;
