//! Tests of the configuration: defaults ← file ← flags, and what is refused.

use std::path::Path;

use clap::Parser;

use super::*;
use crate::optim::config::ADAMW_ONLY_LR;
use crate::optim::OptimizerKind;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: TrainArgs,
}

#[test]
fn flags_override_file_which_overrides_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("run.toml");
    std::fs::write(&file, "model = \"tiny\"\nsteps = 50\nmuon_lr = 0.02\noptimizer = \"adamw\"\n").unwrap();
    let cli = Cli::parse_from(["x", "--config", file.to_str().unwrap(), "--steps", "7", "--resume"]);
    let c = cli.args.resolve().unwrap();
    assert_eq!((c.model.as_str(), c.steps, c.muon_lr, c.optimizer), ("tiny", 7, 0.02, OptimizerKind::AdamW));
    assert!(c.resume);
    // Neither the file nor a flag sets adamw_lr: AdamW alone gets its own default.
    assert_eq!(c.adamw_lr, ADAMW_ONLY_LR);
    // The resolved TOML parses back to the same config.
    let text = c.to_resolved_toml().unwrap();
    assert_eq!(toml::from_str::<TrainConfig>(&text).unwrap(), c);
}

#[test]
fn adamw_lr_default_follows_the_optimizer_unless_given() {
    let resolve = |args: &[&str]| Cli::parse_from([&["x"], args].concat()).args.resolve().unwrap();
    let c = resolve(&[]);
    assert_eq!((c.optimizer, c.muon_lr, c.adamw_lr), (OptimizerKind::Hybrid, 3e-3, 3e-3));
    assert_eq!(resolve(&["--optimizer", "adamw"]).adamw_lr, 1e-3);
    assert_eq!(resolve(&["--optimizer", "adamw", "--adamw-lr", "3e-3"]).adamw_lr, 3e-3);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a.toml");
    std::fs::write(&file, "optimizer = \"adamw\"\nadamw_lr = 2e-4\n").unwrap();
    assert_eq!(resolve(&["--config", file.to_str().unwrap()]).adamw_lr, 2e-4);
}

#[test]
fn the_shipped_seed_config_is_the_seed_recipe() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/seed.toml");
    let c = Cli::parse_from(["x", "--config", file.to_str().unwrap()]).args.resolve().unwrap();
    assert_eq!((c.muon_lr, c.adamw_lr), crate::optim::config::SEED_LRS);
    assert_eq!(
        (c.optimizer, c.warmup, c.batch_target().unwrap().batch_size, c.steps),
        (OptimizerKind::Hybrid, 100, 32, 10_000)
    );
    // The batch of 32 in whatever micro-batches fit (the seed ran 1 × 32, at a quarter of the speed).
    assert_eq!(c.micro_batch, MicroBatch::Auto);
}

#[test]
fn the_batch_is_32_by_default_and_split_automatically() {
    let resolve = |args: &[&str]| Cli::parse_from([&["x"], args].concat()).args.resolve();
    let c = resolve(&[]).unwrap();
    assert_eq!((c.batch_size, c.micro_batch, c.grad_accum), (None, MicroBatch::Auto, None));
    let t = c.batch_target().unwrap();
    assert_eq!((t.batch_size, t.per_device, t.micro_batch), (32, 32, None));
    assert!(c.split().unwrap_err().to_string().contains("auto is not resolved"));
    // Resolved: all three written, and the TOML reads back to the same config.
    let r = c.with_split(BatchSplit { micro_batch: 16, grad_accum: 2 }).unwrap();
    assert_eq!((r.batch_size, r.micro_batch, r.grad_accum), (Some(32), MicroBatch::Fixed(16), Some(2)));
    let text = r.to_resolved_toml().unwrap();
    assert!(text.contains("batch_size = 32\nmicro_batch = 16\ngrad_accum = 2\n"), "{text}");
    assert_eq!(toml::from_str::<TrainConfig>(&text).unwrap(), r);
    assert!(c.with_split(BatchSplit { micro_batch: 16, grad_accum: 4 }).is_err());
    // An unresolved config saves `micro_batch = "auto"` and reads it back.
    let text = c.to_resolved_toml().unwrap();
    assert!(text.contains("micro_batch = \"auto\""), "{text}");
    assert_eq!(toml::from_str::<TrainConfig>(&text).unwrap(), c);

    let c = resolve(&["--batch-size", "64", "--micro-batch", "8", "--devices", "cpu,cpu"]).unwrap();
    assert_eq!(c.split().unwrap(), BatchSplit { micro_batch: 8, grad_accum: 4 });
    // Both numbers: per device, as before --batch-size existed.
    let c = resolve(&["--micro-batch", "2", "--grad-accum", "3", "--devices", "cpu,cpu"]).unwrap();
    assert_eq!((c.batch_target().unwrap().batch_size, c.split().unwrap().grad_accum), (12, 3));
    let err = format!("{:#}", resolve(&["--batch-size", "32", "--micro-batch", "2", "--grad-accum", "3"]).unwrap_err());
    assert!(err.contains("--batch-size 32 contradicts --micro-batch 2 × --grad-accum 3"), "{err}");
    let err = format!("{:#}", resolve(&["--micro-batch", "auto", "--grad-accum", "5"]).unwrap_err());
    assert!(err.contains("--grad-accum 5 contradicts --batch-size 32 (the default)"), "{err}");
    let err = Cli::try_parse_from(["x", "--micro-batch", "lots"]).err().unwrap().to_string();
    assert!(err.contains("expected auto or a number"), "{err}");
}

