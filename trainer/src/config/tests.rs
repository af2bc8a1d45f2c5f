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
        (c.optimizer, c.warmup, c.micro_batch * c.grad_accum, c.steps),
        (OptimizerKind::Hybrid, 100, 32, 10_000)
    );
}

#[test]
fn devices_flag_is_parsed_and_checked() {
    let resolve = |args: &[&str]| Cli::parse_from([&["x"], args].concat()).args.resolve();
    let c = resolve(&["--devices", "cpu,cpu,cpu"]).unwrap();
    assert_eq!((c.devices.as_deref(), c.world().unwrap()), (Some("cpu,cpu,cpu"), 3));
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
    let c = TrainConfig { grad_accum: 0, ..TrainConfig::default() };
    assert!(c.validate().unwrap_err().to_string().contains("grad_accum"));
    let c = TrainConfig { model: "nope".into(), ..TrainConfig::default() };
    assert!(c.model_config().unwrap_err().to_string().contains("not a preset"));
}
