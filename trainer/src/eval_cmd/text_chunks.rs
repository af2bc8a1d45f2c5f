//! Eval chunks from parquet text, made the way the pipeline makes its shards: every document's
//! `text` tokenized with the built-in GPT-2 tokenizer (special-token strings inside the text stay
//! ordinary text), documents joined as `[<|endoftext|>] + tokens`, and the stream cut into chunks
//! of `seq_len + 1` tokens overlapping by one ([`ChunkCutter`]). The ragged tail is dropped.
//!
//! The tokenizer is tiktoken-rs's `r50k_base` `encode_ordinary`. The pipeline's own GPT-2
//! tokenizer (a faster hand-written split over the same ranks, in the `pipeline` binary crate,
//! which has no library target) is tested to give exactly these ids on the whole corpus
//! (`pipeline/src/gpt2_bpe.rs`, `same_ids_as_tiktoken_on_the_corpus`), so the trainer needs no
//! dependency on the pipeline. Unlike the pipeline, no document is held out: every row is used.

use std::path::PathBuf;

use anyhow::{anyhow, bail, Result};
use rayon::prelude::*;
use tiktoken_rs::CoreBPE;

use super::chunk_cutter::ChunkCutter;
use super::data_source::ChunkSource;
use super::parquet_docs::ParquetDocs;
use crate::generate::{GPT2_EOT, GPT2_VOCAB};

pub struct TextChunks {
    docs: ParquetDocs,
    bpe: CoreBPE,
    cutter: ChunkCutter,
    seq_len: usize,
    /// Every file was read to its end.
    finished: bool,
}

impl TextChunks {
    /// Chunks of `seq_len + 1` GPT-2 tokens from `files`, for a model of `model_vocab` rows.
    pub fn open(files: Vec<PathBuf>, seq_len: usize, model_vocab: usize) -> Result<TextChunks> {
        if model_vocab < GPT2_VOCAB {
            bail!("the model's vocabulary of {model_vocab} is smaller than GPT-2's {GPT2_VOCAB}: it cannot be evaluated on GPT-2-tokenized text");
        }
        if seq_len == 0 {
            bail!("--seq-len must be at least 1");
        }
        let bpe = tiktoken_rs::r50k_base().map_err(|e| anyhow!("building the GPT-2 tokenizer: {e}"))?;
        Ok(TextChunks { docs: ParquetDocs::new(files), bpe, cutter: ChunkCutter::new(seq_len, GPT2_EOT), seq_len, finished: false })
    }
}

impl ChunkSource for TextChunks {
    fn chunk_tokens(&self) -> usize {
        self.seq_len + 1
    }

    fn total_chunks(&self) -> Option<u64> {
        None
    }

    fn next_chunk(&mut self) -> Result<Option<Vec<u32>>> {
        loop {
            if let Some(chunk) = self.cutter.next_chunk() {
                return Ok(Some(chunk));
            }
            if self.finished {
                return Ok(None);
            }
            match self.docs.next_batch()? {
                Some(texts) => {
                    let ids: Vec<Vec<u32>> = texts.par_iter().map(|t| self.bpe.encode_ordinary(t)).collect();
                    for doc in &ids {
                        self.cutter.push_doc(doc);
                    }
                }
                None => self.finished = true,
            }
        }
    }

    fn dropped_tokens(&self) -> Option<u64> {
        self.finished.then(|| self.cutter.uncovered_tokens())
    }

    fn describe(&self) -> String {
        format!("{} parquet file(s) of text, GPT-2 tokenized into chunks of {} tokens", self.docs.n_files(), self.seq_len + 1)
    }

    fn summary(&self) -> Option<String> {
        let read = format!("{} documents, {} GPT-2 tokens with separators", self.docs.docs(), self.cutter.stream_tokens());
        Some(match self.dropped_tokens() {
            Some(dropped) => format!("{read}; dropped the last {dropped} tokens (less than one chunk of {})", self.seq_len + 1),
            None => format!("{read} read before stopping at --max-chunks"),
        })
    }
}
