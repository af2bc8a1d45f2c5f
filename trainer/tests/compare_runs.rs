//! `trainer compare` end to end: run directories written by the trainer's own writers (two real
//! `tiny` runs, and synthetic runs with known val-loss curves written through `MetricsWriter` and
//! `TrainConfig::to_resolved_toml`, so the formats cannot drift), checked against hand-computed
//! tokens to the target, ratios, "not reached", no baseline, valid PNGs and clear errors.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;
use mamba_trainer::compare::runs::CONFIG_FILE;
use mamba_trainer::config::{BatchSplit, TrainConfig};
use mamba_trainer::metrics::{EvalMetrics, MetricsWriter, StepMetrics, METRICS_FILE};
use mamba_trainer::optim::OptimizerKind;
use serde_json::Value;

const M: u64 = 1_000_000;

fn compare(args: &[&Path], extra: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_trainer"));
    c.arg("compare").args(args).args(extra);
    c.output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// A run directory as `trainer train` leaves it: the resolved config, then a step record per
/// step (1M tokens each) and an eval record after every step with the given losses.
fn synthetic_run(
    root: &Path,
    label: &str,
    optimizer: OptimizerKind,
    lrs: (f64, f64),
    val: &[f64],
    steps: usize,
) -> PathBuf {
    let dir = root.join(label);
    let cfg = TrainConfig {
        out: dir.clone(),
        model: "tiny".into(),
        optimizer,
        muon_lr: lrs.0,
        adamw_lr: lrs.1,
        steps,
        ..TrainConfig::default()
    };
    // As saved once `--micro-batch auto` is resolved: the batch of 32 as 16 × 2.
    let cfg = cfg.with_split(BatchSplit { micro_batch: 16, grad_accum: 2 }).unwrap();
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(CONFIG_FILE), cfg.to_resolved_toml().unwrap()).unwrap();
    let mut w = MetricsWriter::open(&dir, None).unwrap();
    for (i, &v) in val.iter().enumerate() {
        let step = i as u64 + 1;
        let m = StepMetrics {
            step,
            loss: v + 0.1,
            lr_muon: lrs.0,
            lr_adamw: lrs.1,
            grad_norm: 1.0,
            tokens_per_sec: 1e5,
            mfu: None,
            step_ms: 10.0,
            data_wait_ms: 0.0,
            tokens: step * M,
            fwd_ms: None,
            bwd_ms: None,
            opt_ms: None,
            chunks: Vec::new(),
            skipped_chunks: 0,
        };
        w.log_step(&m).unwrap();
        w.log_eval(&EvalMetrics { step, tokens: step * M, val_loss: v, val_ppl: v.exp() }).unwrap();
    }
    w.flush().unwrap();
    dir
}

/// The study of the synthetic tests: two AdamW baselines and two hybrid runs, 4 evals each.
/// Target = 3.5 (adamw-a's final loss, at 4M tokens).
fn study(root: &Path) -> [PathBuf; 4] {
    [
        synthetic_run(root, "adamw-a", OptimizerKind::AdamW, (1e-3, 1e-3), &[5.0, 4.0, 3.6, 3.5], 4),
        synthetic_run(root, "adamw-b", OptimizerKind::AdamW, (1e-3, 3e-3), &[5.0, 4.2, 3.9, 3.8], 4),
        // 3.8 at 2M, 3.4 at 3M: 3.5 is 3/4 of the way → 2.75M tokens, 2.75 / 4 = 0.6875.
        synthetic_run(root, "hybrid-fast", OptimizerKind::Hybrid, (2e-3, 1e-4), &[4.5, 3.8, 3.4, 3.1], 4),
        synthetic_run(root, "hybrid-slow", OptimizerKind::Hybrid, (5e-4, 1e-4), &[5.0, 4.5, 4.0, 3.6], 4),
    ]
}

fn summary_json(out: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap()
}

fn row<'a>(s: &'a Value, label: &str) -> &'a Value {
    s["runs"].as_array().unwrap().iter().find(|r| r["label"] == label).unwrap_or_else(|| panic!("no row {label}: {s}"))
}

/// A valid PNG of the plot size with more than the background drawn; returns its pixels.
fn check_png(path: &Path) -> image::RgbImage {
    let len = std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).len();
    assert!(len > 0, "{} is empty", path.display());
    let img = image::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).to_rgb8();
    assert_eq!(img.dimensions(), (mamba_trainer::metrics::PLOT_WIDTH, mamba_trainer::metrics::PLOT_HEIGHT));
    let non_white = img.pixels().filter(|p| p.0 != [255, 255, 255]).count();
    assert!(non_white > 5_000, "{}: only {non_white} pixels drawn", path.display());
    img
}

