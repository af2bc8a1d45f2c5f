//! Reads a published shard through a memory map; chunks are decompressed on demand.
//! Every check names the file and, for chunk errors, the chunk and its byte range.

use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::error::{Result, ShardError};
use crate::format::{Header, HEADER_BYTES};

pub struct ShardReader {
    path: PathBuf,
    map: Mmap,
    header: Header,
    offsets: Vec<u64>,
}

impl ShardReader {
    /// Maps the file and validates header and index (not the frames: see [`ShardReader::verify`]).
    pub fn open(path: &Path) -> Result<ShardReader> {
        let file = std::fs::File::open(path).map_err(|e| ShardError::io(path, e))?;
        // SAFETY: published shards are immutable (written under a temporary name and renamed into
        // place); a deleted file stays mapped until we drop the map.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| ShardError::io(path, e))?;
        let header = Header::decode(path, &map)?;
        let offsets = read_index(path, &map, &header)?;
        Ok(ShardReader { path: path.into(), map, header, offsets })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    pub fn n_chunks(&self) -> usize {
        self.header.n_chunks as usize
    }

    /// Compressed bytes of the file's body.
    pub fn compressed_bytes(&self) -> u64 {
        self.header.index_offset - HEADER_BYTES
    }

    /// Decompresses chunk `k` into `out` (cleared first): exactly `chunk_tokens` token ids,
    /// each checked against the vocabulary. The frame must be one whole zstd frame with its
    /// checksum flag set that declares exactly `chunk_tokens × token_bytes` bytes of content;
    /// decompression writes into a buffer of that size (at most 4 MiB + 4 bytes), never more.
    pub fn read_chunk_into(&self, k: usize, out: &mut Vec<u32>) -> Result<()> {
        let n = self.n_chunks();
        if k >= n {
            return Err(ShardError::ChunkOutOfRange { path: self.path.clone(), chunk: k, n_chunks: n });
        }
        let (start, end) = (self.offsets[k], self.offsets[k + 1]);
        let corrupt = |what: String| ShardError::CorruptChunk { path: self.path.clone(), chunk: k, start, end, what };
        // `open` checked HEADER_BYTES <= start < end <= index_offset < file length.
        let frame = &self.map[start as usize..end as usize];
        let expected = self.header.chunk_bytes();
        check_frame(frame, expected).map_err(corrupt)?;
        let raw = zstd::bulk::decompress(frame, expected).map_err(|e| corrupt(format!("zstd: {e}")))?;
        if raw.len() != expected {
            return Err(corrupt(format!("decompressed to {} bytes, expected {expected}", raw.len())));
        }
        out.clear();
        out.reserve(self.header.chunk_tokens as usize);
        match self.header.token_bytes {
            2 => out.extend(raw.chunks_exact(2).map(|b| u16::from_le_bytes([b[0], b[1]]) as u32)),
            _ => out.extend(raw.chunks_exact(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))),
        }
        if let Some(p) = out.iter().position(|&t| t >= self.header.vocab_size) {
            return Err(corrupt(format!(
                "token {} at position {p} is outside the vocabulary of {}",
                out[p], self.header.vocab_size
            )));
        }
        Ok(())
    }

    pub fn read_chunk(&self, k: usize) -> Result<Vec<u32>> {
        let mut v = Vec::new();
        self.read_chunk_into(k, &mut v)?;
        Ok(v)
    }

    /// Decompresses every chunk (checksums included); the first failure is returned.
    pub fn verify(&self) -> Result<()> {
        let mut buf = Vec::new();
        for k in 0..self.n_chunks() {
            self.read_chunk_into(k, &mut buf)?;
        }
        Ok(())
    }
}

