//! `trainer bench` on the CPU: tokens/s with the MFU beside it (n/a without a peak, a percentage
//! of `--peak-tflops`), `--micro-batch auto` resolved as `trainer train` resolves it, and batch
//! flags that contradict each other.
#![allow(clippy::unwrap_used)]

mod common;

use common::child::trainer;

/// Runs `trainer bench --model micro --seq-len 16 --steps 1 ARGS`: (success, stdout + stderr).
fn bench(args: &[&str]) -> (bool, String) {
    let o =
        trainer().args(["bench", "--model", "micro", "--seq-len", "16", "--steps", "1"]).args(args).output().unwrap();
    (o.status.success(), format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))
}

#[test]
fn bench_prints_mfu_beside_tokens_per_second() {
    let (ok, out) = bench(&[]);
    assert!(ok, "{out}");
    assert!(out.contains("micro-batch 1 × grad-accum 1 × 1 device × seq 16 = 16 tokens/step"), "{out}");
    assert!(out.contains(" tokens/s, MFU n/a (no peak for cpu; --peak-tflops to set one) | forward "), "{out}");
    let (ok, out) = bench(&["--peak-tflops", "0.001"]);
    assert!(ok, "{out}");
    let mean = out.lines().find(|l| l.starts_with("mean over 1 steps")).unwrap();
    let mfu = mean.split("MFU ").nth(1).unwrap();
    assert!(mfu.contains("% of 0.001 TFLOP/s (--peak-tflops) | forward "), "{mean}");
    let pct: f64 = mfu.split('%').next().unwrap().parse().unwrap();
    assert!(pct > 0.0, "{mean}");
    let (ok, out) = bench(&["--peak-tflops", "0"]);
    assert!(!ok && out.contains("--peak-tflops 0: expected a positive number"), "{out}");
}

#[test]
fn bench_resolves_micro_batch_auto_like_train() {
    let (ok, out) = bench(&["--micro-batch", "auto", "--batch-size", "8"]);
    assert!(ok, "{out}");
    assert!(out.contains("micro-batch auto → 8 × grad-accum 1 = batch 8 (fits: estimated "), "{out}");
    assert!(out.contains("micro-batch 8 × grad-accum 1 × 1 device"), "{out}");
    // Past the CPU's cap, the rest is accumulated.
    let (ok, out) = bench(&["--micro-batch", "auto", "--batch-size", "32"]);
    assert!(ok, "{out}");
    assert!(out.contains("micro-batch auto → 8 × grad-accum 4 = batch 32 (capped: "), "{out}");
    // --batch-size alone keeps the micro-batch of 1.
    let (ok, out) = bench(&["--batch-size", "4"]);
    assert!(ok && out.contains("micro-batch 1 × grad-accum 4 × 1 device"), "{out}");
    let (ok, out) = bench(&["--batch-size", "8", "--micro-batch", "2", "--grad-accum", "3"]);
    assert!(!ok && out.contains("--batch-size 8 contradicts --micro-batch 2 × --grad-accum 3"), "{out}");
}
