//! `trainer_state.json`: everything besides the tensors that `--resume` needs to continue exactly
//! where the run stopped (step, tokens, data position) and to refuse an incompatible config.

use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::config::TrainConfig;
use crate::model::MambaConfig;

pub const TRAINER_STATE_FILE: &str = "trainer_state.json";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    /// Trainer version and git commit that wrote the checkpoint.
    pub version: String,
    pub git_hash: String,
    /// Optimizer steps completed.
    pub step: usize,
    /// Training tokens consumed (inputs, summed over micro-batches).
    pub tokens: u64,
    /// The run's seed. The training loop draws no random numbers after init: the data order's
    /// shuffle state is part of `data_position`.
    pub seed: u64,
    /// The data loader's exact position after the last batch of `step` (`data::DataPosition`).
    pub data_position: serde_json::Value,
    /// Sequence length of the data the run trains on.
    pub seq_len: usize,
    /// The model shape.
    pub model: MambaConfig,
    /// The resolved training config.
    pub config: TrainConfig,
    /// The last validation loss, if any.
    pub last_val_loss: Option<f64>,
}

impl TrainerState {
    pub fn load(dir: &Path) -> Result<TrainerState> {
        let path = dir.join(TRAINER_STATE_FILE);
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }

    pub fn save(&self, dir: &Path) -> Result<()> {
        let path = dir.join(TRAINER_STATE_FILE);
        std::fs::write(&path, serde_json::to_string_pretty(self)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
        super::model_files::sync_file(&path)
    }
}
