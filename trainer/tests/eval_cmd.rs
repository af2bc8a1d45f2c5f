//! `trainer eval` end to end (the binary): it reproduces the val loss a training run logged, gives
//! the same loss on parquet text as on shards cut from that text, and fails on bad input with an
//! error naming the file.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringArray};
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
    let cfg = mamba_trainer::config::TrainConfig { steps, eval_every: 2, eval_chunks, save_every: 2, dtype: dtype.into(), ..tiny_config(data, out, "tiny") };
    mamba_trainer::train::run(&cfg, &no_stop()).unwrap();
}

/// An untrained `tiny` checkpoint (enough where only the data side is tested).
fn init_checkpoint(dir: &Path) {
    let cfg = mamba_trainer::model::MambaConfig::preset("tiny").unwrap();
    let params = mamba_trainer::model::Params::init(&cfg, 1, &candle_core::Device::Cpu).unwrap();
    mamba_trainer::checkpoint::save_model(dir, &cfg, &params).unwrap();
}

/// A FineWeb-like parquet file (`id`, `text`; `None` = a null text) in row groups of `group_rows`.
fn write_parquet(path: &Path, texts: &[Option<&str>], group_rows: usize) {
    let ids: Vec<String> = (0..texts.len()).map(|i| format!("<urn:doc:{i}>")).collect();
    let id: ArrayRef = Arc::new(StringArray::from(ids.iter().map(String::as_str).collect::<Vec<_>>()));
    let text: ArrayRef = Arc::new(StringArray::from(texts.to_vec()));
    write_columns(path, vec![("id", id), ("text", text)], group_rows);
}

