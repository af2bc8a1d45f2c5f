//! Seeded mutation test of the shard reader: thousands of corrupted versions of small valid
//! shards (bit flips, truncations, appended and inserted bytes, header fields and index entries
//! set to hostile values such as 2^64 - 1 or huge counts, frames overwritten, zeroed or swapped).
//! Each must give an error naming the file, or read back exactly the original chunks: never a
//! panic, never fabricated tokens, and never an abort (an allocation sized by a hostile field
//! would kill this test process, which fails the run). Plus the specific cases of issue 19.
#![allow(clippy::unwrap_used)]

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use mamba_shards::format::{Header, Split, HEADER_BYTES, MAX_CHUNK_TOKENS};
use mamba_shards::testing::SplitMix64;
use mamba_shards::{compress_chunk, ShardError, ShardParams, ShardReader, ShardWriter};

/// Per shard layout (two layouts: u16 and u32 tokens).
const MUTATIONS: u64 = 3000;

/// A valid shard: `n` chunks of a stream (one token of overlap between neighbours), with
/// frames of different sizes (some chunks repetitive, some not).
struct Original {
    bytes: Vec<u8>,
    header: Header,
    chunks: Vec<Vec<u32>>,
    offsets: Vec<u64>,
}

fn original(dir: &Path, params: ShardParams, n: usize) -> Original {
    let seq_len = params.seq_len();
    let mut stream = vec![params.eot_id];
    let mut x = 7u64;
    while stream.len() < n * seq_len + 1 {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let repetitive = (stream.len() / seq_len).is_multiple_of(2);
        stream.push(if repetitive { 5 } else { ((x >> 33) % u64::from(params.vocab_size)) as u32 });
    }
    let chunks: Vec<Vec<u32>> = (0..n).map(|k| stream[k * seq_len..k * seq_len + seq_len + 1].to_vec()).collect();
    let mut w = ShardWriter::create(dir, Split::Train, 0, 0, params, 3).unwrap();
    for c in &chunks {
        w.push_chunk(c).unwrap();
    }
    let path = w.finish().unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let reader = ShardReader::open(&path).unwrap();
    let header = *reader.header();
    let at = header.index_offset as usize;
    let offsets = (0..=n).map(|i| u64::from_le_bytes(bytes[at + 8 * i..at + 8 * i + 8].try_into().unwrap())).collect();
    Original { bytes, header, chunks, offsets }
}

/// What a mutated file may do: `MustFail` mutations break something every reader must see.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    MustFail,
    FailOrOriginal,
}

/// Values that break arithmetic: 0, 1, around 2^31, 2^32, 2^63, 2^64, the file size.
fn hostile_u64(rng: &mut SplitMix64, file_len: u64) -> u64 {
    let picks = [
        0,
        1,
        7,
        8,
        4095,
        4096,
        4097,
        file_len - 1,
        file_len,
        file_len + 1,
        1 << 31,
        u32::MAX as u64,
        1 << 32,
        1 << 63,
        u64::MAX - 8,
        u64::MAX - 7,
        u64::MAX - 1,
        u64::MAX,
        50_000_001,
        rng.next_u64(),
    ];
    picks[rng.index(picks.len())]
}

fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

