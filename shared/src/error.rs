//! Errors of the shard library. Every variant names the file (and chunk) it is about.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a shard file: bad magic {found:?} (expected \"MAMBASHD\")")]
    BadMagic { path: PathBuf, found: [u8; 8] },
    #[error("{path}: unsupported shard version {found} (this build reads version {expected})")]
    BadVersion { path: PathBuf, found: u32, expected: u32 },
    #[error("{path}: invalid header: {what}")]
    BadHeader { path: PathBuf, what: String },
    #[error("{path}: truncated file: {what}")]
    Truncated { path: PathBuf, what: String },
    #[error("{path}: unreadable index at byte {offset}: {what}")]
    BadIndex { path: PathBuf, offset: u64, what: String },
    #[error("{path}: chunk {chunk} (bytes {start}..{end}) is corrupt: {what}")]
    CorruptChunk { path: PathBuf, chunk: usize, start: u64, end: u64, what: String },
    #[error("{path}: chunk {chunk} is out of range (the shard has {n_chunks} chunks)")]
    ChunkOutOfRange { path: PathBuf, chunk: usize, n_chunks: usize },
    #[error("{path}: token {token} at chunk position {position} does not fit in {token_bytes} bytes")]
    TokenTooLarge { path: PathBuf, position: usize, token: u32, token_bytes: u32 },
    #[error("{path}: chunk has {got} tokens, the shard holds chunks of {expected}")]
    WrongChunkLength { path: PathBuf, got: usize, expected: usize },
    #[error("{path}: {what}")]
    Json { path: PathBuf, what: String },
}

impl ShardError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ShardError::Io { path: path.into(), source }
    }
}

pub type Result<T, E = ShardError> = std::result::Result<T, E>;
