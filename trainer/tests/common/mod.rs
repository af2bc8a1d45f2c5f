//! Shared test helpers: shard directories built from the tinyshakespeare corpus (or synthetic
//! tokens), a quiet training config, and small assertions.
#![allow(dead_code)]

pub mod child;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use mamba_shards::format::Split;
use mamba_shards::{ShardParams, ShardWriter};
use mamba_trainer::config::{MicroBatch, TrainConfig};

pub const EOT: u32 = 50256;
pub const GPT2_VOCAB: u32 = 50257;

/// ../shared beside the repository (CI puts it there too).
pub fn shared_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared")
}

/// Every document of tinyshakespeare.parquet's `text` column, in file order.
pub fn shakespeare_documents() -> Vec<String> {
    use arrow::array::{Array, LargeStringArray, StringArray, StringViewArray};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let path = shared_dir().join("corpus/tinyshakespeare.parquet");
    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let reader = ParquetRecordBatchReaderBuilder::try_new(file).unwrap().build().unwrap();
    let mut docs = Vec::new();
    for batch in reader {
        let batch = batch.unwrap();
        let col = batch.column_by_name("text").expect("text column");
        if let Some(a) = col.as_any().downcast_ref::<StringArray>() {
            docs.extend((0..a.len()).map(|i| a.value(i).to_string()));
        } else if let Some(a) = col.as_any().downcast_ref::<LargeStringArray>() {
            docs.extend((0..a.len()).map(|i| a.value(i).to_string()));
        } else if let Some(a) = col.as_any().downcast_ref::<StringViewArray>() {
            docs.extend((0..a.len()).map(|i| a.value(i).to_string()));
        } else {
            panic!("text column has type {:?}", col.data_type());
        }
    }
    docs
}

/// GPT-2 token stream: `[eot] + tokens` per document.
pub fn tokenize(docs: &[String]) -> Vec<u32> {
    let bpe = tiktoken_rs::r50k_base().unwrap();
    let mut out = Vec::new();
    for d in docs {
        out.push(EOT);
        out.extend(bpe.encode_ordinary(d));
    }
    out
}

/// Cuts `tokens` into chunks of seq_len + 1 with a one-token overlap.
pub fn chunks(tokens: &[u32], seq_len: usize) -> Vec<Vec<u32>> {
    let n = tokens.len().saturating_sub(1) / seq_len;
    (0..n).map(|i| tokens[i * seq_len..i * seq_len + seq_len + 1].to_vec()).collect()
}

/// Writes `chunks` as shards of at most `per_shard` chunks; returns the paths.
pub fn write_shards(dir: &Path, split: Split, chunks: &[Vec<u32>], vocab: u32, per_shard: usize) -> Vec<PathBuf> {
    let chunk_tokens = chunks[0].len() as u32;
    let params = ShardParams::new(chunk_tokens - 1, vocab, vocab - 1);
    let mut paths = Vec::new();
    let mut first_token = 0u64;
    for (seq, group) in chunks.chunks(per_shard).enumerate() {
        let mut w = ShardWriter::create(dir, split, seq as u64, first_token, params, 3).unwrap();
        for c in group {
            w.push_chunk(c).unwrap();
        }
        first_token += (group.len() * (chunk_tokens as usize - 1)) as u64;
        paths.push(w.finish().unwrap());
    }
    paths
}

/// Shakespeare shards: the last `val_docs` documents are the val split. Returns the train tokens.
pub fn shakespeare_shards(dir: &Path, seq_len: usize, val_docs: usize, per_shard: usize) -> Vec<u32> {
    let docs = shakespeare_documents();
    let (train_docs, val) = docs.split_at(docs.len() - val_docs);
    let train = tokenize(train_docs);
    write_shards(dir, Split::Train, &chunks(&train, seq_len), GPT2_VOCAB, per_shard);
    write_shards(dir, Split::Val, &chunks(&tokenize(val), seq_len), GPT2_VOCAB, per_shard);
    train
}

/// Deterministic pseudo-text for small-vocab models: a noisy repeating pattern (learnable).
pub fn synthetic_shards(dir: &Path, vocab: u32, seq_len: usize, n_train: usize, n_val: usize, per_shard: usize) {
    let mut x = 12345u64;
    let mut next = |prev: u32| {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        if (x >> 33) & 3 == 0 {
            ((x >> 40) % vocab as u64) as u32
        } else {
            (prev * 7 + 3) % (vocab - 1)
        }
    };
    let mut make = |n: usize| {
        let mut toks = vec![vocab - 1];
        while toks.len() < n * seq_len + 1 {
            let p = toks[toks.len() - 1];
            toks.push(next(p));
        }
        chunks(&toks, seq_len)
    };
    let train = make(n_train);
    let val = make(n_val);
    write_shards(dir, Split::Train, &train, vocab, per_shard);
    write_shards(dir, Split::Val, &val, vocab, per_shard);
}

/// Sequence length of [`micro_shards`].
pub const MICRO_SEQ: usize = 16;

/// The `micro` model's usual data set: synthetic shards, vocab 64, 96 train and 8 val chunks of
/// [`MICRO_SEQ`] tokens, 40 chunks per shard, in a fresh temporary directory.
pub fn micro_shards() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    synthetic_shards(dir.path(), 64, MICRO_SEQ, 96, 8, 40);
    dir
}

/// A quiet, small training config writing into `out`.
pub fn tiny_config(data: &Path, out: &Path, model: &str) -> TrainConfig {
    TrainConfig {
        data: data.to_path_buf(),
        out: out.to_path_buf(),
        model: model.into(),
        steps: 4,
        micro_batch: MicroBatch::Fixed(2),
        grad_accum: Some(1),
        warmup: 2,
        eval_every: 0,
        eval_chunks: 4,
        save_every: 0,
        keep_checkpoints: 3,
        ..TrainConfig::default()
    }
}

pub fn no_stop() -> AtomicBool {
    AtomicBool::new(false)
}

/// Shannon entropy (nats) of the unigram distribution of `tokens`.
pub fn unigram_entropy(tokens: &[u32]) -> f64 {
    let mut counts = std::collections::HashMap::new();
    for &t in tokens {
        *counts.entry(t).or_insert(0usize) += 1;
    }
    let n = tokens.len() as f64;
    counts.values().map(|&c| c as f64 / n).map(|p| -p * p.ln()).sum()
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_test_writer()
        .try_init();
}
