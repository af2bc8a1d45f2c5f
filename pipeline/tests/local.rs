//! `pipeline --input` end to end on real text: the exact stream/chunk/val rules against an
//! independent reference (tokenizers crate + GPT-2 tokenizer.json), tokenizer parity, the Python
//! reader, `inspect`, config file, option fingerprint, --max-tokens and --workers.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use common::*;
use mamba_shards::Split;

/// FNV-1a 64 (the documented val hash), written out again independently of the binary.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, &b| (h ^ b as u64).wrapping_mul(0x100000001b3))
}

fn hf_gpt2() -> tokenizers::Tokenizer {
    tokenizers::Tokenizer::from_file(shared_dir().join("tokenizers/gpt2/tokenizer.json"))
        .expect("../shared GPT-2 tokenizer.json")
}

/// The documented rules applied to tinyshakespeare's rows: (train stream, val stream).
fn expected_streams(texts: &[String], ids: &[String], seq_len: u64, val_fraction: f64) -> (Vec<u32>, Vec<u32>) {
    let tok = hf_gpt2();
    let threshold = (val_fraction * 2f64.powi(64)) as u64;
    let (mut train, mut val) = (Vec::new(), Vec::new());
    let mut bootstrap = true;
    let mut boot_tokens = 0u64;
    for (text, id) in texts.iter().zip(ids) {
        let mut doc = vec![50256u32];
        doc.extend(tok.encode(text.as_str(), false).expect("encode").get_ids());
        let is_val = if bootstrap {
            boot_tokens += doc.len() as u64;
            bootstrap = boot_tokens < seq_len + 1;
            true
        } else {
            fnv(id.as_bytes()) < threshold
        };
        if is_val { &mut val } else { &mut train }.extend(doc);
    }
    (train, val)
}

fn published(stream: &[u32], seq_len: usize) -> &[u32] {
    let chunks = (stream.len() - 1) / seq_len;
    &stream[..chunks * seq_len + 1]
}

#[test]
fn local_corpus_matches_the_documented_stream_rules() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    run_ok(&[&SMALL[..], &["--input", tiny(), "--data-dir", p(&data), "--val-fraction", "0.02"]].concat());

    let (texts, ids) = corpus_rows();
    let (train, val) = expected_streams(&texts, &ids, 64, 0.02);
    assert!(val.len() > 2000, "the hash selects some val documents beyond the bootstrap");
    assert_eq!(stream(&data, Split::Train), published(&train, 64));
    assert_eq!(stream(&data, Split::Val), published(&val, 64));

    let m = manifest(&data);
    assert!(m.finished && m.finish_reason == "end of source");
    assert_eq!((m.params.seq_len(), m.params.vocab_size, m.params.eot_id, m.params.token_bytes), (64, 50257, 50256, 2));
    let train_chunks = (train.len() as u64 - 1) / 64;
    assert_eq!(m.train.chunks, train_chunks);
    assert_eq!(m.train.tokens, train_chunks * 64);
    assert_eq!(m.train.next_seq, train_chunks.div_ceil(8));
    assert!(m.val.next_seq >= 1);
    assert!(temporaries(&data).is_empty());
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data.join("pipeline.config.json")).unwrap()).unwrap();
    assert!(cfg["written_by"].as_str().unwrap().starts_with("mamba-pipeline"));
    assert_eq!(cfg["args"]["seq_len"], 64);
}

#[test]
fn default_tokenizer_matches_gpt2_tokenizer_json_on_the_corpus() {
    let bpe = tiktoken_rs::r50k_base().unwrap();
    let hf = hf_gpt2();
    let (mut texts, _) = corpus_rows();
    // Plus real web-like text from fineweb-mini (PEPs, Go blog, Rust book, Gutenberg).
    let f = std::fs::File::open(shared_dir().join("corpus/fineweb-mini/sample/10BT/000_00000.parquet")).unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f)
        .unwrap()
        .with_batch_size(300)
        .build()
        .unwrap();
    let batch = reader.into_iter().next().unwrap().unwrap();
    use arrow::array::AsArray;
    let col = batch.column_by_name("text").unwrap().as_string::<i32>().clone();
    texts.extend((0..batch.num_rows()).map(|i| col.value(i).to_string()));
    let mut n = 0;
    for t in &texts {
        let a = bpe.encode_ordinary(t);
        let b = hf.encode(t.as_str(), false).unwrap().get_ids().to_vec();
        assert_eq!(a, b, "ids differ on a document starting {:?}", &t[..t.len().min(60)]);
        n += a.len();
    }
    assert!(n > 500_000, "compared {n} tokens");
}

