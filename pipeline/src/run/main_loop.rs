//! The pipeline's main loop: read batches of documents → tokenize them in parallel → append each
//! to its split's stream → publish every full shard; at the end of the source, the remaining
//! whole chunks of both splits and the finished manifest. [`MainLoop`] holds what it touches.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;

use anyhow::{Context, Result};
use mamba_shards::manifest::ValSet;
use mamba_shards::{Manifest, Split};
use rayon::prelude::*;

use crate::backpressure::Ring;
use crate::config::RunArgs;
use crate::doc_reader::{Doc, SourceEvent};
use crate::progress::Progress;
use crate::shard_publisher::{OwnedShard, ShardPublisher};
use crate::source::SourceFile;
use crate::split_stream::SplitStream;
use crate::tokenizer::Tokenizer;
use crate::val_split::ValSplit;
use crate::Interrupted;

pub(super) struct MainLoop<'a> {
    pub args: &'a RunArgs,
    pub pool: &'a rayon::ThreadPool,
    pub tokenizer: &'a Tokenizer,
    pub files: &'a [SourceFile],
    pub stop: &'a AtomicBool,
    pub ring: &'a Ring,
    /// The train and val streams, indexed by `Split as usize`.
    pub streams: [SplitStream; 2],
    pub val: ValSplit,
    /// K, the chunks of the fixed val set.
    pub set_chunks: u64,
    pub manifest: Manifest,
    /// Compresses, writes, fsyncs and records shards on its own thread (in order).
    pub writer: ShardPublisher,
    pub progress: Progress,
}