#[test]
fn old_configs_keep_their_batch_and_flags_override_the_files_batch_keys() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("old.toml");
    let resolve = |args: &[&str]| Cli::parse_from([&["x"], args].concat()).args.resolve().unwrap();
    let path = file.to_str().unwrap();
    // A config of before --batch-size: 8 × 1 per device stays 8 × 1.
    std::fs::write(&file, "micro_batch = 8\ngrad_accum = 1\n").unwrap();
    let c = resolve(&["--config", path]);
    assert_eq!((c.batch_target().unwrap().batch_size, c.split().unwrap().micro_batch), (8, 8));
    // A --batch-size or --micro-batch flag: the file's grad_accum yields (it is derived now).
    assert_eq!(resolve(&["--config", path, "--batch-size", "32"]).split().unwrap().grad_accum, 4);
    let c = resolve(&["--config", path, "--micro-batch", "auto"]);
    assert_eq!((c.batch_target().unwrap().batch_size, c.micro_batch), (32, MicroBatch::Auto));
    // --grad-accum alone keeps the file's micro-batch: 8 × 4, as before.
    assert_eq!(resolve(&["--config", path, "--grad-accum", "4"]).batch_target().unwrap().batch_size, 32);
    // A file's batch_size yields to --micro-batch N --grad-accum M, and splits by --micro-batch N.
    std::fs::write(&file, "batch_size = 64\n").unwrap();
    assert_eq!(resolve(&["--config", path, "--micro-batch", "8"]).split().unwrap().grad_accum, 8);
    let c = resolve(&["--config", path, "--micro-batch", "4", "--grad-accum", "2"]);
    assert_eq!(c.batch_target().unwrap().batch_size, 8);
    // A checkpoint's config from before (JSON, integers) reads as it was written.
    let old: TrainConfig = serde_json::from_str("{\"micro_batch\": 1, \"grad_accum\": 32}").unwrap();
    assert_eq!(old.split().unwrap(), BatchSplit { micro_batch: 1, grad_accum: 32 });
}

#[test]
fn devices_flag_is_parsed_and_checked() {
    let resolve = |args: &[&str]| Cli::parse_from([&["x"], args].concat()).args.resolve();
    let c = resolve(&["--devices", "cpu,cpu,cpu", "--batch-size", "24"]).unwrap();
    assert_eq!((c.devices.as_deref(), c.world().unwrap()), (Some("cpu,cpu,cpu"), 3));
    // The default batch of 32 does not split over 3 ranks.
    let err = format!("{:#}", resolve(&["--devices", "cpu,cpu,cpu"]).unwrap_err());
    assert!(err.contains("--batch-size 32 (the default) is not a multiple of the 3 ranks"), "{err}");
    assert_eq!(resolve(&[]).unwrap().world().unwrap(), 1);
    let err = format!("{:#}", resolve(&["--devices", "0,0"]).unwrap_err());
    assert!(err.contains("--devices 0,0") && err.contains("listed twice"), "{err}");
    // Old configs (and checkpoints) without the key are single-device.
    let c: TrainConfig = toml::from_str("steps = 3\n").unwrap();
    assert_eq!(c.world().unwrap(), 1);
}

#[test]
fn unknown_keys_and_bad_values_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "stepz = 5\n").unwrap();
    let err = format!("{:#}", TrainConfig::from_toml_file(&file).unwrap_err());
    assert!(err.contains("bad.toml") && err.contains("stepz"), "{err}");
    let c = TrainConfig { grad_accum: Some(0), ..TrainConfig::default() };
    assert!(c.validate().unwrap_err().to_string().contains("grad_accum"));
    let c = TrainConfig { model: "nope".into(), ..TrainConfig::default() };
    assert!(c.model_config().unwrap_err().to_string().contains("not a preset"));
}
