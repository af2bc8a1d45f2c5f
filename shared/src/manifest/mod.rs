//! The pipeline's manifest, `manifest.json` in the data directory ([`crate::ring::MANIFEST_FILE`]).
//!
//! Written atomically by `pipeline` right after every shard it publishes, read by `trainer` (which
//! shards exist, whether the pipeline has finished) and by `pipeline` itself to resume after a
//! crash: it records, per split, the exact source position of the first stream token that is not
//! yet in a published chunk. See `docs/shard-format.md` for every field.
//!
//! In memory the shard parameters, the sequence length among them, are held once
//! ([`Manifest::params`]); the JSON keeps its three copies of the sequence length (`seq_len`,
//! `chunk_tokens`, `fingerprint.seq_len`) so that older builds still read what this one writes.
//! `on_disk.rs` converts between the two and refuses a file whose copies disagree.

mod on_disk;

use std::path::Path;

use crate::error::{Result, ShardError};
use crate::format::Split;
use crate::fsutil::atomic_write;
use crate::ring::MANIFEST_FILE;
use crate::shard_params::ShardParams;

/// Version 2 added the fixed val set (`val_set`, `fingerprint.val_tokens`): the first documents of
/// the source fill a `--val-tokens` budget and are published before any train shard.
pub const MANIFEST_VERSION: u32 = 2;
/// The oldest version this build still reads (a version 1 directory still trains and evaluates:
/// its val set is the val shards on disk; `pipeline` refuses to resume into it).
pub const OLDEST_READABLE_VERSION: u32 = 1;

/// A document's place in the pipeline's deterministic, ordered source: the file's index in the
/// (worker's) sorted file list and the row inside that file. Ordered file first, then row.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub struct DocPos {
    pub file: u64,
    pub row: u64,
}

/// A token's place in the source: document plus the offset inside that document's
/// `[eot] + tokens(document)` (offset 0 is the leading eot).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct StreamPos {
    pub doc: DocPos,
    pub offset: u64,
}

/// What one split (train or val) has published.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SplitManifest {
    /// seq of the next shard this split will publish (shards 0..next_seq have been published;
    /// in ring mode the trainer may have released and the pipeline deleted some of them).
    pub next_seq: u64,
    /// Chunks published so far, over all shards of the split.
    pub chunks: u64,
    /// Stream tokens covered by those chunks without counting overlaps: `chunks * seq_len`.
    /// It is also the stream index where the next chunk starts.
    pub tokens: u64,
    /// Source position of stream token `tokens`: where a resumed run continues this split.
    pub resume: StreamPos,
}

/// The options that change the token stream. A data directory is only resumed with identical ones.
/// (`--seq-len`, also one of them, is [`Manifest::params`]' sequence length.)
#[derive(Debug, Clone, PartialEq)]
pub struct SourceFingerprint {
    /// The worker's source files in order (paths or Hub paths), as `DocPos::file` indexes them.
    pub files: Vec<String>,
    pub tokenizer: String,
    pub chunks_per_shard: u32,
    pub val_fraction: f64,
    /// `--val-tokens`: the budget of the fixed val set (0 in version 1 manifests, which had none).
    pub val_tokens: u64,
    pub workers: u32,
    pub worker_index: u32,
}

/// The fixed validation set: val shards `0..shards`, holding exactly the first `chunks` chunks of
/// the val stream (made from the first documents of the source). Recorded once complete, before
/// any train shard is published, and never changed afterwards: every evaluation of every run on
/// this directory (live or static, resumed or not) uses these chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ValSet {
    pub chunks: u64,
    pub shards: u64,
}

/// A source file given up on under `--on-error skip`, from `from_row` on.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SkippedFile {
    pub file: u64,
    pub name: String,
    pub from_row: u64,
    pub error: String,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "on_disk::ManifestJson", into = "on_disk::ManifestJson")]
