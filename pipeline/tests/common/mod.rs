//! Helpers shared by the pipeline's integration tests: paths to ../shared, parquet generation,
//! running the real binary, and reading a data dir back as token streams.
#![allow(dead_code)]

pub mod hub_server;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use arrow::array::{ArrayRef, BinaryArray, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use mamba_shards::ring::list_shards;
use mamba_shards::{ShardReader, Split};
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;

/// /work/shared (../shared beside the repo, as in CI).
pub fn shared_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared")
}

pub fn tinyshakespeare() -> PathBuf {
    shared_dir().join("corpus/tinyshakespeare.parquet")
}

/// tinyshakespeare.parquet's path as a &'static str (for argument lists).
pub fn tiny() -> &'static str {
    static PATH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PATH.get_or_init(|| tinyshakespeare().display().to_string())
}

pub fn pipeline() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_pipeline"));
    c.env("RUST_LOG", "info")
        .env_remove("HF_ENDPOINT")
        .env_remove("HF_TOKEN")
        .env("HF_HOME", std::env::temp_dir().join("pipeline-test-hf-home"));
    c
}

/// Runs the binary to completion; panics with its output if it fails.
pub fn run_ok(args: &[&str]) -> Output {
    let out = pipeline().args(args).output().expect("spawning pipeline");
    assert!(out.status.success(), "pipeline {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    out
}

/// Runs the binary expecting failure; returns stderr.
pub fn run_err(args: &[&str]) -> String {
    let out = pipeline().args(args).output().expect("spawning pipeline");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "pipeline {args:?} should have failed:\n{stderr}");
    stderr
}

pub fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// Small, fast defaults: 64-token sequences, 8 chunks per shard, a fixed val set of one chunk.
pub const SMALL: [&str; 8] =
    ["--seq-len", "64", "--chunks-per-shard", "8", "--val-tokens", "64", "--quiet", "--threads=2"];

/// A parquet file in FineWeb's schema (`text`, `id`, plus a column that is never read) with
/// `rows_per_group` rows per row group.
pub fn write_parquet(path: &Path, texts: &[String], ids: &[String], rows_per_group: usize) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("text", DataType::Utf8, false),
        Field::new("id", DataType::Utf8, false),
        Field::new("url", DataType::Utf8, false),
    ]));
    // A long, poorly compressible column that the pipeline must never download.
    let urls: Vec<String> = ids
        .iter()
        .map(|i| {
            let mut h = i.bytes().fold(0xcbf29ce484222325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100000001b3));
            let noise: String = (0..64)
                .map(|_| {
                    h = h.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    format!("{:016x}", h)
                })
                .collect();
            format!("https://example.com/{i}/{noise}")
        })
        .collect();
    let cols: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(texts.to_vec())),
        Arc::new(StringArray::from(ids.to_vec())),
        Arc::new(StringArray::from(urls)),
    ];
    write_batch(path, schema, cols, rows_per_group);
}

pub fn write_batch(path: &Path, schema: Arc<Schema>, cols: Vec<ArrayRef>, rows_per_group: usize) {
    let batch = RecordBatch::try_new(schema.clone(), cols).expect("batch");
    let props = WriterProperties::builder().set_max_row_group_row_count(Some(rows_per_group)).build();
    let file = std::fs::File::create(path).expect("create parquet");
    let mut w = ArrowWriter::try_new(file, schema, Some(props)).expect("writer");
    w.write(&batch).expect("write");
    w.close().expect("close");
}

/// A parquet file whose `text` column is binary holding `bad` at row `bad_row`.
pub fn write_binary_text_parquet(path: &Path, n: usize, bad_row: usize, bad: &[u8]) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("text", DataType::Binary, false),
        Field::new("id", DataType::Utf8, false),
    ]));
    let texts: Vec<Vec<u8>> =
        (0..n).map(|i| if i == bad_row { bad.to_vec() } else { format!("document {i}").into_bytes() }).collect();
    let ids: Vec<String> = (0..n).map(|i| format!("id-{i}")).collect();
    let cols: Vec<ArrayRef> =
        vec![Arc::new(BinaryArray::from_iter_values(texts.iter())), Arc::new(StringArray::from(ids))];
    write_batch(path, schema, cols, 16);
}