/// Reads and checks the index against the header and the file size, in checked arithmetic and
/// before anything is allocated: it lies inside the file and ends it, its `n_chunks + 1` offsets
/// rise strictly from [`HEADER_BYTES`] to `index_offset`, and no frame is longer than a zstd
/// frame of one chunk can be.
fn read_index(path: &Path, map: &[u8], header: &Header) -> Result<Vec<u64>> {
    let n = header.n_chunks as usize;
    let index_offset = header.index_offset;
    let index_bytes = (u64::from(header.n_chunks) + 1) * 8;
    let len = map.len() as u64;
    let Some(expected_len) = index_offset.checked_add(index_bytes) else {
        return Err(ShardError::BadHeader {
            path: path.into(),
            what: format!(
                "field index_offset (byte 32) is {index_offset}: an index of {n}+1 entries there would end past 2^64"
            ),
        });
    };
    if len < expected_len {
        return Err(ShardError::Truncated {
            path: path.into(),
            what: format!("{len} bytes, but the header promises an index of {n}+1 entries at byte {index_offset} ({expected_len} bytes in all)"),
        });
    }
    if len > expected_len {
        return Err(ShardError::BadIndex {
            path: path.into(),
            offset: index_offset,
            what: format!("{} trailing bytes after the index", len - expected_len),
        });
    }
    // In bounds: index_offset + index_bytes == len, which fits in usize because the map does.
    let start = index_offset as usize;
    let offsets: Vec<u64> = map[start..start + index_bytes as usize]
        .chunks_exact(8)
        .map(|b| {
            let mut x = [0u8; 8];
            x.copy_from_slice(b);
            u64::from_le_bytes(x)
        })
        .collect();
    let bad = |entry: usize, what: String| {
        Err(ShardError::BadIndex {
            path: path.into(),
            offset: index_offset + 8 * entry as u64,
            what: format!("entry {entry}: {what}"),
        })
    };
    if offsets[0] != HEADER_BYTES {
        return bad(0, format!("first frame offset is {} (must be {HEADER_BYTES})", offsets[0]));
    }
    if offsets[n] != index_offset {
        return bad(n, format!("last offset is {} (must equal index_offset {index_offset})", offsets[n]));
    }
    let max_frame = zstd::zstd_safe::compress_bound(header.chunk_bytes()) as u64;
    for (k, w) in offsets.windows(2).enumerate() {
        if w[1] <= w[0] {
            return bad(k + 1, format!("frame offsets are not increasing: {} then {}", w[0], w[1]));
        }
        if w[1] - w[0] > max_frame {
            return bad(
                k + 1,
                format!(
                    "chunk {k} is {} bytes long, more than a zstd frame of {} bytes can be ({max_frame})",
                    w[1] - w[0],
                    header.chunk_bytes()
                ),
            );
        }
    }
    Ok(offsets)
}

/// A chunk's frame, before it is decompressed: zstd magic, the checksum flag set, a declared
/// content size of exactly `expected` bytes, and nothing after the frame.
fn check_frame(frame: &[u8], expected: usize) -> Result<(), String> {
    const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
    if frame.len() < 5 || frame[..4] != ZSTD_MAGIC {
        return Err("not a zstd frame (bad magic)".into());
    }
    // Frame_Header_Descriptor bit 2: Content_Checksum_flag (RFC 8878, 3.1.1.1.1).
    if frame[4] & 0x04 == 0 {
        return Err("the zstd frame has no checksum".into());
    }
    match zstd::zstd_safe::get_frame_content_size(frame) {
        Ok(Some(size)) if size == expected as u64 => {}
        Ok(Some(size)) => return Err(format!("frame holds {size} bytes, expected {expected}")),
        Ok(None) => return Err("frame has no content size".into()),
        Err(_) => return Err("not a zstd frame".into()),
    }
    match zstd::zstd_safe::find_frame_compressed_size(frame) {
        Ok(size) if size == frame.len() => Ok(()),
        Ok(size) => Err(format!("the zstd frame is {size} bytes, but the index gives it {}", frame.len())),
        Err(_) => Err("the zstd frame is cut short or malformed".into()),
    }
}