pub struct Manifest {
    pub version: u32,
    /// True once the source (or `--max-tokens`) is exhausted and the last shards are published.
    pub finished: bool,
    /// Why it finished: `"end of source"` or `"max tokens"` (empty while running).
    pub finish_reason: String,
    /// The `--max-tokens` limit in force (`None`: the whole source).
    pub max_tokens: Option<u64>,
    /// The shard parameters, the sequence length among them (stored three times in the JSON).
    pub params: ShardParams,
    /// `gpt2` for the built-in tokenizer, else the `--tokenizer` argument.
    pub tokenizer: String,
    pub chunks_per_shard: u32,
    pub fingerprint: SourceFingerprint,
    /// Last document of the val bootstrap: every document up to and including it is val (the
    /// first documents of the source until they fill one chunk). `None` until it is known.
    pub val_bootstrap_through: Option<DocPos>,
    /// The fixed val set, once complete (`None` while the pipeline is still filling it, and in
    /// version 1 manifests, whose readers take the val shards on disk). See [`ValSet`].
    pub val_set: Option<ValSet>,
    pub train: SplitManifest,
    pub val: SplitManifest,
    pub skipped_files: Vec<SkippedFile>,
    /// The pipeline's `--ring-slots` N of its latest run (0: no ring, nothing is recycled). The
    /// trainer reads it to know when the pipeline is blocked on a full ring. `None` in manifests
    /// written before this field existed: the ring size is unknown.
    pub ring_slots: Option<u32>,
    /// `mamba-pipeline` version and git commit that last wrote the manifest.
    pub written_by: String,
}

impl Manifest {
    /// A new data directory's manifest: nothing published, not finished, no `--max-tokens`, the
    /// ring size unknown. The tokenizer and shard size are the fingerprint's.
    pub fn new(params: ShardParams, fingerprint: SourceFingerprint, written_by: String) -> Manifest {
        Manifest {
            version: MANIFEST_VERSION,
            finished: false,
            finish_reason: String::new(),
            max_tokens: None,
            params,
            tokenizer: fingerprint.tokenizer.clone(),
            chunks_per_shard: fingerprint.chunks_per_shard,
            fingerprint,
            val_bootstrap_through: None,
            val_set: None,
            train: SplitManifest::default(),
            val: SplitManifest::default(),
            skipped_files: Vec::new(),
            ring_slots: None,
            written_by,
        }
    }

    /// The manifest of shards written by hand (tests, tools): one worker, no source files, no
    /// val rule, tokenizer `test`.
    pub fn for_hand_written_shards(params: ShardParams, chunks_per_shard: u32, written_by: &str) -> Manifest {
        let fingerprint = SourceFingerprint {
            files: Vec::new(),
            tokenizer: "test".into(),
            chunks_per_shard,
            val_fraction: 0.0,
            val_tokens: 0,
            workers: 1,
            worker_index: 0,
        };
        Manifest::new(params, fingerprint, written_by.into())
    }

    /// Records that everything was published (`reason`: `"end of source"` or `"max tokens"`).
    pub fn finish(&mut self, reason: &str) {
        self.finished = true;
        self.finish_reason = reason.into();
    }

    pub fn split(&self, split: Split) -> &SplitManifest {
        match split {
            Split::Train => &self.train,
            Split::Val => &self.val,
        }
    }

    pub fn split_mut(&mut self, split: Split) -> &mut SplitManifest {
        match split {
            Split::Train => &mut self.train,
            Split::Val => &mut self.val,
        }
    }

    /// Reads `dir/manifest.json`; `None` when there is none yet. Versions
    /// [`OLDEST_READABLE_VERSION`]..=[`MANIFEST_VERSION`] are read (check `version` before
    /// writing into an older directory); any other is an error naming the file.
    pub fn read(dir: &Path) -> Result<Option<Manifest>> {
        let path = dir.join(MANIFEST_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(ShardError::io(path, e)),
        };
        let m: Manifest = serde_json::from_slice(&bytes)
            .map_err(|e| ShardError::Json { path: path.clone(), what: format!("unreadable manifest: {e}") })?;
        if !(OLDEST_READABLE_VERSION..=MANIFEST_VERSION).contains(&m.version) {
            return Err(ShardError::Json {
                path,
                what: format!(
                    "manifest version {} (this build reads versions {OLDEST_READABLE_VERSION} to {MANIFEST_VERSION}; a newer pipeline wrote it?)",
                    m.version
                ),
            });
        }
        Ok(Some(m))
    }