#[test]
fn python_reader_reads_what_rust_wrote() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    run_ok(&[&SMALL[..], &["--input", tiny(), "--data-dir", p(&data), "--max-tokens", "3000"]].concat());
    let ok = std::process::Command::new("python3")
        .args(["-c", "import numpy, zstandard"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        assert!(std::env::var_os("CI").is_none(), "CI needs python3 with numpy and zstandard for tools/read_shard.py");
        eprintln!("SKIPPED: python3 with numpy + zstandard not available");
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tools/read_shard.py");
    for split in [Split::Train, Split::Val] {
        let shard = data.join(mamba_shards::shard_file_name(split, 0));
        let raw = tmp.path().join(format!("{split}.u32"));
        let out =
            std::process::Command::new("python3").args([p(&script), p(&shard), "--raw", p(&raw)]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let printed = String::from_utf8_lossy(&out.stdout);
        assert!(printed.contains("'chunk_tokens': 65") && printed.contains("'eot_id': 50256"), "{printed}");
        let bytes = std::fs::read(&raw).unwrap();
        let from_python: Vec<u32> =
            bytes.chunks_exact(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        let r = mamba_shards::ShardReader::open(&shard).unwrap();
        let from_rust: Vec<u32> = (0..r.n_chunks()).flat_map(|k| r.read_chunk(k).unwrap()).collect();
        assert_eq!(from_python, from_rust);
    }
}

#[test]
fn inspect_verifies_checksums_and_reports_corruption() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    run_ok(&[&SMALL[..], &["--input", tiny(), "--data-dir", p(&data), "--max-tokens", "3000"]].concat());
    let out = run_ok(&["inspect", p(&data)]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("manifest: finished=true") && text.contains("checksums ok") && text.contains("sample ("),
        "{text}"
    );
    assert!(text.contains("First Citizen"), "decoded sample of the first document: {text}");
    // A directory: one summary line per split by default, every shard with --all.
    assert!(
        text.contains("train: ") && text.contains(" shards (seq 0..=") && !text.contains("train-00000000.shard:"),
        "{text}"
    );
    let all = String::from_utf8_lossy(&run_ok(&["inspect", p(&data), "--all"]).stdout).into_owned();
    assert!(all.contains("train-00000000.shard: seq=0") && all.contains("val-00000000.shard: seq=0"), "{all}");

    // A flipped byte inside a frame: the checksum/decoder catches it, naming file and chunk.
    let shard = data.join("train-00000001.shard");
    let mut bytes = std::fs::read(&shard).unwrap();
    bytes[4096 + 20] ^= 0xff;
    std::fs::write(&shard, &bytes).unwrap();
    let err = run_err(&["inspect", p(&shard)]);
    assert!(err.contains("train-00000001.shard") && err.contains("chunk 0"), "{err}");

    // An index that does not point at the frames.
    let shard = data.join("train-00000002.shard");
    let mut bytes = std::fs::read(&shard).unwrap();
    let n = bytes.len();
    bytes[n - 8..].copy_from_slice(&7u64.to_le_bytes());
    std::fs::write(&shard, &bytes).unwrap();
    let err = run_err(&["inspect", p(&data)]);
    assert!(err.contains("train-00000002.shard") && err.contains("unreadable index at byte"), "{err}");
}

#[test]
fn config_file_values_apply_and_flags_override_them() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let cfg = tmp.path().join("pipeline.toml");
    std::fs::write(
        &cfg,
        format!(
            "seq-len = 32\nchunks-per-shard = 4\nval-tokens = 32\nquiet = true\ninput = [{:?}]\nmax-tokens = 1000\n",
            tiny()
        ),
    )
    .unwrap();
    run_ok(&["--config", p(&cfg), "--data-dir", p(&data), "--chunks-per-shard", "5"]);
    let m = manifest(&data);
    assert_eq!((m.params.seq_len(), m.chunks_per_shard), (32, 5));
    let r = mamba_shards::ShardReader::open(&data.join("train-00000000.shard")).unwrap();
    assert_eq!((r.header().chunk_tokens, r.n_chunks()), (33, 5));
}

#[test]
fn refuses_to_resume_with_different_options() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let args = [&SMALL[..], &["--input", tiny(), "--data-dir", p(&data), "--max-tokens", "2000"]].concat();
    run_ok(&args);
    let err = run_err(&[&args[..], &["--seq-len", "32"]].concat());
    assert!(
        err.contains("manifest.json was made with different options") && err.contains("--seq-len (64 then, 32 now)"),
        "{err}"
    );
    let err = run_err(&[&args[..], &["--val-fraction", "0.1"]].concat());
    assert!(err.contains("--val-fraction (0 then, 0.1 now)"), "{err}");
    let err = run_err(&[&args[..], &["--val-tokens", "640"]].concat());
    assert!(err.contains("--val-tokens (64 then, 640 now)"), "{err}");
    std::fs::write(data.join("manifest.json"), b"{not json").unwrap();
    let err = run_err(&args);
    assert!(err.contains("manifest.json") && err.contains("unreadable manifest"), "{err}");
}

