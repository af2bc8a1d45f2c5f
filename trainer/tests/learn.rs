//! The `tiny` model learns: trained on tinyshakespeare shards (built here from the corpus
//! parquet), its validation loss falls well below the unigram baseline of the train tokens.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Instant;

use common::*;
use mamba_trainer::config::{MicroBatch, TrainConfig};
use mamba_trainer::optim::OptimizerKind;

#[test]
fn tiny_model_beats_the_unigram_baseline_on_shakespeare() {
    init_tracing();
    let data = tempfile::tempdir().unwrap();
    let train_tokens = shakespeare_shards(data.path(), 128, 40, 800);
    let unigram = unigram_entropy(&train_tokens);
    let out = tempfile::tempdir().unwrap();
    let cfg = TrainConfig {
        steps: 60,
        micro_batch: MicroBatch::Fixed(4),
        grad_accum: Some(1),
        warmup: 5,
        muon_lr: 0.02,
        adamw_lr: 0.01,
        weight_decay: 0.0,
        optimizer: OptimizerKind::Hybrid,
        eval_chunks: 32,
        ..tiny_config(data.path(), out.path(), "tiny")
    };
    let t0 = Instant::now();
    let outcome = mamba_trainer::train::run(&cfg, &no_stop()).unwrap();
    let val = outcome.last_val_loss.unwrap();
    println!(
        "tiny on tinyshakespeare: {} steps in {:.1} s, train loss {:.3} -> {:.3}, val loss {val:.3}, unigram entropy {unigram:.3} nats",
        outcome.step, t0.elapsed().as_secs_f64(), outcome.losses[0], outcome.losses[outcome.losses.len() - 1]
    );
    assert!(outcome.losses[0] > 10.0, "starts near ln(50264) = 10.8");
    assert!(val < unigram - 0.5, "val loss {val} is not well below the unigram entropy {unigram}");
}
