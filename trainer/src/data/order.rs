//! Seeded chunk orders. Each order is a Fisher–Yates shuffle (rand's `SliceRandom::shuffle`)
//! driven by a ChaCha8 stream that depends only on (`--seed`, what is shuffled, which epoch or
//! shard), so an order can be rebuilt from a saved position without replaying anything.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// What a permutation orders; part of the key so the two modes draw independent streams.
#[derive(Clone, Copy, Debug)]
pub(crate) enum OrderKind {
    /// All chunks of all train shards, one permutation per epoch (stream = epoch).
    StaticEpoch = 1,
    /// The chunks of one train shard in follow mode (stream = the shard's seq).
    FollowShard = 2,
}

/// A permutation of `0..n` for (`seed`, `kind`, `stream`).
pub(crate) fn permutation(n: u32, seed: u64, kind: OrderKind, stream: u64) -> Vec<u32> {
    let mut key = [0u8; 32];
    key[0..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&(kind as u64).to_le_bytes());
    let mut rng = ChaCha8Rng::from_seed(key);
    rng.set_stream(stream);
    let mut order: Vec<u32> = (0..n).collect();
    order.shuffle(&mut rng);
    order
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn permutations_are_seeded_and_complete() {
        let a = permutation(1000, 3, OrderKind::StaticEpoch, 0);
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..1000).collect::<Vec<_>>());
        assert_eq!(a, permutation(1000, 3, OrderKind::StaticEpoch, 0));
        assert_ne!(a, permutation(1000, 4, OrderKind::StaticEpoch, 0));
        assert_ne!(a, permutation(1000, 3, OrderKind::StaticEpoch, 1));
        assert_ne!(a, permutation(1000, 3, OrderKind::FollowShard, 0));
        assert!(permutation(0, 3, OrderKind::FollowShard, 9).is_empty());
    }
}