#[test]
fn max_tokens_stops_and_a_larger_limit_continues_the_same_stream() {
    let tmp = tempfile::tempdir().unwrap();
    let (full, part) = (tmp.path().join("full"), tmp.path().join("part"));
    let base = [&SMALL[..], &["--input", tiny()]].concat();
    run_ok(&[&base[..], &["--data-dir", p(&full)]].concat());
    run_ok(&[&base[..], &["--data-dir", p(&part), "--max-tokens", "20000"]].concat());
    let m = manifest(&part);
    assert!(m.finished && m.finish_reason == "max tokens", "{m:?}");
    assert!(m.train.tokens >= 20000 - 64 && m.train.tokens < 20000 + 64 * 8, "{}", m.train.tokens);
    let s = stream(&part, Split::Train);
    assert_eq!(s[..], stream(&full, Split::Train)[..s.len()]);
    // Same limit again: nothing to do.
    let out = run_ok(&[&base[..], &["--data-dir", p(&part), "--max-tokens", "20000"]].concat());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already finished"));
    // No limit: continues; the held-back tail is carried over, the streams equal the full run's.
    run_ok(&[&base[..], &["--data-dir", p(&part)]].concat());
    for split in Split::ALL {
        assert_eq!(stream(&part, split), stream(&full, split), "{split}");
    }
}

#[test]
fn workers_split_the_files_deterministically() {
    let tmp = tempfile::tempdir().unwrap();
    let files = write_corpus(&tmp.path().join("src"), 3, 90, 10);
    let run = |i: &str| {
        let data = tmp.path().join(format!("w{i}"));
        run_ok(
            &[
                &SMALL[..],
                &["--input", p(&tmp.path().join("src")), "--data-dir", p(&data), "--workers", "2", "--worker-index", i],
            ]
            .concat(),
        );
        manifest(&data).fingerprint.files
    };
    assert_eq!(run("0"), vec![files[0].display().to_string(), files[2].display().to_string()]);
    assert_eq!(run("1"), vec![files[1].display().to_string()]);
    let err = run_err(&[
        "--input",
        p(&files[0]),
        "--data-dir",
        p(&tmp.path().join("w")),
        "--workers",
        "2",
        "--worker-index",
        "1",
    ]);
    assert!(err.contains("worker 1 of 2 gets none of the 1 source files"), "{err}");
}

