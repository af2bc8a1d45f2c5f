//! `pipeline` (no subcommand): source → tokenizer → chunks → shards, resumable at any moment.
//! Reads top to bottom: config → build → resume state → main loop → final shards → summary.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use mamba_shards::dir_lock::{DirLock, PIPELINE_LOCK};
use mamba_shards::manifest::{SourceFingerprint, ValSet, MANIFEST_VERSION};
use mamba_shards::{DocPos, Manifest, ShardParams, Split};
use rayon::prelude::*;

use crate::backpressure::Ring;
use crate::config::RunArgs;
use crate::doc_reader::{self, ReaderConfig, SourceEvent};
use crate::progress::Progress;
use crate::range_reader::{Http, RetryPolicy};
use crate::shard_out::remove_stale_temporaries;
use crate::shard_publisher::{OwnedShard, ShardPublisher};
use crate::split_stream::SplitStream;
use crate::tokenizer::Tokenizer;
use crate::val_split::{val_set_chunks, ValSplit};
use crate::{hub, source, Interrupted};

/// Rows per batch handed from the reading thread to the tokenizers.
const BATCH_ROWS: usize = 512;

pub fn run(args: RunArgs, stop: Arc<AtomicBool>) -> Result<()> {
    // ---- 1. config, tokenizer, shard params ----------------------------------------------------
    args.validate()?;
    let threads = args.threads.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    let pool = Arc::new(rayon::ThreadPoolBuilder::new().num_threads(threads).build().context("starting the worker threads")?);
    let tokenizer = Tokenizer::load(&args.tokenizer, &args.eot_token, args.endpoint.as_deref(), &stop)?;
    let vocab_size = tokenizer.vocab_size();
    let params = ShardParams::new(args.seq_len, vocab_size, tokenizer.eot_id());

    // ---- 2. the source: local parquet or a Hub dataset folder, this worker's share -------------
    let (files, http) = if !args.input.is_empty() {
        (source::local_files(&args.input)?, None)
    } else {
        let endpoint = hub::endpoint(args.endpoint.as_deref())?;
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting tokio")?;
        let retry = RetryPolicy {
            attempts: args.retries,
            first_backoff: Duration::from_millis(args.retry_backoff_ms),
            timeout: Duration::from_secs(args.http_timeout),
        };
        let http = Http::new(endpoint.clone(), hub::token(), retry).context("creating the HTTP client")?;
        let files = source::hub_files(&rt, &http, &args.dataset, &args.revision, &args.subset, &stop)?;
        tracing::info!("{endpoint}: dataset {} @ {}, {} parquet files under {}", args.dataset, args.revision, files.len(), args.subset);
        (files, Some(http))
    };
    let files = source::worker_share(files, args.workers, args.worker_index)?;
    let fingerprint = SourceFingerprint {
        files: files.iter().map(|f| f.name()).collect(),
        tokenizer: args.tokenizer.clone(),
        chunks_per_shard: args.chunks_per_shard,
        val_fraction: args.val_fraction,
        val_tokens: args.val_tokens,
        workers: args.workers,
        worker_index: args.worker_index,
    };

    // ---- 3. data dir: stale temporaries, manifest (resume or new), resolved config -------------
    let dir = args.data_dir.clone();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating data dir {}", dir.display()))?;
    // One pipeline per data dir (held until this process ends): a second one is refused here.
    let _lock = DirLock::acquire(&dir, PIPELINE_LOCK, "pipeline")?;
    let removed = remove_stale_temporaries(&dir)?;
    if removed > 0 {
        tracing::info!("removed {removed} temporary files left by an interrupted run");
    }
    let mut manifest = match Manifest::read(&dir)? {
        Some(m) => {
            check_same_options(&dir, &m, &fingerprint, &params)?;
            m
        }
        None => new_manifest(&args, &params, fingerprint),
    };
    if manifest.finished {
        let more = manifest.finish_reason == "max tokens" && args.max_tokens.is_none_or(|m| Some(m) > manifest.max_tokens);
        if !more {
            tracing::info!("{}: already finished ({}); nothing to do", dir.display(), manifest.finish_reason);
            return Ok(());
        }
        tracing::info!("continuing a corpus that stopped at --max-tokens {}", manifest.max_tokens.map_or("-".into(), |m| m.to_string()));
        manifest.finished = false;
        manifest.finish_reason.clear();
    }
    manifest.max_tokens = args.max_tokens;
    // The ring size of this run (it may differ from the last run's): the trainer reads it.
    manifest.ring_slots = Some(args.ring_slots);
    save_resolved_config(&dir, &args)?;
    // Written now, not only at the first publish: a waiting trainer learns the ring size (and, in
    // a new dir, the shard params) before anything is published.
    manifest.write(&dir).with_context(|| format!("writing the manifest in {}", dir.display()))?;

    // ---- 4. resume state: per-split streams, val rule, where to start reading ------------------
    let seq_len = params.seq_len();
    let mut streams = [SplitStream::resume(seq_len, &manifest.train), SplitStream::resume(seq_len, &manifest.val)];
    // The fixed val set: its K chunks come from the first documents and are published (in shards
    // of at most --chunks-per-shard, the last one possibly shorter) before any train shard.
    let set_chunks = val_set_chunks(args.val_tokens, seq_len);
    let mut val = ValSplit::new(args.val_fraction, set_chunks, seq_len, manifest.val_bootstrap_through);
    let start: DocPos = manifest.train.resume.doc.min(manifest.val.resume.doc);
    if manifest.val_bootstrap_through.is_none() && start != DocPos::default() {
        bail!("{}: manifest has published data but no val bootstrap position; it is inconsistent", dir.display());
    }
    if manifest.train.chunks + manifest.val.chunks > 0 {
        tracing::info!(
            "resuming: train {} shards ({} chunks), val {} shards ({} chunks); reading from file {} row {}",
            manifest.train.next_seq,
            manifest.train.chunks,
            manifest.val.next_seq,
            manifest.val.chunks,
            start.file,
            start.row
        );
    }
    let ring = Ring::new(dir.clone(), args.ring_slots);
    ring.recycle(manifest.train.next_seq)?;

    // ---- 5. main loop: read batches → tokenize in parallel → append to splits → publish ---------
    let mut progress = Progress::new(files.len() as u64, args.quiet, Duration::from_secs(args.log_every));
    progress.files_done = start.file;
    progress.max_tokens = args.max_tokens;
    let (rx, reader_thread) = doc_reader::spawn(ReaderConfig {
        files: files.clone(),
        start,
        skipped: manifest.skipped_files.clone(),
        http,
        on_error: args.on_error,
        bytes_read: progress.bytes_read.clone(),
        stop: stop.clone(),
        batch_rows: BATCH_ROWS,
    })?;
    // Shards are compressed, written, fsynced and recorded on their own thread (in order).
    let writer = ShardPublisher::spawn(dir.clone(), params, args.zstd_level, pool.clone(), stop.clone())?;
    let mut publisher = Publisher { writer, ring: &ring, stop: &stop, set_chunks };
    let cps = args.chunks_per_shard as usize;
    let eot = params.eot_id;
    let mut reason = "end of source";
    let result: Result<()> = (|| {
        'read: for event in rx.iter() {
            match event? {
                SourceEvent::Batch(docs) => {
                    // Tokenize (in parallel) only documents that still have unpublished tokens.
                    let needed: Vec<bool> = docs
                        .iter()
                        .map(|d| match val.known(d.pos, d.id_hash) {
                            Some(split) => streams[split as usize].wants(d.pos).is_some(),
                            None => true,
                        })
                        .collect();
                    let tokens: Vec<Option<Vec<u32>>> = pool.install(|| {
                        docs.par_iter()
                            .zip(&needed)
                            .map(|(d, &need)| {
                                need.then(|| tokenizer.encode(&d.text))
                                    .transpose()
                                    .with_context(|| format!("tokenizing file {} row {}", d.pos.file, d.pos.row))
                            })
                            .collect::<Result<_>>()
                    })?;
                    // Append in source order; publish every full shard.
                    for (doc, toks) in docs.iter().zip(tokens) {
                        let Some(toks) = toks else { continue };
                        let split = val.decide(doc.pos, doc.id_hash, toks.len() as u64 + 1);
                        let s = &mut streams[split as usize];
                        if s.wants(doc.pos).is_none() {
                            continue;
                        }
                        if split == Split::Train && args.max_tokens.is_some_and(|m| s.doc_start(doc.pos) >= m) {
                            reason = "max tokens";
                            break 'read;
                        }
                        let before = s.len();
                        s.push_doc(doc.pos, eot, &toks);
                        progress.docs += 1;
                        progress.tokens += s.len() - before;
                        loop {
                            let n = shard_chunks(split, manifest.split(split).chunks, cps, set_chunks);
                            if s.full_chunks() < n {
                                break;
                            }
                            publisher.publish(split, s, n, &mut manifest, &val, &mut progress)?;
                        }
                    }
                }
                SourceEvent::FileDone { file } => {
                    tracing::debug!("finished source file {file} ({})", files[file as usize].name());
                    progress.file_done();
                }
                SourceEvent::Skipped(sk) => {
                    tracing::error!("skipping the rest of {} from row {}: {}", sk.name, sk.from_row, sk.error);
                    manifest.skipped_files.push(sk);
                    publisher.writer.manifest(&manifest)?;
                    progress.file_done();
                }
            }
            if stop.load(Ordering::Relaxed) {
                return Err(Interrupted.into());
            }
            progress.tick();
        }
        if stop.load(Ordering::Relaxed) {
            return Err(Interrupted.into());
        }
        // ---- 6. end of the source: publish the remaining whole chunks of both splits -----------
        for split in Split::ALL {
            let s = &mut streams[split as usize];
            while s.full_chunks() > 0 {
                let n = shard_chunks(split, manifest.split(split).chunks, cps, set_chunks).min(s.full_chunks());
                publisher.publish(split, s, n, &mut manifest, &val, &mut progress)?;
            }
        }
        if manifest.val_set.is_none() {
            // The source ended before the budget was filled: every val chunk is the set.
            tracing::warn!(
                "the source ended inside the fixed val set: it holds {} of the {set_chunks} chunks --val-tokens {} asks for",
                manifest.val.chunks,
                args.val_tokens
            );
            manifest.val_set = Some(ValSet { chunks: manifest.val.chunks, shards: manifest.val.next_seq });
        }
        manifest.finish(reason);
        manifest.val_bootstrap_through = val.bootstrap_through();
        publisher.writer.manifest(&manifest)?;
        publisher.writer.finish()
    })();
    stop.store(true, Ordering::Relaxed); // lets the reading thread end
    drop(rx);
    // After a failure: the publishing thread records what it has published, then ends.
    let result = result.and(publisher.writer.finish());
    (progress.shards, progress.shard_bytes) = publisher.writer.published();
    if result.is_ok() {
        let _ = reader_thread.join();
    } // else: don't wait out an HTTP retry backoff; the thread ends at its next send or check
    if let Err(e) = result {
        let what = if crate::is_interrupted(&e) { "interrupted;" } else { "failed;" };
        progress.finish(what);
        return Err(e);
    }

    // ---- 7. summary ------------------------------------------------------------------------------
    if manifest.val.chunks == 0 {
        tracing::warn!("the source holds fewer than {} tokens: no val shard could be written", params.chunk_tokens());
    } else if manifest.train.chunks == 0 {
        tracing::warn!("no train shard: the whole source went into the fixed val set; lower --val-tokens ({})", args.val_tokens);
    }
    progress.finish(&format!(
        "finished ({reason}): train {} shards/{} chunks, val {} shards/{} chunks;",
        manifest.train.next_seq, manifest.train.chunks, manifest.val.next_seq, manifest.val.chunks
    ));
    Ok(())
}

