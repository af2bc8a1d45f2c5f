//! Shard format v1: the 4096-byte header and the naming rules. See `docs/shard-format.md`.
//!
//! ```text
//! 0      magic  b"MAMBASHD"
//! 8      u32    version = 1
//! 12     u32    token_bytes (2 = u16 when vocab <= 65536, else 4)
//! 16     u32    chunk_tokens = seq_len + 1
//! 20     u32    n_chunks
//! 24     u32    vocab_size
//! 28     u32    eot_id
//! 32     u64    index_offset
//! 40     u64    seq
//! 48     u64    first_token
//! 56..   zero
//! 4096   n_chunks zstd frames, then the index: n_chunks + 1 u64 frame offsets
//! ```
//! All integers are little-endian.

use std::path::Path;

use crate::error::{Result, ShardError};

pub const MAGIC: [u8; 8] = *b"MAMBASHD";
pub const VERSION: u32 = 1;
pub const HEADER_BYTES: u64 = 4096;

/// The two token streams a corpus has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Val,
}

impl Split {
    pub const ALL: [Split; 2] = [Split::Train, Split::Val];

    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
        }
    }
}

impl std::fmt::Display for Split {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `{split}-{seq:08}.shard`
pub fn shard_file_name(split: Split, seq: u64) -> String {
    format!("{}-{seq:08}.shard", split.as_str())
}

/// Parses a published shard's file name; anything else (temporary files included) gives `None`.
pub fn parse_shard_file_name(name: &str) -> Option<(Split, u64)> {
    let stem = name.strip_suffix(".shard")?;
    let (split, seq) = stem.split_once('-')?;
    let split = match split {
        "train" => Split::Train,
        "val" => Split::Val,
        _ => return None,
    };
    if seq.len() < 8 || !seq.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((split, seq.parse().ok()?))
}

/// The bytes per token a vocabulary needs.
pub fn token_bytes_for_vocab(vocab_size: u32) -> u32 {
    if vocab_size <= 65536 {
        2
    } else {
        4
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub token_bytes: u32,
    pub chunk_tokens: u32,
    pub n_chunks: u32,
    pub vocab_size: u32,
    pub eot_id: u32,
    pub index_offset: u64,
    pub seq: u64,
    pub first_token: u64,
}

impl Header {
    pub fn seq_len(&self) -> usize {
        self.chunk_tokens as usize - 1
    }

    pub fn chunk_bytes(&self) -> usize {
        self.chunk_tokens as usize * self.token_bytes as usize
    }

    pub fn encode(&self) -> [u8; HEADER_BYTES as usize] {
        let mut b = [0u8; HEADER_BYTES as usize];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..12].copy_from_slice(&VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&self.token_bytes.to_le_bytes());
        b[16..20].copy_from_slice(&self.chunk_tokens.to_le_bytes());
        b[20..24].copy_from_slice(&self.n_chunks.to_le_bytes());
        b[24..28].copy_from_slice(&self.vocab_size.to_le_bytes());
        b[28..32].copy_from_slice(&self.eot_id.to_le_bytes());
        b[32..40].copy_from_slice(&self.index_offset.to_le_bytes());
        b[40..48].copy_from_slice(&self.seq.to_le_bytes());
        b[48..56].copy_from_slice(&self.first_token.to_le_bytes());
        b
    }

    /// Decodes and validates a header read from `path`.
    pub fn decode(path: &Path, b: &[u8]) -> Result<Header> {
        if b.len() < HEADER_BYTES as usize {
            return Err(ShardError::Truncated {
                path: path.into(),
                what: format!("{} bytes, shorter than the {HEADER_BYTES}-byte header", b.len()),
            });
        }
        let u32_at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let u64_at = |o: usize| {
            let mut x = [0u8; 8];
            x.copy_from_slice(&b[o..o + 8]);
            u64::from_le_bytes(x)
        };
        let mut magic = [0u8; 8];
        magic.copy_from_slice(&b[0..8]);
        if magic != MAGIC {
            return Err(ShardError::BadMagic { path: path.into(), found: magic });
        }
        let version = u32_at(8);
        if version != VERSION {
            return Err(ShardError::BadVersion { path: path.into(), found: version, expected: VERSION });
        }
        let h = Header {
            token_bytes: u32_at(12),
            chunk_tokens: u32_at(16),
            n_chunks: u32_at(20),
            vocab_size: u32_at(24),
            eot_id: u32_at(28),
            index_offset: u64_at(32),
            seq: u64_at(40),
            first_token: u64_at(48),
        };
        let bad = |what: String| Err(ShardError::BadHeader { path: path.into(), what });
        if h.token_bytes != 2 && h.token_bytes != 4 {
            return bad(format!("token_bytes is {} (must be 2 or 4)", h.token_bytes));
        }
        if h.token_bytes == 2 && h.vocab_size > 65536 {
            return bad(format!("vocab_size {} does not fit u16 tokens", h.vocab_size));
        }
        if h.chunk_tokens < 2 {
            return bad(format!("chunk_tokens is {} (must be at least 2)", h.chunk_tokens));
        }
        if h.eot_id >= h.vocab_size {
            return bad(format!("eot_id {} is outside the vocabulary of {}", h.eot_id, h.vocab_size));
        }
        if h.index_offset < HEADER_BYTES {
            return bad(format!("index_offset {} points into the header", h.index_offset));
        }
        Ok(h)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_reject_temporaries() {
        assert_eq!(shard_file_name(Split::Train, 7), "train-00000007.shard");
        assert_eq!(parse_shard_file_name("val-00000012.shard"), Some((Split::Val, 12)));
        assert_eq!(parse_shard_file_name("train-123456789.shard"), Some((Split::Train, 123456789)));
        assert_eq!(parse_shard_file_name(".train-00000001.shard.tmp"), None);
        assert_eq!(parse_shard_file_name("train-0001.shard"), None);
        assert_eq!(parse_shard_file_name("test-00000001.shard"), None);
    }

    #[test]
    fn header_round_trip() {
        let h = Header {
            token_bytes: 2,
            chunk_tokens: 1025,
            n_chunks: 3,
            vocab_size: 50257,
            eot_id: 50256,
            index_offset: 9999,
            seq: 4,
            first_token: 12288,
        };
        let b = h.encode();
        assert_eq!(&b[0..8], b"MAMBASHD");
        assert_eq!(Header::decode(Path::new("x"), &b).unwrap(), h);
        let mut bad = b;
        bad[8] = 2;
        assert!(matches!(Header::decode(Path::new("x"), &bad), Err(ShardError::BadVersion { .. })));
    }
}