/// One mutation of `o.bytes`: what it did (for the failure message), the bytes, what to expect.
fn mutate(rng: &mut SplitMix64, o: &Original) -> (String, Vec<u8>, Expect) {
    let mut b = o.bytes.clone();
    let len = b.len() as u64;
    let n = o.chunks.len();
    let frame = |k: usize| (o.offsets[k] as usize, o.offsets[k + 1] as usize);
    match rng.index(11) {
        0 => {
            let flips = 1 + rng.index(3);
            let mut at = Vec::new();
            for _ in 0..flips {
                let i = rng.index(b.len());
                b[i] ^= 1 << rng.index(8);
                at.push(i);
            }
            // A flip in `seq` (bytes 40..48) or `first_token` (48..56) may leave a valid header,
            // and one in a frame's window descriptor a frame that still decodes the same.
            (format!("bit flips at {at:?}"), b, Expect::FailOrOriginal)
        }
        1 => {
            let keep = rng.index(b.len());
            b.truncate(keep);
            (format!("truncated to {keep} bytes"), b, Expect::MustFail)
        }
        2 => {
            let extra = 1 + rng.index(64);
            b.extend((0..extra).map(|_| rng.next_u64() as u8));
            (format!("{extra} bytes appended"), b, Expect::MustFail)
        }
        3 => {
            let at = rng.index(b.len());
            let extra = 1 + rng.index(16);
            let insert: Vec<u8> = (0..extra).map(|_| rng.next_u64() as u8).collect();
            b.splice(at..at, insert);
            (format!("{extra} bytes inserted at {at}"), b, Expect::MustFail)
        }
        4 => {
            // A u32 field: token_bytes, chunk_tokens, n_chunks, vocab_size, eot_id.
            let (name, at) =
                [("token_bytes", 12), ("chunk_tokens", 16), ("n_chunks", 20), ("vocab_size", 24), ("eot_id", 28)]
                    [rng.index(5)];
            let v = match rng.index(3) {
                0 => hostile_u64(rng, len) as u32,
                1 => [0, 1, 2, 3, 4, MAX_CHUNK_TOKENS, MAX_CHUNK_TOKENS + 1, 50_000_001, u32::MAX][rng.index(9)],
                _ => rng.next_u64() as u32,
            };
            put_u32(&mut b, at, v);
            // token_bytes 4, a larger vocab_size or a smaller eot_id can still describe the data.
            let expect =
                if ["vocab_size", "eot_id"].contains(&name) { Expect::FailOrOriginal } else { Expect::MustFail };
            let unchanged = v.to_le_bytes() == o.bytes[at..at + 4];
            (format!("{name} = {v}"), b, if unchanged { Expect::FailOrOriginal } else { expect })
        }
        5 => {
            let v = hostile_u64(rng, len);
            put_u64(&mut b, 32, v);
            let expect = if v == o.header.index_offset { Expect::FailOrOriginal } else { Expect::MustFail };
            (format!("index_offset = {v}"), b, expect)
        }
        6 => {
            let (name, at) = [("seq", 40), ("first_token", 48)][rng.index(2)];
            let v = hostile_u64(rng, len);
            put_u64(&mut b, at, v);
            (format!("{name} = {v}"), b, Expect::FailOrOriginal)
        }
        7 => {
            let entry = rng.index(n + 1);
            let v = hostile_u64(rng, len);
            put_u64(&mut b, o.header.index_offset as usize + 8 * entry, v);
            let expect = if v == o.offsets[entry] { Expect::FailOrOriginal } else { Expect::MustFail };
            (format!("index entry {entry} = {v}"), b, expect)
        }
        8 => {
            let (start, end) = frame(rng.index(n));
            let from = start + rng.index(end - start);
            let to = (from + 1 + rng.index(16)).min(end);
            for x in &mut b[from..to] {
                *x = if rng.index(2) == 0 { 0 } else { rng.next_u64() as u8 };
            }
            (format!("bytes {from}..{to} overwritten"), b, Expect::FailOrOriginal)
        }
        9 => {
            // Swap two frames of different sizes, index unchanged: every boundary between them moves.
            let (k, j) = loop {
                let (k, j) = (rng.index(n), rng.index(n));
                let (a, c) = (frame(k), frame(j));
                if a.1 - a.0 != c.1 - c.0 {
                    break (k.min(j), k.max(j));
                }
            };
            let (a, c) = (frame(k), frame(j));
            let mut body = Vec::new();
            body.extend_from_slice(&o.bytes[..a.0]);
            body.extend_from_slice(&o.bytes[c.0..c.1]);
            body.extend_from_slice(&o.bytes[a.1..c.0]);
            body.extend_from_slice(&o.bytes[a.0..a.1]);
            body.extend_from_slice(&o.bytes[c.1..]);
            (format!("frames {k} and {j} swapped, index kept"), body, Expect::MustFail)
        }
        _ => {
            // Swap two frames and their index entries consistently: a valid shard with the
            // same chunks in another order (nothing fabricated).
            let (k, j) = (rng.index(n), rng.index(n));
            let (k, j) = (k.min(j), k.max(j));
            let mut frames: Vec<Vec<u8>> = (0..n).map(|i| o.bytes[frame(i).0..frame(i).1].to_vec()).collect();
            frames.swap(k, j);
            let mut body = o.bytes[..HEADER_BYTES as usize].to_vec();
            let mut offsets = vec![HEADER_BYTES];
            for f in &frames {
                body.extend_from_slice(f);
                offsets.push(body.len() as u64);
            }
            for off in offsets {
                body.extend_from_slice(&off.to_le_bytes());
            }
            (format!("frames {k} and {j} swapped with their index entries"), body, Expect::FailOrOriginal)
        }
    }
}

