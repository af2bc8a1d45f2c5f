//! Which documents are held out as the val split (see docs/shard-format.md, "Val split"):
//!
//! 1. The fixed val set ("bootstrap"): the first documents of the (worker's) source, in order,
//!    are val until their `[eot] + tokens` fill the set's K chunks (`K·seq_len + 1` tokens, K =
//!    `--val-tokens` / seq_len rounded up, see [`val_set_chunks`]). They come before every train
//!    document, so the set is complete before the first train shard can be.
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

/// K, the chunks of the fixed val set: `val_tokens / seq_len` rounded up, at least 1.
pub fn val_set_chunks(val_tokens: u64, seq_len: usize) -> u64 {
    val_tokens.div_ceil(seq_len.max(1) as u64).max(1)
}

pub struct ValSplit {
    threshold: u64,
    /// Stream tokens the bootstrap documents must reach: K·seq_len + 1 (K whole chunks).
    bootstrap_target: u64,
    /// Last bootstrap document, once known.
    bootstrap_through: Option<DocPos>,
    /// Stream tokens of the bootstrap documents so far (only while the bootstrap is running).
    bootstrap_tokens: u64,
}

impl ValSplit {
    /// A val set of `set_chunks` chunks of `seq_len` (+1) tokens. `bootstrap_through` comes from
    /// the manifest; when it is `None` reading starts at the beginning of the source, so the
    /// bootstrap is recomputed from zero.
    pub fn new(val_fraction: f64, set_chunks: u64, seq_len: usize, bootstrap_through: Option<DocPos>) -> ValSplit {
        // f64 → u64 saturates; fraction 0 → threshold 0 → no document is hash-selected.
        let threshold = (val_fraction * 2f64.powi(64)) as u64;
        let bootstrap_target = set_chunks.saturating_mul(seq_len as u64).saturating_add(1);
        ValSplit { threshold, bootstrap_target, bootstrap_through, bootstrap_tokens: 0 }
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
        self.bootstrap_tokens = self.bootstrap_tokens.saturating_add(n_tokens);
        if self.bootstrap_tokens >= self.bootstrap_target {
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
        let mut v = ValSplit::new(0.0, 3, 3, None); // 3 chunks of 3: 10 tokens
        let p = |row| DocPos { file: 0, row };
        assert_eq!(v.decide(p(0), 0, 4), Split::Val);
        assert_eq!(v.decide(p(1), 0, 5), Split::Val);
        assert_eq!(v.bootstrap_through(), None);
        assert_eq!(v.decide(p(2), 0, 3), Split::Val); // 12 >= 10: last bootstrap document
        assert_eq!(v.bootstrap_through(), Some(p(2)));
        assert_eq!(v.decide(p(3), 0, 100), Split::Train); // fraction 0: never hash-selected
        let mut w = ValSplit::new(0.5, 3, 3, Some(p(2)));
        assert_eq!(w.known(p(1), u64::MAX), Some(Split::Val));
        assert_eq!(w.decide(p(5), u64::MAX / 4, 1), Split::Val);
        assert_eq!(w.decide(p(6), u64::MAX / 4 * 3, 1), Split::Train);
    }

    #[test]
    fn val_set_size_rounds_up_to_whole_chunks() {
        assert_eq!(val_set_chunks(262_144, 1024), 256);
        assert_eq!(val_set_chunks(262_145, 1024), 257);
        assert_eq!(val_set_chunks(1, 1024), 1);
        assert_eq!(val_set_chunks(u64::MAX, 1), u64::MAX);
        // A huge budget saturates instead of overflowing: the bootstrap then spans the source.
        let mut v = ValSplit::new(0.0, u64::MAX, 1024, None);
        assert_eq!(v.decide(DocPos::default(), 0, 1 << 60), Split::Val);
        assert_eq!(v.decide(DocPos { file: 0, row: 1 }, 0, 1 << 60), Split::Val);
        assert_eq!(v.bootstrap_through(), None);
    }
}
