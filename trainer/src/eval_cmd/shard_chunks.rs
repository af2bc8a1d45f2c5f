//! Eval chunks from shard files: one split of a shard directory (`val-*.shard` or
//! `train-*.shard`, in seq order, the first chunks first, as the training loop's validation set
//! takes them), or a single shard file. Every shard's header and index are checked up front;
//! chunks are decompressed as they are read, and a corrupt one is an error naming the file and
//! chunk.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use mamba_shards::format::Split;
use mamba_shards::ring::list_shards;
use mamba_shards::ShardReader;

pub struct ShardChunks {
    shards: Vec<ShardReader>,
    /// The split of a shard directory; `None` for shard files given one by one.
    split: Option<Split>,
    chunk_tokens: usize,
    total: u64,
    /// The next chunk to read: (index into `shards`, chunk inside it).
    at: (usize, usize),
}

impl ShardChunks {
    /// The shards of `split` in `dir`; an error when there are none.
    pub fn open_split(dir: &Path, split: Split, model_vocab: usize, seq_len: Option<usize>) -> Result<ShardChunks> {
        let paths: Vec<PathBuf> = list_shards(dir, split)?.into_iter().map(|(_, p)| p).collect();
        if paths.is_empty() {
            let other = match split {
                Split::Val => Split::Train,
                Split::Train => Split::Val,
            };
            let hint = if list_shards(dir, other)?.is_empty() {
                String::new()
            } else {
                format!("; it has {other} shards (--split {other})")
            };
            bail!("{}: no {split} shards ({split}-NNNNNNNN.shard) to evaluate on{hint}", dir.display());
        }
        Ok(ShardChunks { split: Some(split), ..Self::open_files(&paths, model_vocab, seq_len)? })
    }

    /// The given shard files, in order. All must hold chunks of one length (that of `--seq-len`
    /// when given) and a vocabulary that fits the model's.
    pub fn open_files(paths: &[PathBuf], model_vocab: usize, seq_len: Option<usize>) -> Result<ShardChunks> {
        let mut shards = Vec::with_capacity(paths.len());
        let mut chunk_tokens = seq_len.map(|s| s + 1);
        for path in paths {
            let reader = ShardReader::open(path)?;
            let h = *reader.header();
            match chunk_tokens {
                Some(n) if n != h.chunk_tokens as usize => {
                    let why = if seq_len.is_some() {
                        "--seq-len".to_string()
                    } else {
                        format!("{} (the first shard)", paths[0].display())
                    };
                    bail!("{}: chunks hold {} tokens, but {why} needs {n}", path.display(), h.chunk_tokens);
                }
                Some(_) => {}
                None => chunk_tokens = Some(h.chunk_tokens as usize),
            }
            if h.vocab_size as usize > model_vocab {
                bail!(
                    "{}: the shard's vocabulary has {} tokens, more than the model's {model_vocab}",
                    path.display(),
                    h.vocab_size
                );
            }
            shards.push(reader);
        }
        let chunk_tokens = chunk_tokens.context("no shard files given")?;
        let total = shards.iter().map(|s| s.n_chunks() as u64).sum();
        Ok(ShardChunks { shards, split: None, chunk_tokens, total, at: (0, 0) })
    }
}

impl ShardChunks {
    /// Tokens per chunk (seq_len + 1); inputs are `chunk[..n-1]`, targets `chunk[1..]`.
    pub fn chunk_tokens(&self) -> usize {
        self.chunk_tokens
    }

    /// Chunks in all.
    pub fn total_chunks(&self) -> u64 {
        self.total
    }

    /// The next chunk, in shard order, or `None` after the last.
    pub fn next_chunk(&mut self) -> Result<Option<Vec<u32>>> {
        loop {
            let (s, k) = self.at;
            let Some(shard) = self.shards.get(s) else { return Ok(None) };
            if k >= shard.n_chunks() {
                self.at = (s + 1, 0);
                continue;
            }
            self.at = (s, k + 1);
            return Ok(Some(shard.read_chunk(k)?));
        }
    }

    /// The split, for the shards of a shard directory.
    pub fn split(&self) -> Option<Split> {
        self.split
    }

    /// A line for the log about the input, before reading.
    pub fn describe(&self) -> String {
        format!("{} shard file(s), {} chunks of {} tokens", self.shards.len(), self.total, self.chunk_tokens)
    }
}