#[test]
fn tokens_to_target_ratios_and_not_reached_match_hand_computed_values() {
    let root = tempfile::tempdir().unwrap();
    let runs = study(root.path());
    let out = root.path().join("report");
    let mut args: Vec<&Path> = runs.iter().map(|p| p.as_path()).collect();
    args.extend([Path::new("--out"), out.as_path()]);
    let o = compare(&args, &["--title", "synthetic study"]);
    assert!(o.status.success(), "{}", text(&o));
    let stdout = String::from_utf8(o.stdout.clone()).unwrap();

    // The printed table: hand-computed cells.
    assert!(
        stdout
            .contains("| adamw-a (baseline) | adamw | - | 1e-3 | tiny | 4 | 4.00M | 3.5000 | 3.5000 | 4.00M (1.00×) |"),
        "{stdout}"
    );
    assert!(
        stdout.contains("| adamw-b (baseline) | adamw | - | 3e-3 | tiny | 4 | 4.00M | 3.8000 | 3.8000 | not reached |"),
        "{stdout}"
    );
    assert!(
        stdout.contains("| hybrid-fast | hybrid | 2e-3 | 1e-4 | tiny | 4 | 4.00M | 3.1000 | 3.1000 | 2.75M (0.69×) |"),
        "{stdout}"
    );
    assert!(
        stdout.contains("| hybrid-slow | hybrid | 5e-4 | 1e-4 | tiny | 4 | 4.00M | 3.6000 | 3.6000 | not reached |"),
        "{stdout}"
    );
    assert!(stdout.contains("Target: val loss 3.5000") && stdout.contains("`adamw-a`"), "{stdout}");

    // summary.json: the same numbers, unrounded.
    let s = summary_json(&out);
    assert_eq!(s["title"], "synthetic study");
    assert_eq!(s["target"]["baseline"], "adamw-a");
    assert_eq!(s["target"]["val_loss"].as_f64(), Some(3.5));
    assert_eq!(s["target"]["baseline_tokens"].as_u64(), Some(4 * M));
    let fast = row(&s, "hybrid-fast");
    assert!((fast["tokens_to_target"].as_f64().unwrap() - 2.75e6).abs() < 1e-3, "{fast}");
    assert!((fast["ratio_to_baseline"].as_f64().unwrap() - 0.6875).abs() < 1e-9, "{fast}");
    assert_eq!(fast["muon_lr"].as_f64(), Some(2e-3));
    assert_eq!((&fast["batch_size"], &fast["micro_batch"], &fast["grad_accum"]), (&32.into(), &16.into(), &2.into()));
    assert_eq!(fast["baseline"], false);
    assert!(row(&s, "hybrid-slow")["tokens_to_target"].is_null());
    assert_eq!(row(&s, "adamw-a")["ratio_to_baseline"].as_f64(), Some(1.0));
    assert_eq!(row(&s, "adamw-b")["baseline"], true);
    assert_eq!(row(&s, "adamw-b")["git"].as_str(), Some(mamba_trainer::GIT_HASH));

    // summary.md carries the table, the settings and the charts.
    let md = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(md.starts_with("# synthetic study\n"), "{md}");
    assert!(
        md.contains("2.75M (0.69×)")
            && md.contains("val_loss_vs_tokens.png")
            && md.contains("val_loss_vs_tokens_zoom.png"),
        "{md}"
    );
    // The settings a controlled comparison must hold equal, per run.
    assert!(md.contains(&format!("| hybrid-fast | `data` | 0 | 32 (16 × 2) | {} |", mamba_trainer::GIT_HASH)), "{md}");
    let full = check_png(&out.join("val_loss_vs_tokens.png"));
    let zoom = check_png(&out.join("val_loss_vs_tokens_zoom.png"));
    assert_ne!(full, zoom, "the zoomed chart differs from the full one");
    // Each run has its own color: the first two of the palette are both drawn.
    for color in [[31, 119, 180], [255, 127, 14]] {
        assert!(full.pixels().any(|p| p.0 == color), "color {color:?} missing");
    }

    // --baseline-prefix: hybrid-slow as the baseline → target 3.6 at 4M; hybrid-fast crosses
    // 3.6 between 2M (3.8) and 3M (3.4): 2.5M, ratio 0.625.
    let out2 = root.path().join("report2");
    let mut args: Vec<&Path> = runs.iter().map(|p| p.as_path()).collect();
    args.extend([Path::new("--out"), out2.as_path()]);
    let o = compare(&args, &["--baseline-prefix", "hybrid-slow"]);
    assert!(o.status.success(), "{}", text(&o));
    let s = summary_json(&out2);
    assert_eq!(s["target"]["baseline"], "hybrid-slow");
    assert!((row(&s, "hybrid-fast")["tokens_to_target"].as_f64().unwrap() - 2.5e6).abs() < 1e-3);
    assert!((row(&s, "hybrid-fast")["ratio_to_baseline"].as_f64().unwrap() - 0.625).abs() < 1e-9);
    assert_eq!(row(&s, "adamw-a")["baseline"], false);
}