impl MainLoop<'_> {
    /// Reads the source to its end or to `--max-tokens`, publishing every full shard; returns
    /// why it ended (`"end of source"` or `"max tokens"`).
    pub fn read_source(&mut self, rx: &Receiver<Result<SourceEvent>>) -> Result<&'static str> {
        for event in rx.iter() {
            match event? {
                SourceEvent::Batch(docs) => {
                    if self.append_batch(&docs)? {
                        return Ok("max tokens");
                    }
                }
                SourceEvent::FileDone { file } => {
                    tracing::debug!("finished source file {file} ({})", self.files[file as usize].name());
                    self.progress.file_done();
                }
                SourceEvent::Skipped(sk) => {
                    tracing::error!("skipping the rest of {} from row {}: {}", sk.name, sk.from_row, sk.error);
                    self.manifest.skipped_files.push(sk);
                    self.writer.manifest(&self.manifest)?;
                    self.progress.file_done();
                }
            }
            if self.stop.load(Ordering::Relaxed) {
                return Err(Interrupted.into());
            }
            self.progress.tick();
        }
        Ok("end of source")
    }

    /// Tokenizes (in parallel) the documents that still have unpublished tokens and appends them
    /// in source order, publishing every full shard; `true` once a train document starts past
    /// `--max-tokens`.
    fn append_batch(&mut self, docs: &[Doc]) -> Result<bool> {
        let needed: Vec<bool> = docs
            .iter()
            .map(|d| match self.val.known(d.pos, d.id_hash) {
                Some(split) => self.streams[split as usize].wants(d.pos).is_some(),
                None => true,
            })
            .collect();
        let tokenizer = self.tokenizer;
        let tokens: Vec<Option<Vec<u32>>> = self.pool.install(|| {
            docs.par_iter()
                .zip(&needed)
                .map(|(d, &need)| {
                    need.then(|| tokenizer.encode(&d.text))
                        .transpose()
                        .with_context(|| format!("tokenizing file {} row {}", d.pos.file, d.pos.row))
                })
                .collect::<Result<_>>()
        })?;
        let eot = self.manifest.params.eot_id;
        for (doc, toks) in docs.iter().zip(tokens) {
            let Some(toks) = toks else { continue };
            let split = self.val.decide(doc.pos, doc.id_hash, toks.len() as u64 + 1);
            let s = &mut self.streams[split as usize];
            if s.wants(doc.pos).is_none() {
                continue;
            }
            if split == Split::Train && self.args.max_tokens.is_some_and(|m| s.doc_start(doc.pos) >= m) {
                return Ok(true);
            }
            let before = s.len();
            s.push_doc(doc.pos, eot, &toks);
            self.progress.docs += 1;
            self.progress.tokens += s.len() - before;
            loop {
                let n = self.next_shard_chunks(split);
                if self.streams[split as usize].full_chunks() < n {
                    break;
                }
                self.publish(split, n)?;
            }
        }
        Ok(false)
    }

    /// The end of the source (`reason`): publishes the remaining whole chunks of both splits and
    /// the finished manifest, and waits until everything is on disk.
    pub fn finish_source(&mut self, reason: &str) -> Result<()> {
        if self.stop.load(Ordering::Relaxed) {
            return Err(Interrupted.into());
        }
        for split in Split::ALL {
            while self.streams[split as usize].full_chunks() > 0 {
                let n = self.next_shard_chunks(split).min(self.streams[split as usize].full_chunks());
                self.publish(split, n)?;
            }
        }
        let m = &mut self.manifest;
        if m.val_set.is_none() {
            // The source ended before the budget was filled: every val chunk is the set.
            tracing::warn!(
                "the source ended inside the fixed val set: it holds {} of the {} chunks --val-tokens {} asks for",
                m.val.chunks,
                self.set_chunks,
                self.args.val_tokens
            );
            m.val_set = Some(ValSet { chunks: m.val.chunks, shards: m.val.next_seq });
        }
        m.finish(reason);
        m.val_bootstrap_through = self.val.bootstrap_through();
        self.writer.manifest(&self.manifest)?;
        self.writer.finish()
    }

    /// Chunks of `split`'s next shard: `--chunks-per-shard`, except that the val shards of the
    /// fixed set end exactly at its K chunks (the set is then whole shards `0..S`, whatever comes
    /// later).
    fn next_shard_chunks(&self, split: Split) -> usize {
        let cps = self.args.chunks_per_shard as usize;
        let published = self.manifest.split(split).chunks;
        match split {
            Split::Val if published < self.set_chunks => (self.set_chunks - published).min(cps as u64) as usize,
            _ => cps,
        }
    }

    /// Hands the next `n` chunks of `split` to the publishing thread as its next shard, with the
    /// manifest that records it.
    fn publish(&mut self, split: Split, n: usize) -> Result<()> {
        let seq = self.manifest.split(split).next_seq;
        let progress = &mut self.progress;
        if split == Split::Train {
            let occ = self.ring.wait_for_slot(seq, self.stop, |occ| {
                progress.ring = Some(occ);
                progress.tick();
            })?;
            progress.ring = Some(occ);
        }
        let s = &mut self.streams[split as usize];
        let shard = OwnedShard {
            split,
            seq,
            first_token: s.published_tokens(),
            tokens: s.peek_chunks(n).to_vec(),
            n_chunks: n,
        };
        s.consume_chunks(n);
        let manifest = &mut self.manifest;
        let m = manifest.split_mut(split);
        m.next_seq = seq + 1;
        m.chunks += n as u64;
        m.tokens = s.published_tokens();
        m.resume = s.resume_pos();
        manifest.val_bootstrap_through = self.val.bootstrap_through();
        if split == Split::Val && manifest.val_set.is_none() && manifest.val.chunks >= self.set_chunks {
            manifest.val_set = Some(ValSet { chunks: manifest.val.chunks, shards: manifest.val.next_seq });
            tracing::info!(
                "fixed val set complete: {} chunks ({} tokens) in val shards 0..{}, published before any train shard",
                manifest.val.chunks,
                manifest.val.tokens,
                manifest.val.next_seq
            );
        }
        self.writer.shard(shard, manifest)?; // an error here is the publishing thread's, naming its shard
        if split == Split::Train && self.ring.enabled() {
            // The ring counts the shards on disk, and the trainer follows the manifest: in ring
            // mode a train shard is on disk and recorded before the pipeline goes on.
            self.writer.wait_idle()?;
        }
        if let Some(o) = self.progress.ring.as_mut().filter(|_| split == Split::Train && self.ring.enabled()) {
            o.used += 1;
        }
        (self.progress.shards, self.progress.shard_bytes) = self.writer.published();
        Ok(())
    }
}
