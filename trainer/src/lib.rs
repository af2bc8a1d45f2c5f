//! The `trainer` library: Mamba model, hybrid optimizer, data loading from shards, metrics.

pub mod data;
pub mod metrics;
pub mod model;
pub mod optim;