/// Real text cut into documents: tinyshakespeare's rows, split into `n_files` parquet files.
pub fn corpus_rows() -> (Vec<String>, Vec<String>) {
    use arrow::array::AsArray;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let f = std::fs::File::open(tinyshakespeare()).expect("tinyshakespeare.parquet (../shared/corpus)");
    let reader = ParquetRecordBatchReaderBuilder::try_new(f).expect("parquet").build().expect("reader");
    let (mut texts, mut ids) = (Vec::new(), Vec::new());
    for batch in reader {
        let batch = batch.expect("batch");
        let t = batch.column_by_name("text").expect("text").as_string::<i32>().clone();
        let i = batch.column_by_name("id").expect("id").as_string::<i32>().clone();
        for r in 0..batch.num_rows() {
            texts.push(t.value(r).to_string());
            ids.push(i.value(r).to_string());
        }
    }
    (texts, ids)
}

/// Writes `rows` of the corpus into `n_files` parquet files `dir/sample/10BT/00N_00000.parquet`.
pub fn write_corpus(dir: &Path, n_files: usize, rows: usize, rows_per_group: usize) -> Vec<PathBuf> {
    let (texts, ids) = corpus_rows();
    let sub = dir.join("sample/10BT");
    std::fs::create_dir_all(&sub).expect("mkdir");
    let per = rows.div_ceil(n_files);
    (0..n_files)
        .map(|f| {
            let lo = f * per;
            let hi = ((f + 1) * per).min(rows);
            let path = sub.join(format!("{f:03}_00000.parquet"));
            write_parquet(&path, &texts[lo..hi], &ids[lo..hi], rows_per_group);
            path
        })
        .collect()
}

/// Every chunk of a split, in seq order (shards read with the shared reader, checksums verified).
pub fn read_chunks(dir: &Path, split: Split) -> Vec<Vec<u32>> {
    let mut chunks = Vec::new();
    let mut expect_first = 0u64;
    for (seq, path) in list_shards(dir, split).expect("list shards") {
        let r = ShardReader::open(&path).expect("open shard");
        r.verify().expect("verify");
        assert_eq!(r.header().seq, seq);
        assert_eq!(r.header().first_token, expect_first, "{}", path.display());
        expect_first += r.n_chunks() as u64 * r.header().seq_len() as u64;
        for k in 0..r.n_chunks() {
            chunks.push(r.read_chunk(k).expect("chunk"));
        }
    }
    chunks
}

/// The split's token stream rebuilt from its chunks (checking the one-token overlaps).
pub fn stream(dir: &Path, split: Split) -> Vec<u32> {
    let chunks = read_chunks(dir, split);
    let mut s = Vec::new();
    for c in &chunks {
        if let Some(&last) = s.last() {
            assert_eq!(last, c[0], "consecutive chunks must overlap by one token");
            s.extend_from_slice(&c[1..]);
        } else {
            s.extend_from_slice(c);
        }
    }
    s
}

/// Shard file names and bytes of a data dir (to compare two runs byte for byte).
pub fn shard_bytes(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v = Vec::new();
    for split in Split::ALL {
        for (_, path) in list_shards(dir, split).expect("list") {
            v.push((
                path.file_name().expect("name").to_string_lossy().into_owned(),
                std::fs::read(&path).expect("read"),
            ));
        }
    }
    v
}

pub fn manifest(dir: &Path) -> mamba_shards::Manifest {
    mamba_shards::Manifest::read(dir).expect("manifest readable").expect("manifest exists")
}

/// Files whose names look like temporaries.
pub fn temporaries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .expect("read dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect()
}

/// Byte ranges (start..end) of one column's chunks in a parquet file, one per row group.
pub fn column_chunk_ranges(path: &Path, column: &str) -> Vec<(u64, u64)> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let r = SerializedFileReader::new(std::fs::File::open(path).expect("open")).expect("parquet");
    let meta = r.metadata();
    let idx = meta.file_metadata().schema_descr().columns().iter().position(|c| c.name() == column).expect("column");
    meta.row_groups()
        .iter()
        .map(|rg| {
            let (start, len) = rg.column(idx).byte_range();
            (start, start + len)
        })
        .collect()
}
