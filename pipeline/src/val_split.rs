//! Which documents are held out as the val split (see docs/shard-format.md, "Val split"):
//!
//! 1. Bootstrap: the first documents of the (worker's) source, in order, are val until their
//!    `[eot] + tokens` fill at least one chunk (`seq_len + 1` tokens). This guarantees a val
//!    shard even when the hash below selects nothing (tiny corpora).
//! 2. Every later document is val when `fnv1a64(id) < val_fraction · 2^64`, where `fnv1a64` is
//!    FNV-1a 64-bit over the UTF-8 bytes of the `id` column (of the text if there is no `id`).

use mamba_shards::{DocPos, Split};

/// FNV-1a, 64-bit: offset basis 0xcbf29ce484222325, prime 0x100000001b3.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

pub struct ValSplit {
    threshold: u64,
    chunk_tokens: u64,
    /// Last bootstrap document, once known.
    bootstrap_through: Option<DocPos>,
    /// Stream tokens of the bootstrap documents so far (only while the bootstrap is running).
    bootstrap_tokens: u64,
}

impl ValSplit {
    /// `bootstrap_through` comes from the manifest; when it is `None` reading starts at the
    /// beginning of the source, so the bootstrap is recomputed from zero.
    pub fn new(val_fraction: f64, chunk_tokens: u32, bootstrap_through: Option<DocPos>) -> ValSplit {
        // f64 → u64 saturates; fraction 0 → threshold 0 → no document is hash-selected.
        let threshold = (val_fraction * 2f64.powi(64)) as u64;
        ValSplit { threshold, chunk_tokens: chunk_tokens as u64, bootstrap_through, bootstrap_tokens: 0 }
    }

    pub fn bootstrap_through(&self) -> Option<DocPos> {
        self.bootstrap_through
    }

    /// The split of a document, if it can be decided without its token count.
    pub fn known(&self, pos: DocPos, id_hash: u64) -> Option<Split> {
        match self.bootstrap_through {
            Some(b) if pos <= b => Some(Split::Val),
            Some(_) => Some(if id_hash < self.threshold { Split::Val } else { Split::Train }),
            None => None,
        }
    }

    /// The split of a document with `n_tokens` stream tokens (`[eot] + tokens`), in source order.
    pub fn decide(&mut self, pos: DocPos, id_hash: u64, n_tokens: u64) -> Split {
        if let Some(split) = self.known(pos, id_hash) {
            return split;
        }
        self.bootstrap_tokens += n_tokens;
        if self.bootstrap_tokens >= self.chunk_tokens {
            self.bootstrap_through = Some(pos);
        }
        Split::Val
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a64_reference_values() {
        // Published FNV-1a 64 test vectors.
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x85944171f73967e8);
    }

    #[test]
    fn bootstrap_then_hash() {
        let mut v = ValSplit::new(0.0, 10, None);
        let p = |row| DocPos { file: 0, row };
        assert_eq!(v.decide(p(0), 0, 4), Split::Val);
        assert_eq!(v.decide(p(1), 0, 5), Split::Val);
        assert_eq!(v.bootstrap_through(), None);
        assert_eq!(v.decide(p(2), 0, 3), Split::Val); // 12 >= 10: last bootstrap document
        assert_eq!(v.bootstrap_through(), Some(p(2)));
        assert_eq!(v.decide(p(3), 0, 100), Split::Train); // fraction 0: never hash-selected
        let mut w = ValSplit::new(0.5, 10, Some(p(2)));
        assert_eq!(w.known(p(1), u64::MAX), Some(Split::Val));
        assert_eq!(w.decide(p(5), u64::MAX / 4, 1), Split::Val);
        assert_eq!(w.decide(p(6), u64::MAX / 4 * 3, 1), Split::Train);
    }
}