/// Opens and reads every chunk of `path` (what `verify` does): the chunks, or the first error.
fn read_all(path: &Path) -> Result<(Header, Vec<Vec<u32>>), ShardError> {
    let r = ShardReader::open(path)?;
    let chunks = (0..r.n_chunks()).map(|k| r.read_chunk(k)).collect::<Result<Vec<_>, _>>()?;
    Ok((*r.header(), chunks))
}

/// A scratch directory in memory where there is one (thousands of rewrites of a file on a busy
/// disk wait on writeback), else in the temp dir.
fn scratch_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    shm.is_dir().then(|| tempfile::tempdir_in(shm).ok()).flatten().unwrap_or_else(|| tempfile::tempdir().unwrap())
}

fn run_mutations(params: ShardParams, n: usize, seed: u64) -> (u64, u64) {
    let dir = scratch_dir();
    let o = original(dir.path(), params, n);
    let path: PathBuf = dir.path().join("train-00000000.shard");
    let mut rng = SplitMix64(seed);
    let (mut failed, mut accepted) = (0, 0);
    for case in 0..MUTATIONS {
        let (what, bytes, expect) = mutate(&mut rng, &o);
        std::fs::write(&path, &bytes).unwrap();
        let result = catch_unwind(AssertUnwindSafe(|| read_all(&path)));
        let result = result.unwrap_or_else(|_| panic!("seed {seed} case {case} ({what}): the reader panicked"));
        match result {
            Err(e) => {
                let msg = e.to_string();
                assert!(
                    msg.contains("train-00000000.shard"),
                    "seed {seed} case {case} ({what}): the error does not name the file: {msg}"
                );
                failed += 1;
            }
            Ok((h, chunks)) => {
                assert_ne!(expect, Expect::MustFail, "seed {seed} case {case} ({what}): accepted");
                assert_eq!(
                    (h.token_bytes, h.chunk_tokens, h.n_chunks),
                    (o.header.token_bytes, o.header.chunk_tokens, o.header.n_chunks),
                    "seed {seed} case {case} ({what})"
                );
                for (k, c) in chunks.iter().enumerate() {
                    assert!(
                        o.chunks.contains(c),
                        "seed {seed} case {case} ({what}): chunk {k} decoded to tokens the shard never held: {c:?}"
                    );
                }
                accepted += 1;
            }
        }
    }
    (failed, accepted)
}

#[test]
fn mutated_shards_fail_cleanly_or_read_the_original_chunks() {
    let u16_tokens = ShardParams::new(32, 1000, 999);
    let (failed, accepted) = run_mutations(u16_tokens, 6, 19);
    eprintln!("u16 tokens: {failed} mutations failed, {accepted} were accepted and read the original chunks");
    // Most mutations break the file; the accepted ones are benign (seq, first_token, padding).
    assert!(failed > MUTATIONS * 3 / 4, "{failed} of {MUTATIONS} mutations failed, {accepted} accepted");
    let u32_tokens = ShardParams::new(16, 70_000, 0);
    let (failed, accepted) = run_mutations(u32_tokens, 5, 20);
    assert!(failed > MUTATIONS * 3 / 4, "{failed} of {MUTATIONS} mutations failed, {accepted} accepted");
}

// ---- the specific cases of issue 19 ---------------------------------------------------------

const PARAMS: ShardParams = ShardParams::new(8, 50257, 50256);

fn shard_bytes(dir: &Path) -> (PathBuf, Vec<u8>) {
    let o = original(dir, PARAMS, 3);
    (dir.join("train-00000000.shard"), o.bytes)
}

fn open_err(path: &Path, bytes: &[u8]) -> String {
    std::fs::write(path, bytes).unwrap();
    let e = ShardReader::open(path).err().expect("open must fail").to_string();
    assert!(e.contains(&path.display().to_string()), "{e}");
    e
}

#[test]
fn index_offset_near_2_pow_64_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let (path, good) = shard_bytes(dir.path());
    for v in [u64::MAX, u64::MAX - 7, u64::MAX - 8 * 4 + 1, 1 << 63] {
        let mut b = good.clone();
        put_u64(&mut b, 32, v);
        let e = open_err(&path, &b);
        assert!(e.contains("index_offset") || e.contains("truncated"), "{v}: {e}");
    }
    // An index_offset whose end wraps around to exactly the file size (no overflow check
    // would catch it; the index would be sliced at 2^64 - 3.9 KB).
    let n_chunks = 1000u32;
    let mut b = good;
    put_u32(&mut b, 20, n_chunks);
    let wrapping = (b.len() as u64).wrapping_sub(8 * (u64::from(n_chunks) + 1));
    put_u64(&mut b, 32, wrapping);
    let e = open_err(&path, &b);
    assert!(e.contains("index_offset (byte 32)") && e.contains("past 2^64"), "{e}");
}

