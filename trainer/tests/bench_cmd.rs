//! `trainer bench` on the CPU: tokens/s with the MFU beside it (n/a without a peak, a percentage
//! of `--peak-tflops`).
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
