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
        let n = header.n_chunks as usize;
        let index_bytes = (n as u64 + 1) * 8;
        let expected_len = header.index_offset + index_bytes;
        let len = map.len() as u64;
        if len < expected_len {
            return Err(ShardError::Truncated {
                path: path.into(),
                what: format!("{len} bytes, but the header promises an index of {n}+1 entries at byte {} ({expected_len} bytes in all)", header.index_offset),
            });
        }
        if len > expected_len {
            return Err(ShardError::BadIndex {
                path: path.into(),
                offset: header.index_offset,
                what: format!("{} trailing bytes after the index", len - expected_len),
            });
        }
        let start = header.index_offset as usize;
        let offsets: Vec<u64> = map[start..start + index_bytes as usize]
            .chunks_exact(8)
            .map(|b| {
                let mut x = [0u8; 8];
                x.copy_from_slice(b);
                u64::from_le_bytes(x)
            })
            .collect();
        let bad = |what: String| Err(ShardError::BadIndex { path: path.into(), offset: header.index_offset, what });
        if offsets[0] != HEADER_BYTES {
            return bad(format!("first frame offset is {} (must be {HEADER_BYTES})", offsets[0]));
        }
        if offsets[n] != header.index_offset {
            return bad(format!("last offset is {} (must equal index_offset {})", offsets[n], header.index_offset));
        }
        if let Some(k) = offsets.windows(2).position(|w| w[1] <= w[0]) {
            return bad(format!("frame offsets are not increasing at entry {k}: {} then {}", offsets[k], offsets[k + 1]));
        }
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
    /// each checked against the vocabulary.
    pub fn read_chunk_into(&self, k: usize, out: &mut Vec<u32>) -> Result<()> {
        let n = self.n_chunks();
        if k >= n {
            return Err(ShardError::ChunkOutOfRange { path: self.path.clone(), chunk: k, n_chunks: n });
        }
        let (start, end) = (self.offsets[k], self.offsets[k + 1]);
        let corrupt = |what: String| ShardError::CorruptChunk { path: self.path.clone(), chunk: k, start, end, what };
        let frame = &self.map[start as usize..end as usize];
        let expected = self.header.chunk_bytes();
        match zstd::zstd_safe::get_frame_content_size(frame) {
            Ok(Some(size)) if size == expected as u64 => {}
            Ok(Some(size)) => return Err(corrupt(format!("frame holds {size} bytes, expected {expected}"))),
            Ok(None) => return Err(corrupt("frame has no content size".into())),
            Err(_) => return Err(corrupt("not a zstd frame".into())),
        }
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
            return Err(corrupt(format!("token {} at position {p} is outside the vocabulary of {}", out[p], self.header.vocab_size)));
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