#[test]
fn huge_chunk_tokens_is_refused_before_any_allocation() {
    let dir = tempfile::tempdir().unwrap();
    let (path, good) = shard_bytes(dir.path());
    for v in [50_000_001, MAX_CHUNK_TOKENS + 1, u32::MAX] {
        let mut b = good.clone();
        put_u32(&mut b, 16, v);
        let e = open_err(&path, &b);
        assert!(e.contains("chunk_tokens (byte 16)") && e.contains(&v.to_string()), "{e}");
    }
    // The 3 KB file: shorter than a header.
    let mut b = good[..3000].to_vec();
    put_u32(&mut b, 16, 50_000_001);
    assert!(open_err(&path, &b).contains("truncated"));
}

#[test]
fn huge_chunk_and_vocab_counts_are_refused_with_the_field_named() {
    let dir = tempfile::tempdir().unwrap();
    let (path, good) = shard_bytes(dir.path());
    let cases: [(usize, u32, &str); 4] = [
        (20, u32::MAX, "n_chunks (byte 20)"),
        (24, u32::MAX, "vocab_size (byte 24)"),
        (12, 8, "token_bytes (byte 12)"),
        (28, 60_000, "eot_id (byte 28)"),
    ];
    for (at, v, field) in cases {
        let mut b = good.clone();
        put_u32(&mut b, at, v);
        let e = open_err(&path, &b);
        assert!(e.contains(field), "{field} = {v}: {e}");
    }
    let mut b = good.clone();
    b[1000] = 1;
    assert!(open_err(&path, &b).contains("reserved byte 1000"));
    let mut b = good;
    put_u64(&mut b, 48, 5);
    assert!(open_err(&path, &b).contains("first_token (byte 48)"));
}

/// Builds a shard from raw frames (bypassing the compressor's settings).
fn shard_of_frames(dir: &Path, frames: &[Vec<u8>]) -> PathBuf {
    let mut w = ShardWriter::create(dir, Split::Train, 0, 0, PARAMS, 3).unwrap();
    for f in frames {
        w.push_frame(f).unwrap();
    }
    w.finish().unwrap()
}

fn chunk_err(path: &Path) -> String {
    let r = ShardReader::open(path).unwrap();
    let e = r.read_chunk(0).unwrap_err().to_string();
    assert!(e.contains(&path.display().to_string()) && e.contains("chunk 0"), "{e}");
    e
}

#[test]
fn frames_must_be_single_checksummed_frames_of_one_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let tokens: Vec<u32> = (0..PARAMS.chunk_tokens() as u32).collect();
    let raw: Vec<u8> = tokens.iter().flat_map(|&t| (t as u16).to_le_bytes()).collect();
    // No checksum flag: a flipped bit in the data would go unnoticed.
    let mut c = zstd::bulk::Compressor::new(3).unwrap();
    c.include_checksum(false).unwrap();
    c.include_contentsize(true).unwrap();
    let path = shard_of_frames(dir.path(), &[c.compress(&raw).unwrap()]);
    assert!(chunk_err(&path).contains("no checksum"));
    // A good frame followed by an empty one: the whole frame region must be one frame.
    let good = compress_chunk(&PARAMS, &tokens, 3, &path).unwrap();
    let mut empty = zstd::bulk::Compressor::new(3).unwrap();
    empty.include_checksum(true).unwrap();
    let two = [good.clone(), empty.compress(&[]).unwrap()].concat();
    let path = shard_of_frames(dir.path(), &[two]);
    assert!(chunk_err(&path).contains("zstd frame is"), "{}", chunk_err(&path));
    // A frame that declares more content than a chunk holds.
    let big = vec![0u32; PARAMS.chunk_tokens() * 4];
    let big_params = ShardParams::new(PARAMS.chunk_tokens() as u32 * 4 - 1, PARAMS.vocab_size, PARAMS.eot_id);
    let path = shard_of_frames(dir.path(), &[compress_chunk(&big_params, &big, 3, &path).unwrap()]);
    assert!(chunk_err(&path).contains("frame holds 72 bytes, expected 18"));
    // The good frame alone reads back.
    let path = shard_of_frames(dir.path(), &[good]);
    assert_eq!(ShardReader::open(&path).unwrap().read_chunk(0).unwrap(), tokens);
}
