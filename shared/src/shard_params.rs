//! [`ShardParams`]: what every shard of a corpus shares: the token width, the sequence length, the
//! vocabulary and the end-of-text id. The sequence length is one fact: a chunk holds
//! `seq_len + 1` tokens (each sequence's inputs plus the next token as the last target), and this
//! file is the one place that converts between the two ([`chunk_tokens_for`], [`seq_len_for`],
//! used by [`ShardParams::seq_len`], [`ShardParams::chunk_tokens`] and every other crate). Shard headers and the manifest's JSON store `chunk_tokens`
//! (see docs/shard-format.md); they convert through [`ShardParams::from_header`] and
//! `manifest/on_disk.rs`.

use crate::format::{token_bytes_for_vocab, Header};

/// Tokens per chunk for sequences of `seq_len` tokens: `seq_len + 1` (consecutive chunks overlap
/// by one token, the next sequence's first input being this one's last target).
pub const fn chunk_tokens_for(seq_len: usize) -> usize {
    seq_len + 1
}

/// The sequence length of chunks of `chunk_tokens` tokens (0 for an empty chunk, which the shard
/// checks refuse before anything trains on it).
pub const fn seq_len_for(chunk_tokens: usize) -> usize {
    chunk_tokens.saturating_sub(1)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardParams {
    pub token_bytes: u32,
    /// Tokens per training sequence: read it through [`ShardParams::seq_len`], and the chunk
    /// length through [`ShardParams::chunk_tokens`].
    pub(crate) seq_len: u32,
    pub vocab_size: u32,
    pub eot_id: u32,
}

impl ShardParams {
    /// Shards of sequences of `seq_len` tokens over a vocabulary of `vocab_size` ids (which sets
    /// the token width, [`token_bytes_for_vocab`]).
    pub const fn new(seq_len: u32, vocab_size: u32, eot_id: u32) -> ShardParams {
        ShardParams { token_bytes: token_bytes_for_vocab(vocab_size), seq_len, vocab_size, eot_id }
    }

    /// The parameters a shard was written with, from its header.
    pub fn from_header(h: &Header) -> ShardParams {
        ShardParams {
            token_bytes: h.token_bytes,
            seq_len: seq_len_for(h.chunk_tokens as usize) as u32,
            vocab_size: h.vocab_size,
            eot_id: h.eot_id,
        }
    }

    /// Tokens per training sequence.
    pub fn seq_len(&self) -> usize {
        self.seq_len as usize
    }

    /// Tokens per chunk: `seq_len + 1` (consecutive chunks overlap by one token).
    pub fn chunk_tokens(&self) -> usize {
        chunk_tokens_for(self.seq_len as usize)
    }

    /// [`ShardParams::chunk_tokens`] as a shard header stores it.
    pub(crate) fn header_chunk_tokens(&self) -> u32 {
        chunk_tokens_for(self.seq_len as usize) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_is_one_token_longer_than_a_sequence() {
        let p = ShardParams::new(1024, 50257, 50256);
        assert_eq!((p.seq_len(), p.chunk_tokens(), p.token_bytes), (1024, 1025, 2));
        assert_eq!(ShardParams::new(16, 70_000, 0).token_bytes, 4);
    }
}