struct Publisher<'a> {
    writer: ShardPublisher,
    ring: &'a Ring,
    stop: &'a AtomicBool,
    /// K, the chunks of the fixed val set.
    set_chunks: u64,
}

/// Chunks of a split's next shard: `--chunks-per-shard`, except that the val shards of the fixed
/// set end exactly at its K chunks (the set is then whole shards `0..S`, whatever comes later).
fn shard_chunks(split: Split, published: u64, cps: usize, set_chunks: u64) -> usize {
    match split {
        Split::Val if published < set_chunks => (set_chunks - published).min(cps as u64) as usize,
        _ => cps,
    }
}

impl Publisher<'_> {
    /// Hands the next `n` chunks of `split` to the publishing thread as its next shard, with the
    /// manifest that records it.
    fn publish(&mut self, split: Split, s: &mut SplitStream, n: usize, manifest: &mut Manifest, val: &ValSplit, progress: &mut Progress) -> Result<()> {
        let seq = manifest.split(split).next_seq;
        if split == Split::Train {
            let occ = self.ring.wait_for_slot(seq, self.stop, |occ| {
                progress.ring = Some(occ);
                progress.tick();
            })?;
            progress.ring = Some(occ);
        }
        let shard = OwnedShard { split, seq, first_token: s.published_tokens(), tokens: s.peek_chunks(n).to_vec(), n_chunks: n };
        s.consume_chunks(n);
        let m = manifest.split_mut(split);
        m.next_seq = seq + 1;
        m.chunks += n as u64;
        m.tokens = s.published_tokens();
        m.resume = s.resume_pos();
        manifest.val_bootstrap_through = val.bootstrap_through();
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
        if let Some(o) = progress.ring.as_mut().filter(|_| split == Split::Train && self.ring.enabled()) {
            o.used += 1;
        }
        (progress.shards, progress.shard_bytes) = self.writer.published();
        Ok(())
    }
}

