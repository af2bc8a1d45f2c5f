//! The `trainer` binary end to end: train (optimizer groups printed, checkpoint written),
//! generate (text, deterministic in the seed), SIGTERM (checkpoint, exit 143), a second signal
//! (exit at once), the run directory's lock, flags that cannot be allocated, and
//! `--micro-batch auto` and the MFU in the log, config and metrics.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::child::{trainer, Running};
use common::*;
use mamba_shards::dir_lock::{DirLock, TRAINER_LOCK};

fn train_args(data: &std::path::Path, out: &std::path::Path, steps: usize) -> Vec<String> {
    let s = |x: &str| x.to_string();
    vec![
        s("train"),
        s("--data"),
        data.display().to_string(),
        s("--out"),
        out.display().to_string(),
        s("--model"),
        s("tiny"),
        s("--steps"),
        steps.to_string(),
        s("--micro-batch"),
        s("2"),
        s("--grad-accum"),
        s("1"),
        s("--eval-chunks"),
        s("2"),
        s("--eval-every"),
        s("0"),
        s("--save-every"),
        s("0"),
        s("--warmup"),
        s("1"),
        s("--adamw-lr"),
        s("0.003"),
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
    assert!(
        log.contains("  muon ") && log.contains("  adamw (decay) ") && log.contains("  adamw (no decay) "),
        "both groups are printed: {log}"
    );
    assert!(log.contains("step     3 | loss "), "fixed-format step line: {log}");
    // The split as the flags give it, and no MFU on the CPU.
    assert!(log.contains("micro-batch 2 × grad-accum 1 = batch 2 (--micro-batch)"), "{log}");
    assert!(log.contains("MFU n/a: no peak for cpu (--peak-tflops to set one)"), "{log}");
    assert!(log.contains(" tok/s | MFU n/a | "), "{log}");
    assert!(out.path().join("ckpt-000003/model.safetensors").is_file());

    let gen = |seed: &str| {
        let o = trainer()
            .args([
                "generate",
                "--checkpoint",
                &out.path().display().to_string(),
                "--prompt",
                "ROMEO:",
                "--max-tokens",
                "12",
                "--seed",
                seed,
            ])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap()
    };
    let a = gen("1");
    assert!(a.starts_with("ROMEO:") && a.trim_end().len() > "ROMEO:".len(), "{a:?}");
    assert_eq!(a, gen("1"), "same seed, same text");
}

/// A trainer with `steps` to go on tinyshakespeare shards, once it has logged step 1.
fn training(data: &std::path::Path, out: &std::path::Path) -> Running {
    let run = Running::start({
        let mut c = trainer();
        c.args(train_args(data, out, 100_000));
        c
    });
    run.wait_for_line("step     1 | loss");
    run
}

#[test]
fn sigterm_finishes_the_step_saves_and_exits_143() {
    let data = tempfile::tempdir().unwrap();
    shakespeare_shards(data.path(), 64, 20, 1000);
    let out = tempfile::tempdir().unwrap();
    let (status, elapsed, log) = training(data.path(), out.path()).stop("TERM");
    assert_eq!(status.code(), Some(143), "128 + SIGTERM, for job schedulers: {status:?}\n{log}");
    assert!(log.contains("saved checkpoint"), "{log}");
    let ckpts = mamba_trainer::checkpoint::list_checkpoints(out.path()).unwrap();
    assert_eq!(ckpts.len(), 1, "{log}");
    assert!(ckpts[0].0 >= 1 && ckpts[0].0 < 100_000);
    // A step of this model takes milliseconds: finishing it and saving is quick.
    assert!(elapsed < Duration::from_secs(10), "{elapsed:?}\n{log}");
}

#[test]
fn a_second_signal_exits_at_once_with_128_plus_that_signal() {
    let data = tempfile::tempdir().unwrap();
    shakespeare_shards(data.path(), 64, 20, 1000);
    let out = tempfile::tempdir().unwrap();
    let run = training(data.path(), out.path());
    // The second signal arrives while the first one's step and checkpoint are still under way.
    let (status, elapsed, log) = run.stop_twice("INT", "TERM");
    assert_eq!(status.code(), Some(143), "{status:?}\n{log}");
    assert!(log.contains("second stop signal") && elapsed < Duration::from_secs(2), "{elapsed:?}\n{log}");
}

#[test]
fn a_second_trainer_on_a_run_dir_is_refused_with_the_first_ones_pid_and_a_killed_one_leaves_no_lock() {
    let data = tempfile::tempdir().unwrap();
    shakespeare_shards(data.path(), 64, 20, 1000);
    let out = tempfile::tempdir().unwrap();
    let mut first = training(data.path(), out.path());
    let t = Instant::now();
    let second = trainer().args(train_args(data.path(), out.path(), 3)).output().unwrap();
    let err = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("pid {}", first.child.id())) && err.contains("trainer.lock"), "{err}");
    assert!(t.elapsed() < Duration::from_secs(30), "refused at once");
    let resolved = std::fs::read_to_string(out.path().join("config.resolved.toml")).unwrap();
    assert!(resolved.contains("steps = 100000"), "the refused trainer wrote nothing: {resolved}");
    // kill -9: the OS drops the lock with the process.
    first.signal("KILL");
    first.wait_at_most(Duration::from_secs(10));
    DirLock::acquire(out.path(), TRAINER_LOCK, "trainer").expect("no stale lock after kill -9");
}

