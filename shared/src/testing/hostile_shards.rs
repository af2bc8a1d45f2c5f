//! Hostile versions of a valid shard file (issue 19, item 8): header fields and index entries set
//! to values a reader must refuse before it allocates or seeks by them, a corrupt frame, and a
//! truncated file. `pipeline inspect` and `trainer eval` are tested on the same list.

use crate::format::HEADER_BYTES;

/// One corrupted shard file.
pub struct HostileShard {
    /// What was done to the file (for assertion messages).
    pub what: &'static str,
    /// The whole corrupted file.
    pub bytes: Vec<u8>,
    /// A word the reader's error must contain (the field, or the chunk).
    pub word: &'static str,
}

/// The hostile variants of `good`, a valid shard file of at least two chunks and more than 3000
/// bytes.
pub fn hostile_shards(good: &[u8]) -> Vec<HostileShard> {
    let u64_at =
        |at: usize| good.get(at..at + 8).and_then(|b| b.try_into().ok()).map_or(0, u64::from_le_bytes) as usize;
    let index_offset = u64_at(32);
    let frame1 = u64_at(index_offset + 8);
    assert!(
        index_offset as u64 >= HEADER_BYTES && frame1 > 0 && good.len() > 3000,
        "hostile_shards needs a shard of at least two chunks and 3000 bytes"
    );
    let set = |at: usize, v: &[u8]| {
        let mut b = good.to_vec();
        b[at..at + v.len()].copy_from_slice(v);
        b
    };
    let case = |what, bytes, word| HostileShard { what, bytes, word };
    vec![
        case("index_offset near 2^64", set(32, &(u64::MAX - 7).to_le_bytes()), "index_offset"),
        case("chunk_tokens 50,000,001", set(16, &50_000_001u32.to_le_bytes()), "chunk_tokens"),
        case("n_chunks 2^32 - 1", set(20, &u32::MAX.to_le_bytes()), "n_chunks"),
        case("vocab_size 2^32 - 1", set(24, &u32::MAX.to_le_bytes()), "vocab_size"),
        case("index entry past the file", set(index_offset + 8, &u64::MAX.to_le_bytes()), "entry 1"),
        case("corrupt frame", set(frame1 + 6, &[0xff, 0xff, 0xff]), "chunk 1"),
        case("3000-byte file", good[..3000].to_vec(), "truncated"),
    ]
}
