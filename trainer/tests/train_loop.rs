//! The training loop on the `micro` model and synthetic shards (vocab 64): micro-batch
//! equivalence, resume bit-identity, config mismatch on resume, NaN stop, bad data.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use mamba_trainer::checkpoint::list_checkpoints;
use mamba_trainer::train::{run, StopReason};

#[test]
fn micro_batch_size_is_only_a_throughput_knob() {
    init_tracing();
    let data = micro_shards();
    let mut runs = Vec::new();
    for (micro, accum) in [(1, 4), (2, 2), (4, 1)] {
        let out = tempfile::tempdir().unwrap();
        let cfg = mamba_trainer::config::TrainConfig {
            micro_batch: micro,
            grad_accum: accum,
            steps: 3,
            ..tiny_config(data.path(), out.path(), "micro")
        };
        let outcome = run(&cfg, &no_stop()).unwrap();
        runs.push(outcome.losses);
    }
    for r in &runs[1..] {
        for (a, b) in runs[0].iter().zip(r) {
            assert!((a - b).abs() <= 1e-5 * a.abs(), "losses differ: {:?} vs {:?}", runs[0], r);
        }
    }
    assert_eq!(runs[0].len(), 3);
}

#[test]
fn resume_continues_bit_for_bit() {
    init_tracing();
    let data = micro_shards();
    let straight = tempfile::tempdir().unwrap();
    let cfg = mamba_trainer::config::TrainConfig { steps: 6, ..tiny_config(data.path(), straight.path(), "micro") };
    let full = run(&cfg, &no_stop()).unwrap();
    assert_eq!(full.losses.len(), 6);

    // Same run in two processes' worth: 3 steps (schedule planned for 6), then --resume to 6.
    let split = tempfile::tempdir().unwrap();
    let half = mamba_trainer::config::TrainConfig {
        steps: 3,
        decay_steps: Some(6),
        ..tiny_config(data.path(), split.path(), "micro")
    };
    let a = run(&half, &no_stop()).unwrap();
    let rest = mamba_trainer::config::TrainConfig { steps: 6, resume: true, ..half.clone() };
    let b = run(&rest, &no_stop()).unwrap();
    assert_eq!((a.step, b.step, b.stop), (3, 6, StopReason::StepsDone));
    let first = [a.losses, b.losses].concat();
    let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&first), bits(&full.losses), "resumed {first:?} vs straight {:?}", full.losses);
}

#[test]
fn resume_refuses_a_different_config() {
    init_tracing();
    let data = micro_shards();
    let out = tempfile::tempdir().unwrap();
    run(&mamba_trainer::config::TrainConfig { steps: 1, ..tiny_config(data.path(), out.path(), "micro") }, &no_stop())
        .unwrap();
    let cfg = mamba_trainer::config::TrainConfig {
        steps: 2,
        grad_accum: 2,
        resume: true,
        ..tiny_config(data.path(), out.path(), "micro")
    };
    let err = format!("{:#}", run(&cfg, &no_stop()).unwrap_err());
    assert!(err.contains("grad_accum differs") && err.contains("ckpt-000001"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("m.toml"), "d_model = 16\nn_layer = 2\nd_state = 4\nexpand = 2\nd_conv = 4\nvocab_size = 64\npad_vocab_size_multiple = 8\nnorm_eps = 1e-5\ninitializer_range = 0.02\ndt_min = 0.001\ndt_max = 0.1\ndt_init_floor = 1e-4\n").unwrap();
    let cfg = mamba_trainer::config::TrainConfig {
        steps: 2,
        resume: true,
        model: dir.path().join("m.toml").display().to_string(),
        ..tiny_config(data.path(), out.path(), "micro")
    };
    let err = format!("{:#}", run(&cfg, &no_stop()).unwrap_err());
    assert!(err.contains("model shape differs"), "{err}");
    let cfg = mamba_trainer::config::TrainConfig {
        steps: 2,
        resume: true,
        ..tiny_config(data.path(), tempfile::tempdir().unwrap().path(), "micro")
    };
    let err = format!("{:#}", run(&cfg, &no_stop()).unwrap_err());
    assert!(err.contains("no checkpoint"), "{err}");
}

#[test]
fn nan_loss_stops_and_keeps_the_last_good_checkpoint() {
    init_tracing();
    let data = micro_shards();
    let out = tempfile::tempdir().unwrap();
    run(&mamba_trainer::config::TrainConfig { steps: 2, ..tiny_config(data.path(), out.path(), "micro") }, &no_stop())
        .unwrap();
    // An absurd learning rate blows the weights up until the loss is no longer finite.
    let cfg = mamba_trainer::config::TrainConfig {
        steps: 40,
        resume: true,
        adamw_lr: 1e30,
        muon_lr: 1e30,
        clip: 0.0,
        warmup: 0,
        save_every: 0,
        ..tiny_config(data.path(), out.path(), "micro")
    };
    let err = format!("{:#}", run(&cfg, &no_stop()).unwrap_err());
    assert!(err.contains("NaN") || err.contains("inf"), "{err}");
    assert!(err.contains("last good checkpoint") && err.contains("ckpt-000002"), "{err}");
    let steps: Vec<usize> = list_checkpoints(out.path()).unwrap().into_iter().map(|(s, _)| s).collect();
    assert_eq!(steps, vec![2]);
}

#[test]
fn periodic_checkpoints_and_evals_and_keep_k() {
    init_tracing();
    let data = micro_shards();
    let out = tempfile::tempdir().unwrap();
    let cfg = mamba_trainer::config::TrainConfig {
        steps: 5,
        save_every: 2,
        keep_checkpoints: 2,
        eval_every: 2,
        ..tiny_config(data.path(), out.path(), "micro")
    };
    let o = run(&cfg, &no_stop()).unwrap();
    assert!(o.last_val_loss.is_some_and(|l| l.is_finite()));
    let steps: Vec<usize> = list_checkpoints(out.path()).unwrap().into_iter().map(|(s, _)| s).collect();
    assert_eq!(steps, vec![4, 5]);
    let resolved = std::fs::read_to_string(out.path().join("config.resolved.toml")).unwrap();
    assert!(
        resolved.starts_with("# trainer ") && resolved.contains("git") && resolved.contains("save_every = 2"),
        "{resolved}"
    );
}