#[test]
fn no_baseline_leaves_the_column_empty_and_says_so() {
    let root = tempfile::tempdir().unwrap();
    let [_, _, fast, slow] = study(root.path());
    let out = root.path().join("report");
    let o = compare(&[&fast, &slow, Path::new("--out"), &out], &[]);
    assert!(o.status.success(), "{}", text(&o));
    let stdout = String::from_utf8(o.stdout.clone()).unwrap();
    assert!(stdout.contains("No baseline run"), "{stdout}");
    assert!(
        stdout.contains("| hybrid-fast | hybrid | 2e-3 | 1e-4 | tiny | 4 | 4.00M | 3.1000 | 3.1000 |  |"),
        "{stdout}"
    );
    let s = summary_json(&out);
    assert!(s["target"].is_null());
    assert!(row(&s, "hybrid-fast")["tokens_to_target"].is_null());
    check_png(&out.join("val_loss_vs_tokens.png"));
}

#[test]
fn bad_runs_are_clear_errors_or_skipped_with_skip_incomplete() {
    let root = tempfile::tempdir().unwrap();
    let [a, _, fast, _] = study(root.path());
    let out = root.path().join("report");

    // A corrupt third line: the error names the file and the line.
    let corrupt = synthetic_run(root.path(), "corrupt", OptimizerKind::Hybrid, (1e-3, 1e-4), &[4.0, 3.9], 2);
    let metrics = corrupt.join(METRICS_FILE);
    let mut lines: Vec<String> = std::fs::read_to_string(&metrics).unwrap().lines().map(String::from).collect();
    lines[2] = "{\"kind\":\"step\",\"step\":2,\"tok".into();
    std::fs::write(&metrics, lines.join("\n") + "\n").unwrap();
    let o = compare(&[&a, &corrupt, Path::new("--out"), &out], &[]);
    assert!(!o.status.success());
    let err = text(&o);
    assert!(err.contains(&format!("{}: line 3:", metrics.display())), "{err}");

    // An eval record without its loss, a run that never evaluated, a missing directory.
    let no_loss = synthetic_run(root.path(), "no-loss", OptimizerKind::Hybrid, (1e-3, 1e-4), &[4.0], 1);
    std::fs::write(no_loss.join(METRICS_FILE), "{\"kind\":\"eval\",\"step\":1,\"tokens\":5}\n").unwrap();
    let err = text(&compare(&[&no_loss, Path::new("--out"), &out], &[]));
    assert!(err.contains("metrics.jsonl: line 1: eval record without a numeric \"val_loss\""), "{err}");
    let no_eval = synthetic_run(root.path(), "no-eval", OptimizerKind::Hybrid, (1e-3, 1e-4), &[], 4);
    let err = text(&compare(&[&a, &no_eval, Path::new("--out"), &out], &[]));
    assert!(err.contains("no eval records"), "{err}");
    let missing = root.path().join("never-ran");
    let o = compare(&[&a, &missing, Path::new("--out"), &out], &["--skip-incomplete"]);
    assert!(!o.status.success() && text(&o).contains("never-ran: no such run directory"), "{}", text(&o));

    // An unfinished run (4 of 8 steps): reported and marked by default, skipped on request.
    let unfinished =
        synthetic_run(root.path(), "unfinished", OptimizerKind::Hybrid, (1e-3, 1e-4), &[4.4, 4.0, 3.7, 3.45], 8);
    let o = compare(&[&a, &unfinished, Path::new("--out"), &out], &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("| unfinished | hybrid | 1e-3 | 1e-4 | tiny | 4/8 (unfinished) |"), "{}", text(&o));

    // --skip-incomplete: the corrupt, eval-less and unfinished runs are skipped with warnings.
    let o = compare(&[&a, &corrupt, &no_eval, &unfinished, &fast, Path::new("--out"), &out], &["--skip-incomplete"]);
    let all = text(&o);
    assert!(o.status.success(), "{all}");
    assert!(
        all.contains("skipped")
            && all.contains("line 3")
            && all.contains("no eval records")
            && all.contains("unfinished (step 4 of 8)"),
        "{all}"
    );
    let s = summary_json(&out);
    let labels: Vec<&str> = s["runs"].as_array().unwrap().iter().map(|r| r["label"].as_str().unwrap()).collect();
    assert_eq!(labels, ["adamw-a", "hybrid-fast"]);
    let o = compare(&[&corrupt, &no_eval, Path::new("--out"), &out], &["--skip-incomplete"]);
    assert!(!o.status.success() && text(&o).contains("no run to compare"), "{}", text(&o));
}

