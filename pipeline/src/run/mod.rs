//! `pipeline` (no subcommand): source → tokenizer → chunks → shards, resumable at any moment.
//! Reads top to bottom: config → source → data dir (`data_dir.rs`) → resume state → main loop
//! (`main_loop.rs`) → summary.

mod data_dir;
mod main_loop;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use mamba_shards::manifest::SourceFingerprint;
use mamba_shards::{DocPos, Manifest, ShardParams};

use crate::backpressure::Ring;
use crate::config::RunArgs;
use crate::doc_reader::{self, ReaderConfig};
use crate::progress::Progress;
use crate::range_reader::{Http, RetryPolicy};
use crate::shard_publisher::ShardPublisher;
use crate::source::SourceFile;
use crate::split_stream::SplitStream;
use crate::tokenizer::Tokenizer;
use crate::val_split::{val_set_chunks, ValSplit};
use crate::{hub, source};
use main_loop::MainLoop;

/// Rows per batch handed from the reading thread to the tokenizers.
const BATCH_ROWS: usize = 512;

pub fn run(args: RunArgs, stop: Arc<AtomicBool>) -> Result<()> {
    // ---- 1. config, tokenizer, shard params ----------------------------------------------------
    args.validate()?;
    let threads = args.threads.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    let pool =
        Arc::new(rayon::ThreadPoolBuilder::new().num_threads(threads).build().context("starting the worker threads")?);
    let tokenizer = Tokenizer::load(&args.tokenizer, &args.eot_token, args.endpoint.as_deref(), &stop)?;
    let params = ShardParams::new(args.seq_len, tokenizer.vocab_size(), tokenizer.eot_id());

    // ---- 2. the source: local parquet or a Hub dataset folder, this worker's share -------------
    let (files, http) = source_files(&args, &stop)?;
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

    // ---- 3. data dir: lock, stale temporaries, manifest (resume or new), resolved config -------
    let Some((_lock, manifest)) = data_dir::open(&args, &params, fingerprint)? else { return Ok(()) };

    // ---- 4. resume state: per-split streams, val rule, where to start reading ------------------
    let seq_len = params.seq_len();
    let streams = [SplitStream::resume(seq_len, &manifest.train), SplitStream::resume(seq_len, &manifest.val)];
    // The fixed val set: its K chunks come from the first documents and are published (in shards
    // of at most --chunks-per-shard, the last one possibly shorter) before any train shard.
    let set_chunks = val_set_chunks(args.val_tokens, seq_len);
    let val = ValSplit::new(args.val_fraction, set_chunks, seq_len, manifest.val_bootstrap_through);
    let start = resume_position(&args.data_dir, &manifest)?;
    let ring = Ring::new(args.data_dir.clone(), args.ring_slots);
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
    let writer = ShardPublisher::spawn(args.data_dir.clone(), params, args.zstd_level, pool.clone(), stop.clone())?;
    let mut work = MainLoop {
        args: &args,
        pool: &pool,
        tokenizer: &tokenizer,
        files: &files,
        stop: &stop,
        ring: &ring,
        streams,
        val,
        set_chunks,
        manifest,
        writer,
        progress,
    };
    // ---- 6. end of the source: publish the remaining whole chunks of both splits ---------------
    let result = work.read_source(&rx).and_then(|reason| work.finish_source(reason).map(|()| reason));
    stop.store(true, Ordering::Relaxed); // lets the reading thread end
    drop(rx);
    // Always (after a failure too): the publishing thread records what it has published, then ends.
    let finished = work.writer.finish();
    let result = result.and_then(|reason| finished.map(|()| reason));
    (work.progress.shards, work.progress.shard_bytes) = work.writer.published();
    if result.is_ok() {
        let _ = reader_thread.join();
    } // else: don't wait out an HTTP retry backoff; the thread ends at its next send or check
    let reason = match result {
        Ok(reason) => reason,
        Err(e) => {
            let what = if crate::is_interrupted(&e) { "interrupted;" } else { "failed;" };
            work.progress.finish(what);
            return Err(e);
        }
    };

    // ---- 7. summary ------------------------------------------------------------------------------
    summary(&work.manifest, &work.progress, &params, &args, reason);
    Ok(())
}

/// The source files: local parquet (`--input`), or a Hub dataset folder listed through `Http`
/// (returned for the reading thread).
fn source_files(args: &RunArgs, stop: &AtomicBool) -> Result<(Vec<SourceFile>, Option<Http>)> {
    if !args.input.is_empty() {
        return Ok((source::local_files(&args.input)?, None));
    }
    let endpoint = hub::endpoint(args.endpoint.as_deref())?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting tokio")?;
    let retry = RetryPolicy {
        attempts: args.retries,
        first_backoff: Duration::from_millis(args.retry_backoff_ms),
        timeout: Duration::from_secs(args.http_timeout),
    };
    let http = Http::new(endpoint.clone(), hub::token(), retry).context("creating the HTTP client")?;
    let files = source::hub_files(&rt, &http, &args.dataset, &args.revision, &args.subset, stop)?;
    tracing::info!(
        "{endpoint}: dataset {} @ {}, {} parquet files under {}",
        args.dataset,
        args.revision,
        files.len(),
        args.subset
    );
    Ok((files, Some(http)))
}

/// Where reading starts: the earlier of the two splits' resume documents.
fn resume_position(dir: &Path, manifest: &Manifest) -> Result<DocPos> {
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
    Ok(start)
}

/// The last lines of a finished run: what was published, and what is missing.
fn summary(manifest: &Manifest, progress: &Progress, params: &ShardParams, args: &RunArgs, reason: &str) {
    if manifest.val.chunks == 0 {
        tracing::warn!("the source holds fewer than {} tokens: no val shard could be written", params.chunk_tokens());
    } else if manifest.train.chunks == 0 {
        tracing::warn!(
            "no train shard: the whole source went into the fixed val set; lower --val-tokens ({})",
            args.val_tokens
        );
    }
    progress.finish(&format!(
        "finished ({reason}): train {} shards/{} chunks, val {} shards/{} chunks;",
        manifest.train.next_seq, manifest.train.chunks, manifest.val.next_seq, manifest.val.chunks
    ));
}
