//! The `trainer` library: Mamba model, hybrid optimizer, data loading from shards, metrics,
//! checkpoints, the training loop and generation.

pub mod bench;
pub mod checkpoint;
pub mod compare;
pub mod config;
pub mod data;
pub mod device;
pub mod eval_cmd;
pub mod generate;
pub mod metrics;
pub mod model;
pub mod optim;
pub mod parallel;
pub mod sampling;
pub mod train;

/// Crate version, recorded in resolved configs and checkpoints.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// Git commit the binary was built from (`build.rs`), or "unknown".
pub const GIT_HASH: &str = env!("GIT_HASH");