    /// Replaces `dir/manifest.json` atomically.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let path = dir.join(MANIFEST_FILE);
        let mut bytes = serde_json::to_vec_pretty(self)
            .map_err(|e| ShardError::Json { path: path.clone(), what: e.to_string() })?;
        bytes.push(b'\n');
        atomic_write(&path, &bytes)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn manifest_round_trips_with_flat_params() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Manifest::read(dir.path()).unwrap().is_none());
        let fingerprint = SourceFingerprint {
            files: vec!["a.parquet".into()],
            tokenizer: "gpt2".into(),
            chunks_per_shard: 4,
            val_fraction: 0.0005,
            val_tokens: 8192,
            workers: 1,
            worker_index: 0,
        };
        let mut m = Manifest::new(ShardParams::new(1024, 50257, 50256), fingerprint, "test".into());
        m.max_tokens = Some(10);
        m.val_bootstrap_through = Some(DocPos { file: 0, row: 2 });
        m.val_set = Some(ValSet { chunks: 8, shards: 2 });
        m.train = SplitManifest {
            next_seq: 1,
            chunks: 4,
            tokens: 4096,
            resume: StreamPos { doc: DocPos { file: 0, row: 9 }, offset: 3 },
        };
        m.ring_slots = Some(3);
        m.write(dir.path()).unwrap();
        let text = std::fs::read_to_string(dir.path().join(MANIFEST_FILE)).unwrap();
        assert!(text.contains("\"vocab_size\": 50257") && text.contains("\"finished\": false"), "{text}");
        // The sequence length is written as before (three times) for older readers.
        assert!(text.contains("\"seq_len\": 1024,\n  \"token_bytes\": 2,\n  \"chunk_tokens\": 1025,"), "{text}");
        assert!(text.contains("\"tokenizer\": \"gpt2\",\n    \"seq_len\": 1024,"), "{text}");
        assert_eq!(Manifest::read(dir.path()).unwrap().unwrap(), m);
        assert!(DocPos { file: 0, row: 9 } < DocPos { file: 1, row: 0 });
        // A manifest written before `ring_slots` existed still reads, with the ring size unknown.
        let old = text.replace("  \"ring_slots\": 3,\n", "");
        assert!(!old.contains("ring_slots"), "{old}");
        std::fs::write(dir.path().join(MANIFEST_FILE), old).unwrap();
        assert_eq!(Manifest::read(dir.path()).unwrap().unwrap().ring_slots, None);
    }

    /// A version 1 manifest (no fixed val set, no `val_tokens`) still reads; its val set is every
    /// val chunk. Unknown versions are refused naming the file.
    #[test]
    fn version_1_reads_and_unknown_versions_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let v1 = r#"{"version": 1, "finished": true, "finish_reason": "end of source", "max_tokens": null,
            "seq_len": 16, "token_bytes": 2, "chunk_tokens": 17, "vocab_size": 64, "eot_id": 63,
            "tokenizer": "gpt2", "chunks_per_shard": 4,
            "fingerprint": {"files": ["a"], "tokenizer": "gpt2", "seq_len": 16, "chunks_per_shard": 4,
                            "val_fraction": 0.0005, "workers": 1, "worker_index": 0},
            "val_bootstrap_through": {"file": 0, "row": 0},
            "train": {"next_seq": 3, "chunks": 10, "tokens": 160, "resume": {"doc": {"file": 0, "row": 9}, "offset": 0}},
            "val": {"next_seq": 2, "chunks": 5, "tokens": 80, "resume": {"doc": {"file": 0, "row": 9}, "offset": 0}},
            "skipped_files": [], "written_by": "old"}"#;
        std::fs::write(dir.path().join(MANIFEST_FILE), v1).unwrap();
        let m = Manifest::read(dir.path()).unwrap().unwrap();
        assert_eq!((m.version, m.val_set, m.fingerprint.val_tokens), (1, None, 0));
        assert_eq!((m.val.chunks, m.val.next_seq), (5, 2));
        assert_eq!((m.params.seq_len(), m.params.chunk_tokens()), (16, 17));
        // The three copies of the sequence length must agree.
        for (from, to) in [
            (r#""chunk_tokens": 17"#, r#""chunk_tokens": 18"#),
            (r#""seq_len": 16, "chunks"#, r#""seq_len": 15, "chunks"#),
        ] {
            std::fs::write(dir.path().join(MANIFEST_FILE), v1.replace(from, to)).unwrap();
            let e = Manifest::read(dir.path()).unwrap_err().to_string();
            assert!(e.contains("manifest.json") && e.contains("disagree"), "{e}");
        }
        std::fs::write(dir.path().join(MANIFEST_FILE), v1.replace(r#""version": 1"#, r#""version": 3"#)).unwrap();
        let e = Manifest::read(dir.path()).unwrap_err().to_string();
        assert!(e.contains("manifest.json") && e.contains("manifest version 3"), "{e}");
    }
}
