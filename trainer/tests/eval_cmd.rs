//! `trainer eval` end to end (the binary): it reproduces the val loss a training run logged, gives
//! one loss for the same chunks however their shards are named, and fails on bad input with an
//! error naming the file (parquet text: a hint to make shards of it with the pipeline, whose
//! `--val-tokens` recipe is tested in `pipeline/tests/local.rs`).
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;
use mamba_shards::format::Split;
use serde_json::Value;

const SEQ: usize = 64;

fn trainer() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_trainer"));
    c.env("RUST_LOG", "info");
    c
}

fn eval(checkpoint: &Path, data: &Path, extra: &[&str]) -> Output {
    let mut c = trainer();
    c.args(["eval", "--checkpoint"]).arg(checkpoint).arg("--data").arg(data).args(extra);
    c.output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `trainer eval ... --json`, which must succeed and print exactly one JSON object on stdout.
fn eval_json(checkpoint: &Path, data: &Path, extra: &[&str]) -> (Value, String) {
    let o = eval(checkpoint, data, &[extra, &["--json"]].concat());
    assert!(o.status.success(), "eval failed: {}", stderr(&o));
    let out = String::from_utf8(o.stdout.clone()).unwrap();
    assert_eq!(out.lines().count(), 1, "stdout holds only the JSON object: {out:?}");
    (serde_json::from_str(out.trim()).unwrap(), stderr(&o))
}

/// `trainer eval` that must fail; returns its stderr.
fn eval_fails(checkpoint: &Path, data: &Path, extra: &[&str]) -> String {
    let o = eval(checkpoint, data, extra);
    assert!(!o.status.success(), "eval should have failed; stdout {:?}", String::from_utf8_lossy(&o.stdout));
    stderr(&o)
}

/// Trains the `tiny` model on shakespeare shards (seq 64) for `steps` steps, evaluating on
/// `eval_chunks` val chunks every 2 steps and at the end, saving every 2 steps.
fn train_tiny(data: &Path, out: &Path, steps: usize, eval_chunks: usize) {
    train_tiny_dtype(data, out, steps, eval_chunks, "f32");
}

fn train_tiny_dtype(data: &Path, out: &Path, steps: usize, eval_chunks: usize, dtype: &str) {
    let cfg = mamba_trainer::config::TrainConfig {
        steps,
        eval_every: 2,
        eval_chunks,
        save_every: 2,
        dtype: dtype.into(),
        ..tiny_config(data, out, "tiny")
    };
    mamba_trainer::train::run(&cfg, &no_stop()).unwrap();
}

/// An untrained `tiny` checkpoint (enough where only the data side is tested).
fn init_checkpoint(dir: &Path) {
    let cfg = mamba_trainer::model::MambaConfig::preset("tiny").unwrap();
    let params = mamba_trainer::model::Params::init(&cfg, 1, &candle_core::Device::Cpu).unwrap();
    mamba_trainer::checkpoint::save_model(dir, &cfg, &params).unwrap();
}

fn rel_diff(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs()
}

/// The val loss logged for `step` in the run's metrics.jsonl.
fn logged_val_loss(run: &Path, step: u64) -> f64 {
    let records = mamba_trainer::metrics::read_jsonl(&run.join("metrics.jsonl")).unwrap();
    let r = records
        .iter()
        .rev()
        .find(|r| r["kind"] == "eval" && r["step"] == step)
        .unwrap_or_else(|| panic!("no eval record for step {step}"));
    r["val_loss"].as_f64().unwrap()
}

#[test]
fn reproduces_the_val_loss_logged_by_training() {
    let data = tempfile::tempdir().unwrap();
    shakespeare_shards(data.path(), SEQ, 20, 1000);
    let run = tempfile::tempdir().unwrap();
    let eval_chunks = 6;
    train_tiny(data.path(), run.path(), 4, eval_chunks);
    let n = eval_chunks.to_string();

    // The run directory resolves to its newest checkpoint, step 4, whose val loss was logged.
    let (r, _) = eval_json(run.path(), data.path(), &["--max-chunks", &n, "--micro-batch", "2"]);
    let logged = logged_val_loss(run.path(), 4);
    let loss = r["loss"].as_f64().unwrap();
    assert!(rel_diff(loss, logged) < 1e-5, "eval {loss} vs logged {logged}");
    assert_eq!(r["step"], 4);
    assert_eq!(r["chunks"], eval_chunks as u64);
    assert_eq!(r["tokens"], (eval_chunks * SEQ) as u64);
    assert_eq!(r["seq_len"], SEQ as u64);
    assert_eq!(r["split"], "val");
    assert!(rel_diff(r["perplexity"].as_f64().unwrap(), loss.exp()) < 1e-12);
    assert!(r["checkpoint"].as_str().unwrap().ends_with("ckpt-000004"), "{r}");

    // An explicit, older checkpoint: step 2's logged val loss; another micro-batch only rounds.
    let ckpt2 = run.path().join("ckpt-000002");
    let (r2, _) = eval_json(&ckpt2, data.path(), &["--max-chunks", &n, "--micro-batch", "4"]);
    let (l2, logged2) = (r2["loss"].as_f64().unwrap(), logged_val_loss(run.path(), 2));
    assert!(rel_diff(l2, logged2) < 1e-5, "eval {l2} vs logged {logged2}");
    assert_eq!(r2["step"], 2);
    assert!((l2 - loss).abs() > 1e-6, "two steps of training change the loss ({l2} vs {loss})");

    // The default output: one human line on stdout, the log on stderr.
    let o = eval(run.path(), data.path(), &["--max-chunks", &n, "--micro-batch", "2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let line = String::from_utf8(o.stdout.clone()).unwrap();
    let want = format!(
        "eval: loss {loss:.4}  ppl {:.1}  over {eval_chunks} chunks ({} tokens) of {}\n",
        loss.exp(),
        eval_chunks * SEQ,
        data.path().display()
    );
    assert_eq!(line, want);
    assert!(stderr(&o).contains("step 4"), "{}", stderr(&o));

    // --split train evaluates on the train shards instead (a different number).
    let (t, _) = eval_json(run.path(), data.path(), &["--max-chunks", "3", "--split", "train"]);
    assert_eq!(t["split"], "train");
    assert_eq!(t["chunks"], 3);
    assert!(t["loss"].as_f64().unwrap().is_finite());
}

/// A mixed-precision run's val loss is reproduced with `--dtype bf16` (and differs in f32).
#[test]
fn reproduces_the_val_loss_of_a_bf16_run() {
    let data = tempfile::tempdir().unwrap();
    shakespeare_shards(data.path(), SEQ, 20, 1000);
    let run = tempfile::tempdir().unwrap();
    train_tiny_dtype(data.path(), run.path(), 2, 2, "bf16");
    let logged = logged_val_loss(run.path(), 2);
    let (r, _) = eval_json(run.path(), data.path(), &["--max-chunks", "2", "--micro-batch", "2", "--dtype", "bf16"]);
    let loss = r["loss"].as_f64().unwrap();
    assert!(rel_diff(loss, logged) < 1e-5, "eval {loss} vs logged {logged}");
    assert_eq!(r["dtype"], "bf16");
    let (f, _) = eval_json(run.path(), data.path(), &["--max-chunks", "2", "--micro-batch", "2"]);
    let f32_loss = f["loss"].as_f64().unwrap();
    assert!(f32_loss != loss && rel_diff(f32_loss, loss) < 0.02, "f32 {f32_loss} vs bf16 {loss}: close, not equal");
}

/// Val shards of text (as `pipeline --input TEXT --val-tokens 1000000000000` writes them) give
/// one loss whether named as a directory or shard by shard, and whatever the micro-batch.
#[test]
fn the_same_chunks_give_the_same_loss_from_a_dir_or_a_shard_file() {
    let train_data = tempfile::tempdir().unwrap();
    shakespeare_shards(train_data.path(), SEQ, 20, 1000);
    let run = tempfile::tempdir().unwrap();
    train_tiny(train_data.path(), run.path(), 2, 2);

    let cut = chunks(&tokenize(&shakespeare_documents()[..12]), SEQ);
    let shards = tempfile::tempdir().unwrap();
    let paths = write_shards(shards.path(), Split::Val, &cut, GPT2_VOCAB, 16);
    assert!(paths.len() >= 2 && cut.len() > 16, "{} chunks", cut.len());

    let (all, _) = eval_json(run.path(), shards.path(), &[]);
    assert_eq!(all["chunks"], cut.len() as u64);
    assert_eq!(all["tokens"], (cut.len() * SEQ) as u64);
    assert!(all["loss"].as_f64().unwrap().is_finite());
    let (first16, _) = eval_json(run.path(), shards.path(), &["--max-chunks", "16"]);
    let (file, _) = eval_json(run.path(), &paths[0], &["--seq-len", "64"]);
    assert_eq!(file["chunks"], 16);
    assert_eq!(file["split"], Value::Null);
    assert_eq!(file["loss"], first16["loss"], "same chunks, same batches: the same loss to the bit");
    let (batched, _) = eval_json(run.path(), shards.path(), &["--micro-batch", "5"]);
    assert!(rel_diff(batched["loss"].as_f64().unwrap(), all["loss"].as_f64().unwrap()) < 1e-5, "{batched}");
}

#[test]
fn bad_inputs_fail_with_errors_naming_the_file() {
    let ckpt = tempfile::tempdir().unwrap();
    init_checkpoint(ckpt.path());
    let tmp = tempfile::tempdir().unwrap();
    let at = |name: &str| -> PathBuf { tmp.path().join(name) };

    // Paths that do not exist.
    let missing = at("no-such-data");
    let e = eval_fails(ckpt.path(), &missing, &[]);
    assert!(e.contains(&missing.display().to_string()), "{e}");
    let e = eval_fails(&at("no-such-run"), &missing, &[]);
    assert!(e.contains("no-such-run"), "{e}");

    // Parquet text (and a folder of it): not read here; the error says how to make shards of it.
    std::fs::write(at("text.parquet"), b"PAR1 not read").unwrap();
    let e = eval_fails(ckpt.path(), &at("text.parquet"), &[]);
    assert!(e.contains("text.parquet") && e.contains("pipeline --input") && e.contains("--val-tokens"), "{e}");

    // A folder without shards.
    std::fs::create_dir_all(at("empty")).unwrap();
    let e = eval_fails(ckpt.path(), &at("empty"), &[]);
    assert!(e.contains("empty") && e.contains("neither a shard directory"), "{e}");

    // Shards: a missing split, a chunk length other than --seq-len, a corrupt chunk.
    let shards = at("shards");
    std::fs::create_dir_all(&shards).unwrap();
    let stream: Vec<u32> = (0..(4 * SEQ + 1) as u32).map(|t| (t * 7919) % GPT2_VOCAB).collect();
    let paths = write_shards(&shards, Split::Val, &chunks(&stream, SEQ), GPT2_VOCAB, 4);
    let e = eval_fails(ckpt.path(), &shards, &["--split", "train"]);
    assert!(e.contains("no train shards") && e.contains("--split val"), "{e}");
    let e = eval_fails(ckpt.path(), &shards, &["--seq-len", "32"]);
    assert!(e.contains("val-00000000.shard") && e.contains("--seq-len needs 33"), "{e}");
    corrupt_chunk(&paths[0], 1);
    let e = eval_fails(ckpt.path(), &shards, &[]);
    assert!(e.contains("val-00000000.shard") && e.contains("chunk 1 "), "{e}");
    // The same corrupt shard named as a file.
    let e = eval_fails(ckpt.path(), &paths[0], &[]);
    assert!(e.contains("val-00000000.shard") && e.contains("chunk 1 "), "{e}");
}

/// Overwrites the start (zstd magic) of chunk `k`'s frame with zeros.
fn corrupt_chunk(path: &Path, k: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    let u64_at = |b: &[u8], o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap()) as usize;
    let index = u64_at(&bytes, 32);
    let start = u64_at(&bytes, index + 8 * k);
    bytes[start..start + 4].fill(0);
    std::fs::write(path, bytes).unwrap();
}
