//! Data-parallel training (issue 6) on CPU ranks (`--devices cpu,cpu`, in-process communicator):
//! W ranks with grad_accum A train exactly like one device with grad_accum A × W (same losses and
//! final weights up to f32 summation order), checkpoints move between world sizes, distributed
//! Muon equals Muon, bad `--devices` values are clear errors, and only rank 0 writes files.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use candle_core::Device;
use common::*;
use mamba_trainer::checkpoint::{latest_checkpoint, load_model};
use mamba_trainer::config::TrainConfig;
use mamba_trainer::model::{MambaConfig, Params};
use mamba_trainer::optim::{HybridOptimizer, OptimConfig};
use mamba_trainer::parallel::{Comm, LocalComm};
use mamba_trainer::train::{run, StopReason};

/// `micro` model, micro-batch 2, `accum` micro-batches per rank, on `devices` (None = one CPU).
fn config(data: &Path, out: &Path, accum: usize, devices: Option<&str>, steps: usize) -> TrainConfig {
    TrainConfig {
        grad_accum: Some(accum),
        steps,
        decay_steps: Some(6),
        devices: devices.map(String::from),
        ..tiny_config(data, out, "micro")
    }
}

fn assert_close(a: &[f64], b: &[f64], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: {a:?} vs {b:?}");
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() <= 1e-5 * x.abs().max(1e-3), "{what}: {a:?} vs {b:?}");
    }
}

/// The largest |Δ| between the final checkpoints' weights of two runs, relative to the largest |w|.
fn weight_gap(a: &Path, b: &Path) -> f32 {
    let (a, b) = (
        load_model(&latest_checkpoint(a).unwrap().unwrap()).unwrap(),
        load_model(&latest_checkpoint(b).unwrap().unwrap()).unwrap(),
    );
    assert_eq!(a.tensors.len(), b.tensors.len());
    let mut gap = 0f32;
    for (name, x) in &a.tensors {
        let y = &b.tensors[name];
        let scale = x.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap().max(1e-3);
        gap = gap.max((x - y).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap() / scale);
    }
    gap
}

#[test]
fn two_and_three_cpu_ranks_train_like_one_device_with_the_same_effective_batch() {
    init_tracing();
    let data = micro_shards();
    for world in [2usize, 3] {
        let (single, ranks) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let one = run(&config(data.path(), single.path(), world, None, 3), &no_stop()).unwrap();
        let devices = vec!["cpu"; world].join(",");
        let many = run(&config(data.path(), ranks.path(), 1, Some(&devices), 3), &no_stop()).unwrap();
        assert_eq!((many.step, many.stop), (3, StopReason::StepsDone));
        assert_close(&one.losses, &many.losses, &format!("losses, {world} ranks"));
        let gap = weight_gap(single.path(), ranks.path());
        assert!(gap < 1e-5, "{world} ranks: final weights differ by {gap} (relative)");
        // Only rank 0 writes: the run directories hold the same files.
        assert_eq!(files(single.path()), files(ranks.path()));
    }
}

#[test]
fn checkpoints_resume_on_another_number_of_ranks() {
    init_tracing();
    let data = micro_shards();
    let straight = tempfile::tempdir().unwrap();
    let full = run(&config(data.path(), straight.path(), 2, None, 6), &no_stop()).unwrap();
    // 2 ranks × accum 1 for 3 steps, then 1 device × accum 2; and the other way round.
    for (first, then) in [((1, Some("cpu,cpu")), (2, None)), ((2, None), (1, Some("cpu,cpu")))] {
        let out = tempfile::tempdir().unwrap();
        let a = run(&config(data.path(), out.path(), first.0, first.1, 3), &no_stop()).unwrap();
        let b = run(&TrainConfig { resume: true, ..config(data.path(), out.path(), then.0, then.1, 6) }, &no_stop())
            .unwrap();
        assert_eq!((a.step, b.step), (3, 6));
        assert_close(&full.losses, &[a.losses, b.losses].concat(), &format!("{first:?} then {then:?}"));
        assert!(weight_gap(straight.path(), out.path()) < 1e-5);
    }
    // A different batch (sequences per step over all ranks) is refused, naming both layouts.
    let out = tempfile::tempdir().unwrap();
    run(&config(data.path(), out.path(), 1, Some("cpu,cpu"), 1), &no_stop()).unwrap();
    let err = format!(
        "{:#}",
        run(&TrainConfig { resume: true, ..config(data.path(), out.path(), 1, None, 2) }, &no_stop()).unwrap_err()
    );
    assert!(
        err.contains("batch size differs: the checkpoint trained 4 sequences per optimizer step (micro-batch 2 × grad-accum 1 × 2 ranks), this run would train 2 (micro-batch 2 × grad-accum 1 × 1 rank)"),
        "{err}"
    );
}

/// The micro model's weights after 3 hybrid-optimizer steps on fixed pseudo-gradients.
fn optimizer_run(comm: Option<&dyn Comm>) -> Vec<Vec<f32>> {
    let cfg = MambaConfig::preset("micro").unwrap();
    let params = Params::init(&cfg, 7, &Device::Cpu).unwrap();
    let mut opt = HybridOptimizer::new(params.named_vars().to_vec(), OptimConfig::default()).unwrap();
    for step in 0..3 {
        let grads = Params::init(&cfg, 100 + step as u64, &Device::Cpu).unwrap().tensors();
        opt.step_with(&grads, step, comm).unwrap();
    }
    params.tensors().iter().map(|(_, t)| t.flatten_all().unwrap().to_vec1::<f32>().unwrap()).collect()
}

