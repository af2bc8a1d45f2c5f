//! Bad input gives a clear error naming the file and the position, and never a visible partial
//! shard: corrupt parquet, no `text` column, invalid UTF-8, a full disk.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use arrow::array::{ArrayRef, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use common::*;
use mamba_shards::ring::list_shards;
use mamba_shards::Split;

#[test]
fn corrupt_parquet_names_the_file_and_can_be_skipped() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let files = write_corpus(&src, 2, 60, 10);
    // File 1: a real parquet file cut in the middle (no footer), file 2: garbage.
    let cut = src.join("sample/10BT/001_00000.parquet");
    let bytes = std::fs::read(&cut).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let garbage = src.join("sample/10BT/002_00000.parquet");
    std::fs::write(&garbage, vec![7u8; 5000]).unwrap();

    let data = tmp.path().join("data");
    let err = run_err(&[&SMALL[..], &["--input", p(&src), "--data-dir", p(&data)]].concat());
    assert!(err.contains("001_00000.parquet") && err.contains("parquet footer"), "{err}");
    assert!(temporaries(&data).is_empty());

    let skipped = tmp.path().join("skipped");
    run_ok(&[&SMALL[..], &["--input", p(&src), "--data-dir", p(&skipped), "--on-error", "skip"]].concat());
    let m = manifest(&skipped);
    let names: Vec<_> = m.skipped_files.iter().map(|s| s.name.clone()).collect();
    assert_eq!(names, vec![cut.display().to_string(), garbage.display().to_string()]);
    let only_first = tmp.path().join("first");
    run_ok(&[&SMALL[..], &["--input", p(&files[0]), "--data-dir", p(&only_first)]].concat());
    assert_eq!(stream(&skipped, Split::Train), stream(&only_first, Split::Train));
}

#[test]
fn missing_text_column_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("notext.parquet");
    let schema = Arc::new(Schema::new(vec![
        Field::new("content", DataType::Utf8, false),
        Field::new("id", DataType::Utf8, false),
    ]));
    let cols: Vec<ArrayRef> =
        vec![Arc::new(StringArray::from(vec!["a", "b"])), Arc::new(StringArray::from(vec!["1", "2"]))];
    write_batch(&path, schema, cols, 10);
    let err = run_err(&[&SMALL[..], &["--input", p(&path), "--data-dir", p(&tmp.path().join("d"))]].concat());
    assert!(err.contains("notext.parquet") && err.contains("no `text` column (columns: content, id)"), "{err}");
}

#[test]
fn invalid_utf8_names_row_group_and_row() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("binary.parquet");
    write_binary_text_parquet(&path, 60, 37, b"ok \xff\xfe not utf-8");
    let err = run_err(&[&SMALL[..], &["--input", p(&path), "--data-dir", p(&tmp.path().join("d"))]].concat());
    assert!(
        err.contains("binary.parquet")
            && err.contains("row group 2 (rows 32..48), row 37")
            && err.contains("not valid UTF-8"),
        "{err}"
    );
}

#[test]
fn a_full_disk_fails_cleanly_and_the_rerun_completes_identically() {
    let tmp = tempfile::tempdir().unwrap();
    let (reference, data) = (tmp.path().join("reference"), tmp.path().join("data"));
    // Shards of 64 chunks (~12 KB) are larger than the file size limit below.
    let base = [&SMALL[..], &["--input", tiny(), "--chunks-per-shard", "64"]].concat();
    run_ok(&[&base[..], &["--data-dir", p(&reference)]].concat());

    // RLIMIT_FSIZE makes writes past 4–8 KiB (sh: 512- or 1024-byte blocks) fail with EFBIG ("File too large") like a full disk;
    // SIGXFSZ is ignored so the write returns the error instead of killing the process.
    std::fs::create_dir_all(&data).unwrap();
    let bin = env!("CARGO_BIN_EXE_pipeline");
    let mut cmd = std::process::Command::new("sh");
    cmd.arg("-c")
        .arg("trap '' XFSZ; ulimit -f 8; exec \"$@\"")
        .arg("sh")
        .arg(bin)
        .args(&base)
        .args(["--data-dir", p(&data)]);
    let out = cmd.env("RUST_LOG", "info").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("File too large") && stderr.contains(".shard"), "{stderr}");
    assert!(temporaries(&data).is_empty(), "{:?}", temporaries(&data));
    // Whatever is visible is complete and valid.
    for split in Split::ALL {
        for (_, path) in list_shards(&data, split).unwrap() {
            mamba_shards::ShardReader::open(&path).unwrap().verify().unwrap();
        }
    }
    run_ok(&[&base[..], &["--data-dir", p(&data)]].concat());
    assert_eq!(shard_bytes(&data), shard_bytes(&reference));
}
