//! Writes one shard: frames go to a hidden temporary file, and `finish` publishes it atomically
//! (index + header written, fsynced, renamed into place, directory fsynced). A writer dropped
//! without `finish` removes its temporary file, so a partial shard never becomes visible.

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::error::{Result, ShardError};
use crate::format::{shard_file_name, Header, Split, HEADER_BYTES};
use crate::fsutil::fsync_dir;
use crate::shard_params::ShardParams;

/// Compresses one chunk into a zstd frame with its content size and checksum set.
/// Pure and thread-safe, so callers may compress chunks in parallel and `push_frame` them in order.
pub fn compress_chunk(params: &ShardParams, tokens: &[u32], level: i32, path: &Path) -> Result<Vec<u8>> {
    ChunkCompressor::new(level, path)?.compress(params, tokens, path)
}

/// [`compress_chunk`] for many chunks: keeps one zstd context (creating one costs about as much
/// as compressing a chunk) and one buffer. The frames are byte-identical to `compress_chunk`'s.
pub struct ChunkCompressor {
    zstd: zstd::bulk::Compressor<'static>,
    raw: Vec<u8>,
}

impl ChunkCompressor {
    /// `path` only names the shard in errors.
    pub fn new(level: i32, path: &Path) -> Result<ChunkCompressor> {
        let mut zstd = zstd::bulk::Compressor::new(level).map_err(|e| ShardError::io(path, e))?;
        zstd.include_checksum(true).map_err(|e| ShardError::io(path, e))?;
        zstd.include_contentsize(true).map_err(|e| ShardError::io(path, e))?;
        Ok(ChunkCompressor { zstd, raw: Vec::new() })
    }

    /// One chunk of exactly `chunk_tokens` tokens as a zstd frame (`path` names the shard in errors).
    pub fn compress(&mut self, params: &ShardParams, tokens: &[u32], path: &Path) -> Result<Vec<u8>> {
        if tokens.len() != params.chunk_tokens() {
            return Err(ShardError::WrongChunkLength {
                path: path.into(),
                got: tokens.len(),
                expected: params.chunk_tokens(),
            });
        }
        let raw = &mut self.raw;
        raw.clear();
        for (position, &t) in tokens.iter().enumerate() {
            if t >= params.vocab_size || (params.token_bytes == 2 && t > u16::MAX as u32) {
                return Err(ShardError::TokenTooLarge {
                    path: path.into(),
                    position,
                    token: t,
                    token_bytes: params.token_bytes,
                });
            }
            match params.token_bytes {
                2 => raw.extend_from_slice(&(t as u16).to_le_bytes()),
                _ => raw.extend_from_slice(&t.to_le_bytes()),
            }
        }
        self.zstd.compress(raw).map_err(|e| ShardError::io(path, e))
    }
}

pub struct ShardWriter {
    params: ShardParams,
    seq: u64,
    first_token: u64,
    final_path: PathBuf,
    tmp_path: PathBuf,
    file: Option<BufWriter<File>>,
    offsets: Vec<u64>,
    level: i32,
}

impl ShardWriter {
    /// Starts `{split}-{seq:08}.shard` in `dir`, written as `.{name}.tmp` until `finish`.
    pub fn create(
        dir: &Path,
        split: Split,
        seq: u64,
        first_token: u64,
        params: ShardParams,
        level: i32,
    ) -> Result<Self> {
        let name = shard_file_name(split, seq);
        let final_path = dir.join(&name);
        let tmp_path = dir.join(format!(".{name}.tmp"));
        let file = File::create(&tmp_path).map_err(|e| ShardError::io(&tmp_path, e))?;
        let mut file = BufWriter::with_capacity(1 << 20, file);
        // Placeholder header; the real one is written by `finish`.
        file.write_all(&[0u8; HEADER_BYTES as usize]).map_err(|e| ShardError::io(&tmp_path, e))?;
        Ok(ShardWriter {
            params,
            seq,
            first_token,
            final_path,
            tmp_path,
            file: Some(file),
            offsets: vec![HEADER_BYTES],
            level,
        })
    }

