//! The training loop on the `micro` model and synthetic shards (vocab 64): the batch's split
//! changes neither the data nor the losses, resume bit-identity, resume with another split,
//! config mismatch on resume, NaN stop, bad data.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use mamba_trainer::checkpoint::{list_checkpoints, TrainerState};
use mamba_trainer::config::MicroBatch;
use mamba_trainer::data::DataPosition;
use mamba_trainer::train::{run, StopReason};

/// A run's per-step losses, and each step's checkpoint's tokens and data position.
type StepRecord = (Vec<f64>, Vec<(u64, DataPosition)>);

fn run_with_split(data: &std::path::Path, micro: MicroBatch, devices: Option<&str>) -> (StepRecord, String) {
    let out = tempfile::tempdir().unwrap();
    let cfg = mamba_trainer::config::TrainConfig {
        batch_size: Some(4),
        micro_batch: micro,
        grad_accum: None,
        devices: devices.map(String::from),
        steps: 3,
        save_every: 1,
        keep_checkpoints: 10,
        ..tiny_config(data, out.path(), "micro")
    };
    let outcome = run(&cfg, &no_stop()).unwrap();
    let positions = list_checkpoints(out.path())
        .unwrap()
        .into_iter()
        .map(|(_, dir)| {
            let s = TrainerState::load(&dir).unwrap();
            (s.tokens, serde_json::from_value(s.data_position).unwrap())
        })
        .collect();
    let resolved = std::fs::read_to_string(out.path().join("config.resolved.toml")).unwrap();
    ((outcome.losses, positions), resolved)
}

#[test]
fn the_split_of_the_batch_changes_neither_the_data_nor_the_losses() {
    init_tracing();
    let data = micro_shards();
    // The batch of 4 sequences per step as 4 × 1, 2 × 2, 1 × 4, auto, and 1 × 2 on each of 2 CPU ranks.
    let (whole, _) = run_with_split(data.path(), MicroBatch::Fixed(4), None);
    assert_eq!((whole.0.len(), whole.1.len()), (3, 3));
    assert_eq!(whole.1[2].0, 3 * 4 * MICRO_SEQ as u64);
    for (micro, devices) in [
        (MicroBatch::Fixed(2), None),
        (MicroBatch::Fixed(1), None),
        (MicroBatch::Auto, None),
        (MicroBatch::Fixed(1), Some("cpu,cpu")),
    ] {
        let ((losses, positions), resolved) = run_with_split(data.path(), micro, devices);
        let what = format!("micro-batch {micro} on {devices:?}");
        assert_eq!(positions, whole.1, "{what}: the steps' data positions");
        for (a, b) in whole.0.iter().zip(&losses) {
            assert!((a - b).abs() <= 1e-4 * a.abs(), "{what}: losses {losses:?} vs {:?}", whole.0);
        }
        // The saved config holds the split this run used (auto on the CPU: all 4 at once).
        let split = if micro == MicroBatch::Auto {
            (4, 1)
        } else {
            (micro.fixed().unwrap(), if devices.is_some() { 2 } else { 4 / micro.fixed().unwrap() })
        };
        let expect = format!("batch_size = 4\nmicro_batch = {}\ngrad_accum = {}\n", split.0, split.1);
        assert!(resolved.contains(&expect), "{what}: {resolved}");
    }
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
fn resume_keeps_the_batch_but_may_split_it_anew() {
    init_tracing();
    let data = micro_shards();
    let cfg = |out: &std::path::Path, micro: MicroBatch, steps: usize| mamba_trainer::config::TrainConfig {
        batch_size: Some(4),
        micro_batch: micro,
        grad_accum: None,
        steps,
        decay_steps: Some(8),
        ..tiny_config(data.path(), out, "micro")
    };
    let straight = tempfile::tempdir().unwrap();
    let full = run(&cfg(straight.path(), MicroBatch::Fixed(4), 8), &no_stop()).unwrap();
    // 4 × 1 for 3 steps, then (another card) 1 × 4 to step 6, then auto to step 8.
    let out = tempfile::tempdir().unwrap();
    let a = run(&cfg(out.path(), MicroBatch::Fixed(4), 3), &no_stop()).unwrap();
    let b = run(
        &mamba_trainer::config::TrainConfig { resume: true, ..cfg(out.path(), MicroBatch::Fixed(1), 6) },
        &no_stop(),
    )
    .unwrap();
    let c =
        run(&mamba_trainer::config::TrainConfig { resume: true, ..cfg(out.path(), MicroBatch::Auto, 8) }, &no_stop())
            .unwrap();
    assert_eq!((a.step, b.step, c.step), (3, 6, 8));
    let resumed = [a.losses, b.losses, c.losses].concat();
    for (x, y) in full.losses.iter().zip(&resumed) {
        assert!((x - y).abs() <= 1e-4 * x.abs(), "resumed {resumed:?} vs straight {:?}", full.losses);
    }
    // Another batch is refused: the message names both layouts and the flag that keeps the batch.
    let other = mamba_trainer::config::TrainConfig {
        resume: true,
        batch_size: Some(8),
        ..cfg(out.path(), MicroBatch::Auto, 9)
    };
    let err = format!("{:#}", run(&other, &no_stop()).unwrap_err());
    assert!(
        err.contains("batch size differs: the checkpoint trained 4 sequences per optimizer step (micro-batch 4 × grad-accum 1 × 1 rank), this run would train 8 (micro-batch auto × 1 rank); resume with --batch-size 4"),
        "{err}"
    );
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
        grad_accum: Some(2),
        resume: true,
        ..tiny_config(data.path(), out.path(), "micro")
    };
    let err = format!("{:#}", run(&cfg, &no_stop()).unwrap_err());
    assert!(err.contains("batch size differs") && err.contains("ckpt-000001"), "{err}");
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