/// `--val-tokens`: the first documents fill a fixed val set of whole chunks, published (in shards
/// that end exactly at the set) before any train shard and recorded in the manifest; later
/// hash-selected val chunks come after it. A directory of an older pipeline (manifest version 1)
/// is refused with a clear message, and `--val-tokens 0` is a usage error.
#[test]
fn the_fixed_val_set_comes_first_and_old_dirs_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    // 10 chunks of 64: shards of 8 + 2, then the hash-selected (10%) val chunks in shards of 8.
    let args = [
        &SMALL[..],
        &[
            "--input",
            tiny(),
            "--data-dir",
            p(&data),
            "--max-tokens",
            "6000",
            "--val-tokens",
            "600",
            "--val-fraction",
            "0.1",
        ],
    ]
    .concat();
    run_ok(&args);
    let m = manifest(&data);
    assert_eq!(m.version, mamba_shards::manifest::MANIFEST_VERSION);
    assert_eq!(m.val_set, Some(mamba_shards::manifest::ValSet { chunks: 10, shards: 2 }), "{m:?}");
    assert_eq!(m.fingerprint.val_tokens, 600);
    let n_chunks = |split, seq| {
        mamba_shards::ShardReader::open(&data.join(mamba_shards::shard_file_name(split, seq))).unwrap().n_chunks()
    };
    assert_eq!((n_chunks(Split::Val, 0), n_chunks(Split::Val, 1)), (8, 2));
    assert!(m.val.next_seq > 2 && m.val.chunks > 10, "hash-selected val chunks follow the set: {m:?}");
    assert_eq!(n_chunks(Split::Val, 2), (m.val.chunks - 10).min(8) as usize);
    // The set is the first 10 chunks of the documented stream: documents in order until their
    // `[eot] + tokens` reach 10 × 64 + 1 tokens.
    let (texts, _) = corpus_rows();
    let tok = hf_gpt2();
    let mut set_stream = Vec::new();
    for text in &texts {
        set_stream.push(50256u32);
        set_stream.extend(tok.encode(text.as_str(), false).unwrap().get_ids());
        if set_stream.len() > 640 {
            break;
        }
    }
    assert_eq!(stream(&data, Split::Val)[..641], set_stream[..641]);
    // Published before any train shard (rename order = modification order).
    let mtime = |split, seq| {
        std::fs::metadata(data.join(mamba_shards::shard_file_name(split, seq))).unwrap().modified().unwrap()
    };
    assert!(mtime(Split::Val, 1) <= mtime(Split::Train, 0));

    // A version 1 directory (before the fixed val set) is refused, naming the file and what to do.
    let text = std::fs::read_to_string(data.join("manifest.json")).unwrap();
    let v1 = text.replacen(&format!("\"version\": {}", m.version), "\"version\": 1", 1);
    std::fs::write(data.join("manifest.json"), v1).unwrap();
    let err = run_err(&args);
    assert!(
        err.contains("manifest.json was written by an older pipeline (manifest version 1")
            && err.contains("new --data-dir"),
        "{err}"
    );
    let err = run_err(
        &[&SMALL[..], &["--input", tiny(), "--data-dir", p(&tmp.path().join("x")), "--val-tokens", "0"]].concat(),
    );
    assert!(err.contains("--val-tokens must be at least 1"), "{err}");
}

/// The documented way to evaluate a checkpoint on parquet text (`trainer eval` reads shards
/// only): `--val-tokens` beyond the text puts every document, in order, into val shards, cut as
/// the train stream is (the ragged tail dropped), and no train shard is written.
#[test]
fn val_tokens_beyond_the_text_make_all_of_it_val_shards_for_trainer_eval() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    run_ok(&[&SMALL[..], &["--input", tiny(), "--data-dir", p(&data), "--val-tokens", "1000000000000"]].concat());
    let (texts, _) = corpus_rows();
    let tok = hf_gpt2();
    let mut all = Vec::new();
    for text in &texts {
        all.push(50256u32);
        all.extend(tok.encode(text.as_str(), false).unwrap().get_ids());
    }
    assert_eq!(stream(&data, Split::Val), published(&all, 64));
    assert!(read_chunks(&data, Split::Train).is_empty());
    let m = manifest(&data);
    assert_eq!((m.train.chunks, m.val.chunks), (0, (all.len() as u64 - 1) / 64));
}
