//! The `trainer` binary end to end: train (optimizer groups printed, checkpoint written),
//! generate (text, deterministic in the seed), SIGTERM (checkpoint, exit 0).
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::*;

fn trainer() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_trainer"));
    c.env("RUST_LOG", "info");
    c
}

fn train_args(data: &std::path::Path, out: &std::path::Path, steps: usize) -> Vec<String> {
    let s = |x: &str| x.to_string();
    vec![
        s("train"), s("--data"), data.display().to_string(), s("--out"), out.display().to_string(),
        s("--model"), s("tiny"), s("--steps"), steps.to_string(), s("--micro-batch"), s("2"),
        s("--grad-accum"), s("1"), s("--eval-chunks"), s("2"), s("--eval-every"), s("0"),
        s("--save-every"), s("0"), s("--warmup"), s("1"), s("--adamw-lr"), s("0.003"),
    ]
}

#[test]
fn train_then_generate() {
    let data = tempfile::tempdir().unwrap();
    shakespeare_shards(data.path(), 64, 20, 1000);
    let out = tempfile::tempdir().unwrap();
    let o = trainer().args(train_args(data.path(), out.path(), 3)).output().unwrap();
    let log = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "{log}");
    assert!(log.contains("optimizer groups"), "{log}");
    assert!(log.contains("  muon ") && log.contains("  adamw (decay) ") && log.contains("  adamw (no decay) "), "both groups are printed: {log}");
    assert!(log.contains("step     3 | loss "), "fixed-format step line: {log}");
    assert!(out.path().join("ckpt-000003/model.safetensors").is_file());

    let gen = |seed: &str| {
        let o = trainer()
            .args(["generate", "--checkpoint", &out.path().display().to_string(), "--prompt", "ROMEO:", "--max-tokens", "12", "--seed", seed])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap()
    };
    let a = gen("1");
    assert!(a.starts_with("ROMEO:") && a.trim_end().len() > "ROMEO:".len(), "{a:?}");
    assert_eq!(a, gen("1"), "same seed, same text");
}

#[test]
fn sigterm_finishes_the_step_saves_and_exits_zero() {
    let data = tempfile::tempdir().unwrap();
    shakespeare_shards(data.path(), 64, 20, 1000);
    let out = tempfile::tempdir().unwrap();
    let mut child = trainer().args(train_args(data.path(), out.path(), 100_000)).stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for line in lines.by_ref() {
        if line.unwrap().contains("step     1 | loss") {
            break;
        }
    }
    let killed = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    let rest: Vec<String> = lines.map_while(|l| l.ok()).collect();
    let status = child.wait().unwrap();
    assert!(status.success(), "exit status {status:?}: {rest:?}");
    let ckpts = mamba_trainer::checkpoint::list_checkpoints(out.path()).unwrap();
    assert_eq!(ckpts.len(), 1, "{rest:?}");
    assert!(ckpts[0].0 >= 1 && ckpts[0].0 < 100_000);
}