fn write_columns(path: &Path, columns: Vec<(&str, ArrayRef)>, group_rows: usize) {
    let batch = RecordBatch::try_from_iter(columns).unwrap();
    let props = parquet::file::properties::WriterProperties::builder().set_max_row_group_row_count(Some(group_rows)).build();
    let mut w = parquet::arrow::ArrowWriter::try_new(std::fs::File::create(path).unwrap(), batch.schema(), Some(props)).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

fn rel_diff(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs()
}

/// The val loss logged for `step` in the run's metrics.jsonl.
fn logged_val_loss(run: &Path, step: u64) -> f64 {
    let records = mamba_trainer::metrics::read_jsonl(&run.join("metrics.jsonl")).unwrap();
    let r = records.iter().rev().find(|r| r["kind"] == "eval" && r["step"] == step).unwrap_or_else(|| panic!("no eval record for step {step}"));
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
    let want = format!("eval: loss {loss:.4}  ppl {:.1}  over {eval_chunks} chunks ({} tokens) of {}\n", loss.exp(), eval_chunks * SEQ, data.path().display());
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

#[test]
fn parquet_text_gives_the_loss_of_shards_cut_from_the_same_text() {
    let train_data = tempfile::tempdir().unwrap();
    shakespeare_shards(train_data.path(), SEQ, 20, 1000);
    let run = tempfile::tempdir().unwrap();
    train_tiny(train_data.path(), run.path(), 2, 2);

    // 12 documents (and a null text, which is no document) as one parquet file in row groups of
    // 5 rows, and as a folder of two files.
    let docs: Vec<String> = shakespeare_documents()[..12].to_vec();
    let mut rows: Vec<Option<&str>> = docs.iter().map(|d| Some(d.as_str())).collect();
    rows.insert(6, None);
    let text = tempfile::tempdir().unwrap();
    let file = text.path().join("one.parquet");
    write_parquet(&file, &rows, 5);
    let folder = text.path().join("folder");
    std::fs::create_dir_all(folder.join("sub")).unwrap();
    write_parquet(&folder.join("a.parquet"), &rows[..4], 3);
    write_parquet(&folder.join("sub/b.parquet"), &rows[4..], 100);
    std::fs::write(folder.join("README.txt"), "not parquet, ignored").unwrap();

    // The same text tokenized by the library function the pipeline's GPT-2 ids are tested
    // against, cut as the pipeline cuts it, written as val shards.
    let tokens = tokenize(&docs);
    let cut = chunks(&tokens, SEQ);
    let shards = tempfile::tempdir().unwrap();
    write_shards(shards.path(), Split::Val, &cut, GPT2_VOCAB, 16);
    let n = cut.len() as u64;
    let tail = tokens.len() as u64 - (n * SEQ as u64 + 1);

    let (from_shards, _) = eval_json(run.path(), shards.path(), &[]);
    let (from_file, log) = eval_json(run.path(), &file, &["--seq-len", "64"]);
    let (from_folder, _) = eval_json(run.path(), &folder, &["--seq-len", "64"]);
    for r in [&from_shards, &from_file, &from_folder] {
        assert_eq!(r["chunks"], n, "{r}");
        assert_eq!(r["tokens"], n * SEQ as u64);
        assert_eq!(r["loss"], from_shards["loss"], "same chunks, same batches: the same loss to the bit ({r})");
        assert!(r["loss"].as_f64().unwrap().is_finite());
    }
    assert_eq!(from_file["dropped_tokens"], tail);
    assert_eq!(from_file["split"], Value::Null);
    assert!(log.contains("12 documents") && log.contains(&format!("dropped the last {tail} tokens")), "{log}");

    // The real corpus file, default chunk length (1024 + 1, as the pipeline), first chunk only.
    let corpus = shared_dir().join("corpus/tinyshakespeare.parquet");
    let (r, _) = eval_json(run.path(), &corpus, &["--max-chunks", "1"]);
    assert_eq!(r["seq_len"], 1024);
    assert_eq!(r["tokens"], 1024);
    assert!(r["loss"].as_f64().unwrap().is_finite(), "{r}");
    assert_eq!(r["dropped_tokens"], Value::Null, "stopped early: the tail is unknown");
    // ... and at seq 64, equal to shards of the first chunks of the same documents.
    let all = shakespeare_documents();
    let first = chunks(&tokenize(&all[..4]), SEQ)[..5].to_vec();
    let shards5 = tempfile::tempdir().unwrap();
    write_shards(shards5.path(), Split::Val, &first, GPT2_VOCAB, 2);
    let (a, _) = eval_json(run.path(), &corpus, &["--max-chunks", "5", "--seq-len", "64"]);
    let (b, _) = eval_json(run.path(), shards5.path(), &[]);
    assert_eq!(a["loss"], b["loss"]);
    assert_eq!(a["chunks"], 5);
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

    // Parquet without a `text` column, and a file that is not parquet.
    let body: ArrayRef = Arc::new(StringArray::from(vec!["some text"]));
    write_columns(&at("bodies.parquet"), vec![("body", body)], 10);
    let e = eval_fails(ckpt.path(), &at("bodies.parquet"), &[]);
    assert!(e.contains("bodies.parquet") && e.contains("no `text` column") && e.contains("body"), "{e}");
    std::fs::write(at("garbage.parquet"), b"this is not a parquet file at all").unwrap();
    let e = eval_fails(ckpt.path(), &at("garbage.parquet"), &[]);
    assert!(e.contains("garbage.parquet") && e.contains("not a readable parquet file"), "{e}");
    // Text too short for one chunk.
    write_parquet(&at("short.parquet"), &[Some("Hello world")], 10);
    let e = eval_fails(ckpt.path(), &at("short.parquet"), &[]);
    assert!(e.contains("short.parquet") && e.contains("no whole chunk of 1025 tokens"), "{e}");
    // --split does not apply to parquet text.
    let e = eval_fails(ckpt.path(), &at("short.parquet"), &["--split", "val"]);
    assert!(e.contains("--split applies to a shard directory"), "{e}");

    // A folder with neither shards nor parquet files.
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
