//! The example config files of the repository parse, resolve and validate, and config keys take
//! `_` or `-` (one convention for both binaries: the flag names with `_`).
#![allow(clippy::unwrap_used)]

use std::path::Path;

use clap::Parser;
use mamba_trainer::config::{MicroBatch, TrainArgs, TrainConfig};

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: TrainArgs,
}

fn resolve(args: &[&str]) -> anyhow::Result<TrainConfig> {
    Cli::try_parse_from([&["trainer"], args].concat())?.args.resolve()
}

#[test]
fn the_example_trainer_config_resolves_to_what_it_says() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/example.toml");
    let c = resolve(&["--config", file.to_str().unwrap()]).unwrap();
    assert_eq!(
        (c.data.as_path(), c.model.as_str(), c.out.as_path(), c.steps),
        (Path::new("data/sample"), "tiny", Path::new("runs/example"), 300)
    );
    assert_eq!((c.batch_size, c.micro_batch, c.grad_accum), (Some(8), MicroBatch::Auto, None));
    assert_eq!((c.warmup, c.muon_lr, c.adamw_lr), (30, 3e-3, 3e-3));
    assert_eq!((c.sample_every, c.sample_prompt.as_str()), (100, "The meaning of life is"));
    assert!(!c.resume && !c.follow && !c.overwrite);
    c.model_config().unwrap();
    // Flags still override the file.
    let c = resolve(&["--config", file.to_str().unwrap(), "--steps", "7", "--overwrite"]).unwrap();
    assert_eq!((c.steps, c.overwrite), (7, true));
}

#[test]
fn config_keys_take_underscores_or_hyphens() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("run.toml");
    std::fs::write(&file, "micro-batch = 4\ngrad_accum = 2\nsample-every = 5\n").unwrap();
    let c = TrainConfig::from_toml_file(&file).unwrap();
    assert_eq!((c.micro_batch, c.grad_accum, c.sample_every), (MicroBatch::Fixed(4), Some(2), 5));
    std::fs::write(&file, "micro-batchez = 4\n").unwrap();
    let err = format!("{:#}", TrainConfig::from_toml_file(&file).unwrap_err());
    assert!(err.contains("run.toml") && err.contains("micro_batchez"), "{err}");
}

#[test]
fn resume_and_overwrite_exclude_each_other() {
    assert!(resolve(&["--resume", "--overwrite"]).is_err());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("run.toml");
    std::fs::write(&file, "resume = true\n").unwrap();
    let err = format!("{:#}", resolve(&["--config", file.to_str().unwrap(), "--overwrite"]).unwrap_err());
    assert!(err.contains("--resume and --overwrite"), "{err}");
}