fn new_manifest(args: &RunArgs, params: &ShardParams, fingerprint: SourceFingerprint) -> Manifest {
    let mut m = Manifest::new(*params, fingerprint, crate::version_string());
    m.max_tokens = args.max_tokens;
    m.ring_slots = Some(args.ring_slots);
    m
}

/// A data dir is only resumed with the options that made it; anything else is a clear error.
fn check_same_options(dir: &Path, m: &Manifest, now: &SourceFingerprint, params: &ShardParams) -> Result<()> {
    if m.version < MANIFEST_VERSION {
        bail!(
            "{} was written by an older pipeline (manifest version {}, {}), before the fixed val set of version {MANIFEST_VERSION}: \
             its val split differs, so it cannot be continued. Its shards still train (the trainer reads it); \
             build new data into a new --data-dir",
            dir.join(mamba_shards::ring::MANIFEST_FILE).display(),
            m.version,
            m.written_by
        );
    }
    let was = &m.fingerprint;
    let mut diffs = Vec::new();
    if was.files != now.files {
        let first = was.files.iter().zip(&now.files).position(|(a, b)| a != b).unwrap_or(was.files.len().min(now.files.len()));
        diffs.push(format!(
            "source files ({} then, {} now; first difference at index {first}: {:?} vs {:?})",
            was.files.len(),
            now.files.len(),
            was.files.get(first),
            now.files.get(first)
        ));
    }
    let mut cmp = |what: &str, a: String, b: String| {
        if a != b {
            diffs.push(format!("{what} ({a} then, {b} now)"));
        }
    };
    cmp("--tokenizer", was.tokenizer.clone(), now.tokenizer.clone());
    cmp("--seq-len", m.params.seq_len().to_string(), params.seq_len().to_string());
    cmp("--chunks-per-shard", was.chunks_per_shard.to_string(), now.chunks_per_shard.to_string());
    cmp("--val-fraction", was.val_fraction.to_string(), now.val_fraction.to_string());
    cmp("--val-tokens", was.val_tokens.to_string(), now.val_tokens.to_string());
    cmp("--workers", was.workers.to_string(), now.workers.to_string());
    cmp("--worker-index", was.worker_index.to_string(), now.worker_index.to_string());
    let shape = |p: &ShardParams| format!("token_bytes {} chunk_tokens {} vocab {} eot {}", p.token_bytes, p.chunk_tokens(), p.vocab_size, p.eot_id);
    cmp("shard params", shape(&m.params), shape(params));
    if diffs.is_empty() {
        return Ok(());
    }
    Err(anyhow!(
        "{} was made with different options: {}. Refusing to resume into it; use the original options or a new --data-dir",
        dir.join(mamba_shards::ring::MANIFEST_FILE).display(),
        diffs.join("; ")
    ))
}

/// `pipeline.config.json`: the resolved options plus version and git commit, for the record.
fn save_resolved_config(dir: &Path, args: &RunArgs) -> Result<()> {
    let value = serde_json::json!({ "written_by": crate::version_string(), "args": args });
    let bytes = serde_json::to_vec_pretty(&value).context("serializing the resolved config")?;
    mamba_shards::fsutil::atomic_write(&dir.join("pipeline.config.json"), &bytes)?;
    Ok(())
}