/// Runs `trainer train` on `data` with `model` and the flags `set` (replacing those of
/// [`train_args`]) and returns its stderr, after checking that it failed within 60 s.
fn refused(data: &std::path::Path, model: &str, set: &[(&str, &str)]) -> String {
    let out = tempfile::tempdir().unwrap();
    let mut args = train_args(data, out.path(), 3);
    for (flag, value) in [("--model", model)].iter().chain(set) {
        let at = args.iter().position(|a| a == flag).unwrap() + 1;
        args[at] = value.to_string();
    }
    let t = Instant::now();
    let o = trainer().args(&args).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!o.status.success() && t.elapsed() < Duration::from_secs(60), "{set:?}: {:?}\n{err}", o.status);
    err
}

#[test]
fn batch_flags_that_overflow_or_cannot_be_allocated_are_refused_by_name() {
    let data = micro_shards();
    let err = refused(data.path(), "tiny", &[("--micro-batch", "1000000000")]);
    assert!(err.contains("--micro-batch") && err.contains("1..=65536"), "{err}");
    let err = refused(data.path(), "tiny", &[("--grad-accum", "1000000000000")]);
    assert!(err.contains("--grad-accum") && err.contains("1..=1048576"), "{err}");
    // Inside the flag's range, but the logits of one micro-batch of the 50k-vocabulary model
    // (65536 × 16 × 50264 × 4 bytes = 211 GB) can never be allocated.
    let err = refused(data.path(), "tiny", &[("--micro-batch", "65536")]);
    assert!(err.contains("--micro-batch 65536") && err.contains("logits"), "{err}");
    // The micro model's logits are small, but a step of 65536 × 1048576 sequences is not.
    let err = refused(data.path(), "micro", &[("--micro-batch", "65536"), ("--grad-accum", "1048576")]);
    assert!(err.contains("--grad-accum 1048576") && err.contains("one optimizer step"), "{err}");
}

#[test]
fn micro_batch_auto_is_logged_and_saved_and_the_mfu_is_in_the_log_and_metrics() {
    let data = micro_shards();
    let out = tempfile::tempdir().unwrap();
    let mut args = train_args(data.path(), out.path(), 2);
    let at = args.iter().position(|a| a == "--model").unwrap() + 1;
    args[at] = "micro".into();
    let at = args.iter().position(|a| a == "--micro-batch").unwrap();
    args.drain(at..at + 4); // --micro-batch 2 --grad-accum 1
    args.extend(["--batch-size", "4", "--peak-tflops", "0.001"].map(String::from));
    let o = trainer().args(&args).output().unwrap();
    let log = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "{log}");
    // The CPU's choice for a batch of 4: all at once.
    assert!(log.contains("micro-batch auto → 4 × grad-accum 1 = batch 4 (fits: estimated "), "{log}");
    assert!(log.contains("available on the host)"), "{log}");
    let resolved = std::fs::read_to_string(out.path().join("config.resolved.toml")).unwrap();
    assert!(resolved.contains("batch_size = 4\nmicro_batch = 4\ngrad_accum = 1\n"), "{resolved}");
    // The peak named once at start, the MFU in every step line and record.
    assert!(log.contains("params × tokens/s ÷ 0.001 TFLOP/s (--peak-tflops)"), "{log}");
    let line = log.lines().find(|l| l.contains("step     2 | loss ")).unwrap();
    let mfu = line.split(" tok/s | MFU ").nth(1).unwrap().split('%').next().unwrap();
    assert!(mfu.parse::<f64>().unwrap() > 0.0, "{line}");
    let recs = mamba_trainer::metrics::read_jsonl(&out.path().join("metrics.jsonl")).unwrap();
    let steps: Vec<_> = recs.iter().filter(|r| r["kind"] == "step").collect();
    assert_eq!(steps.len(), 2);
    assert!(steps.iter().all(|r| r["mfu"].as_f64().is_some_and(|v| v > 0.0)), "{steps:?}");
}
