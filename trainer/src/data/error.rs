//! Errors of the data loader. Every variant names the file (and, through [`ShardError`], the chunk
//! and its byte range) it is about, so a user can find the bad input without a debugger.

use std::path::PathBuf;

use mamba_shards::ShardError;

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// Bad magic/version, truncated file, bad index, corrupt frame, token out of range, I/O.
    #[error(transparent)]
    Shard(#[from] ShardError),
    #[error("{path}: chunks hold {found} tokens, but --seq-len {seq_len} needs {expected} (seq_len + 1)")]
    WrongChunkTokens { path: PathBuf, found: usize, expected: usize, seq_len: usize },
    #[error("{path}: the shard's vocabulary has {shard_vocab} tokens, more than the model's {model_vocab}")]
    VocabTooLarge { path: PathBuf, shard_vocab: usize, model_vocab: usize },
    #[error("{dir}: no train shards (train-NNNNNNNN.shard) to train on; run `pipeline` first or pass --follow")]
    NoTrainShards { dir: PathBuf },
    #[error("{dir}: {total} chunks in all do not fit the 32-bit chunk index of the static order")]
    TooManyChunks { dir: PathBuf, total: u64 },
    #[error("{path}: {what}")]
    Manifest { path: PathBuf, what: String },
    #[error("{dir}: train shard {seq} is needed to resume (the checkpoint's data position is inside it or before it), but it is gone: {what}")]
    MissingShard { dir: PathBuf, seq: u64, what: String },
    #[error("cannot resume: the checkpoint's data position does not match this run: {what}")]
    ResumeMismatch { what: String },
    #[error("invalid data settings: {what}")]
    BadSpec { what: String },
    #[error("{dir}: none of the {total} train chunks can be read (--on-bad-chunk skip left out a whole epoch); the last: {last}")]
    NoGoodChunk { dir: PathBuf, total: u64, last: String },
    #[error("the data loader thread stopped unexpectedly: {what}")]
    LoaderStopped { what: String },
}
