//! The JSON form of [`Manifest`]: the fields as every manifest version wrote them, in the same
//! order, so a manifest written by this build is byte for byte what older builds wrote and still
//! read. The sequence length is stored three times there (`seq_len`, `chunk_tokens` =
//! seq_len + 1, `fingerprint.seq_len`); in memory it is [`ShardParams`]' alone. A file whose
//! copies disagree is refused.

use super::{DocPos, Manifest, SkippedFile, SourceFingerprint, SplitManifest, ValSet};
use crate::shard_params::ShardParams;

#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct ManifestJson {
    version: u32,
    finished: bool,
    finish_reason: String,
    max_tokens: Option<u64>,
    seq_len: u32,
    #[serde(flatten)]
    params: ShardParamsJson,
    tokenizer: String,
    chunks_per_shard: u32,
    fingerprint: FingerprintJson,
    val_bootstrap_through: Option<DocPos>,
    #[serde(default)]
    val_set: Option<ValSet>,
    train: SplitManifest,
    val: SplitManifest,
    skipped_files: Vec<SkippedFile>,
    #[serde(default)]
    ring_slots: Option<u32>,
    written_by: String,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct ShardParamsJson {
    token_bytes: u32,
    /// seq_len + 1
    chunk_tokens: u32,
    vocab_size: u32,
    eot_id: u32,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct FingerprintJson {
    files: Vec<String>,
    tokenizer: String,
    seq_len: u32,
    chunks_per_shard: u32,
    val_fraction: f64,
    /// 0 in version 1 manifests, which had no fixed val set.
    #[serde(default)]
    val_tokens: u64,
    workers: u32,
    worker_index: u32,
}

impl TryFrom<ManifestJson> for Manifest {
    type Error = String;

    fn try_from(j: ManifestJson) -> Result<Manifest, String> {
        let (chunk_tokens, fingerprint_seq_len) = (j.params.chunk_tokens, j.fingerprint.seq_len);
        if chunk_tokens.checked_sub(1) != Some(j.seq_len) || fingerprint_seq_len != j.seq_len {
            return Err(format!(
                "its copies of the sequence length disagree: seq_len {}, chunk_tokens {chunk_tokens} (must be seq_len + 1), fingerprint.seq_len {fingerprint_seq_len}",
                j.seq_len
            ));
        }
        let p = j.params;
        let f = j.fingerprint;
        Ok(Manifest {
            version: j.version,
            finished: j.finished,
            finish_reason: j.finish_reason,
            max_tokens: j.max_tokens,
            params: ShardParams {
                token_bytes: p.token_bytes,
                seq_len: j.seq_len,
                vocab_size: p.vocab_size,
                eot_id: p.eot_id,
            },
            tokenizer: j.tokenizer,
            chunks_per_shard: j.chunks_per_shard,
            fingerprint: SourceFingerprint {
                files: f.files,
                tokenizer: f.tokenizer,
                chunks_per_shard: f.chunks_per_shard,
                val_fraction: f.val_fraction,
                val_tokens: f.val_tokens,
                workers: f.workers,
                worker_index: f.worker_index,
            },
            val_bootstrap_through: j.val_bootstrap_through,
            val_set: j.val_set,
            train: j.train,
            val: j.val,
            skipped_files: j.skipped_files,
            ring_slots: j.ring_slots,
            written_by: j.written_by,
        })
    }
}

impl From<Manifest> for ManifestJson {
    fn from(m: Manifest) -> ManifestJson {
        let (p, f) = (m.params, m.fingerprint);
        ManifestJson {
            version: m.version,
            finished: m.finished,
            finish_reason: m.finish_reason,
            max_tokens: m.max_tokens,
            seq_len: p.seq_len,
            params: ShardParamsJson {
                token_bytes: p.token_bytes,
                chunk_tokens: p.header_chunk_tokens(),
                vocab_size: p.vocab_size,
                eot_id: p.eot_id,
            },
            tokenizer: m.tokenizer,
            chunks_per_shard: m.chunks_per_shard,
            fingerprint: FingerprintJson {
                files: f.files,
                tokenizer: f.tokenizer,
                seq_len: p.seq_len,
                chunks_per_shard: f.chunks_per_shard,
                val_fraction: f.val_fraction,
                val_tokens: f.val_tokens,
                workers: f.workers,
                worker_index: f.worker_index,
            },
            val_bootstrap_through: m.val_bootstrap_through,
            val_set: m.val_set,
            train: m.train,
            val: m.val,
            skipped_files: m.skipped_files,
            ring_slots: m.ring_slots,
            written_by: m.written_by,
        }
    }
}