/// Two real 4-step `tiny` runs (AdamW-only and hybrid, eval after every step) through the
/// `trainer` binary: compare reads what train writes, and its numbers follow from metrics.jsonl.
#[test]
fn real_tiny_runs_compare() {
    let data = tempfile::tempdir().unwrap();
    synthetic_shards(data.path(), GPT2_VOCAB, 32, 16, 4, 8);
    let root = tempfile::tempdir().unwrap();
    let mut dirs = Vec::new();
    for (label, optimizer) in [("adamw", "adamw"), ("hybrid", "hybrid")] {
        let out = root.path().join(label);
        let o = Command::new(env!("CARGO_BIN_EXE_trainer"))
            .args(["train", "--data"])
            .arg(data.path())
            .arg("--out")
            .arg(&out)
            .args([
                "--model",
                "tiny",
                "--steps",
                "4",
                "--micro-batch",
                "2",
                "--grad-accum",
                "1",
                "--eval-every",
                "1",
                "--eval-chunks",
                "2",
            ])
            .args(["--save-every", "0", "--warmup", "1", "--optimizer", optimizer, "--adamw-lr", "3e-3"])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o));
        dirs.push(out);
    }
    let out = root.path().join("report");
    let o = compare(&[&dirs[0], &dirs[1], Path::new("--out"), &out], &[]);
    assert!(o.status.success(), "{}", text(&o));
    let s = summary_json(&out);

    // Recompute from the adamw run's metrics.jsonl: 4 evals, 2 × 32 tokens per step.
    let records = mamba_trainer::metrics::read_jsonl(&dirs[0].join(METRICS_FILE)).unwrap();
    let evals: Vec<(f64, f64)> = records
        .iter()
        .filter(|r| r["kind"] == "eval")
        .map(|r| (r["tokens"].as_f64().unwrap(), r["val_loss"].as_f64().unwrap()))
        .collect();
    assert_eq!(evals.len(), 4);
    assert_eq!(evals[3].0, 4.0 * 64.0);
    let target = evals[3].1;
    assert_eq!(s["target"]["val_loss"].as_f64(), Some(target));
    assert_eq!(s["target"]["baseline"], "adamw");
    let adamw = row(&s, "adamw");
    assert_eq!(adamw["tokens_trained"].as_u64(), Some(256));
    assert_eq!(adamw["steps_done"].as_u64(), Some(4));
    assert_eq!(adamw["adamw_lr"].as_f64(), Some(3e-3));
    assert_eq!(adamw["optimizer"], "adamw");
    let hybrid = row(&s, "hybrid");
    assert_eq!(hybrid["optimizer"], "hybrid");
    assert_eq!(hybrid["muon_lr"].as_f64(), Some(TrainConfig::default().muon_lr));
    let best = evals.iter().map(|e| e.1).fold(f64::INFINITY, f64::min);
    assert_eq!(adamw["best_val_loss"].as_f64(), Some(best));
    let expected = mamba_trainer::compare::tokens_to_reach(&evals, target).unwrap();
    assert_eq!(adamw["tokens_to_target"].as_f64(), Some(expected));
    check_png(&out.join("val_loss_vs_tokens.png"));
    check_png(&out.join("val_loss_vs_tokens_zoom.png"));
}
