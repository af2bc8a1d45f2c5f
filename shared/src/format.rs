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

/// The longest sequence a shard may hold: chunks are at most `MAX_SEQ_LEN + 1` tokens
/// (a decoded chunk is then at most 4 MiB + 4 bytes).
pub const MAX_SEQ_LEN: u32 = 1 << 20;
/// `MAX_SEQ_LEN + 1`.
pub const MAX_CHUNK_TOKENS: u32 = MAX_SEQ_LEN + 1;
/// The largest vocabulary a shard may declare.
pub const MAX_VOCAB_SIZE: u32 = 1 << 24;
/// The most tokens (`n_chunks × chunk_tokens`) one shard may hold: 2^32, i.e. at most 16 GiB
/// decoded; bounds the work of verifying a shard whatever its header says.
pub const MAX_SHARD_TOKENS: u64 = 1 << 32;

/// Bytes `RESERVED_START..HEADER_BYTES` of the header are zero.
pub const RESERVED_START: usize = 56;

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
pub const fn token_bytes_for_vocab(vocab_size: u32) -> u32 {
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
        crate::shard_params::seq_len_for(self.chunk_tokens as usize)
    }

    pub fn chunk_bytes(&self) -> usize {
        self.chunk_tokens as usize * self.token_bytes as usize
    }

    /// The bounds every header field must keep ([`MAX_CHUNK_TOKENS`], [`MAX_VOCAB_SIZE`],
    /// [`MAX_SHARD_TOKENS`]), in checked arithmetic. What depends on the file size (where the
    /// index lies) is checked by `ShardReader::open`. Errors name the field and its byte offset.
    pub fn check(&self, path: &Path) -> Result<()> {
        let bad = |field: &str, at: usize, what: String| {
            Err(ShardError::BadHeader { path: path.into(), what: format!("field {field} (byte {at}) {what}") })
        };
        if self.token_bytes != 2 && self.token_bytes != 4 {
            return bad("token_bytes", 12, format!("is {} (must be 2 or 4)", self.token_bytes));
        }
        if !(2..=MAX_CHUNK_TOKENS).contains(&self.chunk_tokens) {
            return bad(
                "chunk_tokens",
                16,
                format!("is {} (must be 2..={MAX_CHUNK_TOKENS}, i.e. seq_len 1..={MAX_SEQ_LEN})", self.chunk_tokens),
            );
        }
        if !(1..=MAX_VOCAB_SIZE).contains(&self.vocab_size) {
            return bad("vocab_size", 24, format!("is {} (must be 1..={MAX_VOCAB_SIZE})", self.vocab_size));
        }
        if self.token_bytes == 2 && self.vocab_size > 65536 {
            return bad("vocab_size", 24, format!("is {}: does not fit u16 tokens (token_bytes 2)", self.vocab_size));
        }
        if self.eot_id >= self.vocab_size {
            return bad("eot_id", 28, format!("is {}: outside the vocabulary of {}", self.eot_id, self.vocab_size));
        }
        let tokens = u64::from(self.n_chunks) * u64::from(self.chunk_tokens);
        if tokens > MAX_SHARD_TOKENS {
            return bad("n_chunks", 20, format!("is {}: {} chunks of {} tokens are {tokens} tokens, more than the {MAX_SHARD_TOKENS} a shard may hold", self.n_chunks, self.n_chunks, self.chunk_tokens));
        }
        // Every frame takes at least one byte, so the body holds at least n_chunks bytes.
        if self.index_offset < HEADER_BYTES + u64::from(self.n_chunks) {
            return bad(
                "index_offset",
                32,
                format!(
                    "is {}: the {} frames cannot lie between the header's end ({HEADER_BYTES}) and it",
                    self.index_offset, self.n_chunks
                ),
            );
        }
        let seq_len = self.seq_len() as u64;
        if !self.first_token.is_multiple_of(seq_len) {
            return bad(
                "first_token",
                48,
                format!(
                    "is {}: not a multiple of seq_len {seq_len} (it must be the first chunk's index × seq_len)",
                    self.first_token
                ),
            );
        }
        if self.first_token.checked_add(u64::from(self.n_chunks) * seq_len).is_none() {
            return bad(
                "first_token",
                48,
                format!("is {}: the shard's {} chunks would end past 2^64 tokens", self.first_token, self.n_chunks),
            );
        }
        Ok(())
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
        h.check(path)?;
        if let Some(at) = b[RESERVED_START..HEADER_BYTES as usize].iter().position(|&x| x != 0) {
            return Err(ShardError::BadHeader {
                path: path.into(),
                what: format!(
                    "reserved byte {} is {:#04x} (bytes {RESERVED_START}..{HEADER_BYTES} must be zero)",
                    RESERVED_START + at,
                    b[RESERVED_START + at]
                ),
            });
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