#[test]
fn distributed_muon_equals_muon_on_the_same_gradients() {
    let want = optimizer_run(None);
    for world in [2, 3, 4] {
        let handles: Vec<_> = LocalComm::group(world)
            .into_iter()
            .map(|comm| std::thread::spawn(move || optimizer_run(Some(&comm))))
            .collect();
        for h in handles {
            let got = h.join().unwrap();
            let gap = got.iter().flatten().zip(want.iter().flatten()).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(gap < 1e-6, "{world} ranks: {gap}");
        }
    }
}

#[test]
fn bad_devices_values_are_clear_errors() {
    let data = micro_shards();
    let out = tempfile::tempdir().unwrap();
    for (devices, what) in [("0,0", "listed twice"), ("cpu,1", "cannot mix"), ("cpu,,cpu", "empty entry")] {
        let err = format!("{:#}", run(&config(data.path(), out.path(), 1, Some(devices), 1), &no_stop()).unwrap_err());
        assert!(err.contains(&format!("--devices {devices}")) && err.contains(what), "{devices}: {err}");
    }
    if !cfg!(feature = "nccl") {
        let err = format!("{:#}", run(&config(data.path(), out.path(), 1, Some("0,1"), 1), &no_stop()).unwrap_err());
        assert!(err.contains("--features nccl"), "{err}");
    }
}

#[test]
fn follow_mode_short_last_step_leaves_some_ranks_without_data() {
    init_tracing();
    // 20 chunks, all published, pipeline finished: steps of 3 micro-batches of 2 → 6, 6, 6, then
    // one micro-batch of 2, which rank 0 trains on while ranks 1 and 2 contribute zero gradients.
    // Each run gets its own copy of the data: follow mode writes a release file into it.
    let follow = |out: &Path, accum: usize, devices: Option<&str>| {
        let data = tempfile::tempdir().unwrap();
        synthetic_shards(data.path(), 64, MICRO_SEQ, 20, 4, 8);
        write_finished_manifest(data.path());
        let cfg = TrainConfig { follow: true, decay_steps: None, ..config(data.path(), out, accum, devices, 100) };
        run(&cfg, &no_stop()).unwrap()
    };
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let one = follow(a.path(), 3, None);
    let three = follow(b.path(), 1, Some("cpu,cpu,cpu"));
    assert_eq!(
        (one.stop, one.step, three.stop, three.step),
        (StopReason::DataExhausted, 4, StopReason::DataExhausted, 4)
    );
    assert_close(&one.losses, &three.losses, "follow mode, 3 ranks");
    assert!(weight_gap(a.path(), b.path()) < 1e-5);
}

#[test]
fn the_binary_trains_on_cpu_ranks_and_rejects_bad_devices() {
    let data = micro_shards();
    let out = tempfile::tempdir().unwrap();
    let trainer = |devices: &str| {
        let args = [
            "train",
            "--data",
            data.path().to_str().unwrap(),
            "--out",
            out.path().to_str().unwrap(),
            "--model",
            "micro",
            "--steps",
            "2",
            "--micro-batch",
            "2",
            "--grad-accum",
            "1",
            "--eval-chunks",
            "2",
            "--devices",
            devices,
        ];
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_trainer"))
            .args(args)
            .env("RUST_LOG", "info")
            .output()
            .unwrap();
        (o.status.success(), format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))
    };
    let (ok, log) = trainer("cpu,cpu");
    assert!(ok, "{log}");
    assert!(
        log.contains("data parallel: 2 ranks on cpu, cpu")
            && log.contains("batch 2 × 1 × 2 ranks = 4 sequences = 64 tokens/step"),
        "{log}"
    );
    assert!(log.contains("step     2 | loss "), "fixed-format step line: {log}");
    let resolved = std::fs::read_to_string(out.path().join("config.resolved.toml")).unwrap();
    assert!(resolved.contains("devices = \"cpu,cpu\""), "{resolved}");
    let (ok, log) = trainer("1,1");
    assert!(!ok && log.contains("error: --devices 1,1: GPU 1 is listed twice"), "{log}");
}

/// A finished pipeline's manifest for the synthetic shards (vocab 64, 8 chunks per shard).
fn write_finished_manifest(dir: &Path) {
    let h = *mamba_shards::ShardReader::open(&dir.join("train-00000000.shard")).unwrap().header();
    let mut m = mamba_shards::Manifest::for_hand_written_shards(
        mamba_shards::ShardParams::from_header(&h),
        8,
        "trainer data-parallel test",
    );
    m.finish("end of source");
    m.write(dir).unwrap();
}

/// The files under `dir`, relative to it (the TensorBoard event file's time stamp masked).
fn files(dir: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let name = p.strip_prefix(dir).unwrap().display().to_string();
                // TensorBoard names its event file after the wall-clock second it was opened.
                let name = if name.starts_with("tb/events.out.tfevents.") {
                    "tb/events.out.tfevents.*".to_string()
                } else {
                    name
                };
                out.insert(name);
            }
        }
    }
    out
}