    pub fn n_chunks(&self) -> usize {
        self.offsets.len() - 1
    }

    pub fn path(&self) -> &Path {
        &self.final_path
    }

    /// Compresses and appends one chunk of exactly `chunk_tokens` tokens.
    pub fn push_chunk(&mut self, tokens: &[u32]) -> Result<()> {
        let frame = compress_chunk(&self.params, tokens, self.level, &self.final_path)?;
        self.push_frame(&frame)
    }

    /// Appends a frame made by [`compress_chunk`] with this shard's params.
    pub fn push_frame(&mut self, frame: &[u8]) -> Result<()> {
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| ShardError::io(&self.tmp_path, std::io::Error::other("writer already finished")))?;
        file.write_all(frame).map_err(|e| ShardError::io(&self.tmp_path, e))?;
        let last = self.offsets[self.offsets.len() - 1];
        self.offsets.push(last + frame.len() as u64);
        Ok(())
    }

    /// Writes index and header, fsyncs, renames into place and fsyncs the directory. On failure
    /// (e.g. a full disk while flushing) the temporary file is removed.
    pub fn finish(mut self) -> Result<PathBuf> {
        let result = self.finish_inner();
        if result.is_err() {
            let _ = std::fs::remove_file(&self.tmp_path);
        }
        result
    }

    fn finish_inner(&mut self) -> Result<PathBuf> {
        let tmp = self.tmp_path.clone();
        let io = |e| ShardError::io(&tmp, e);
        let mut file = self.file.take().ok_or_else(|| io(std::io::Error::other("writer already finished")))?;
        let index_offset = self.offsets[self.offsets.len() - 1];
        for o in &self.offsets {
            file.write_all(&o.to_le_bytes()).map_err(io)?;
        }
        let header = Header {
            token_bytes: self.params.token_bytes,
            chunk_tokens: self.params.header_chunk_tokens(),
            n_chunks: u32::try_from(self.n_chunks()).map_err(|_| io(std::io::Error::other("more than 2^32 chunks")))?,
            vocab_size: self.params.vocab_size,
            eot_id: self.params.eot_id,
            index_offset,
            seq: self.seq,
            first_token: self.first_token,
        };
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        file.write_all(&header.encode()).map_err(io)?;
        let file = file.into_inner().map_err(|e| io(e.into_error()))?;
        file.sync_all().map_err(io)?;
        drop(file);
        std::fs::rename(&self.tmp_path, &self.final_path).map_err(io)?;
        if let Some(dir) = self.final_path.parent() {
            fsync_dir(dir)?;
        }
        Ok(self.final_path.clone())
    }
}

impl Drop for ShardWriter {
    fn drop(&mut self) {
        if self.file.is_some() {
            self.file = None;
            let _ = std::fs::remove_file(&self.tmp_path);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A reused compressor makes the same frames as a fresh one per chunk, and checks the same.
    #[test]
    fn chunk_compressor_frames_equal_compress_chunk() {
        let params = ShardParams::new(64, 50257, 50256);
        let path = Path::new("test.shard");
        let mut reused = ChunkCompressor::new(3, path).unwrap();
        for k in 0..20u32 {
            let tokens: Vec<u32> =
                (0..65).map(|i| (i * 7919 + k * 104729) % if k % 2 == 0 { 50257 } else { 100 }).collect();
            let frame = reused.compress(&params, &tokens, path).unwrap();
            assert_eq!(frame, compress_chunk(&params, &tokens, 3, path).unwrap(), "chunk {k}");
        }
        assert!(reused.compress(&params, &[1, 2, 3], path).is_err());
        assert!(reused.compress(&params, &[50257; 65], path).is_err());
    }
}
