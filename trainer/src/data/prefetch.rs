//! The background thread that reads, decompresses and stages batches ahead of the training loop,
//! so the GPU never waits on zstd. It pulls chunks from a [`ChunkSource`] (static order or the
//! follow-mode ring), packs `micro_batch` of them into a [`Batch`] and sends it over a bounded
//! channel of `prefetch` slots. Each batch carries the position *after* it, so the position the
//! training loop sees (and checkpoints) counts consumed batches only, never staged ones.
//!
//! Shutdown: dropping the [`Prefetcher`] sets the stop flag (seen by a source that is polling for
//! new shards), drops the receiver (which fails a blocked `send`) and joins the thread.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use mamba_shards::shard_params::chunk_tokens_for;

use super::bad_chunk::SkippedChunk;
use super::error::DataError;
use super::position::DataPosition;
use super::Batch;

/// How often a blocked [`Prefetcher::recv`] looks at its stop flag.
const STOP_POLL: Duration = Duration::from_millis(100);

/// A stream of chunks, each with the position just after it.
pub(crate) trait ChunkSource: Send + 'static {
    /// Writes the next chunk (seq_len + 1 tokens) into `out`. `Ok(None)`: the data has ended
    /// (follow mode, pipeline finished) or `stop` was raised while waiting for it.
    fn next_chunk(&mut self, out: &mut Vec<u32>, stop: &AtomicBool) -> Result<Option<DataPosition>, DataError>;

    /// Where the next chunk would come from. At the end of the data this is past everything
    /// read or skipped (follow mode: past trailing corrupt shards, so they can be released).
    fn position(&self) -> DataPosition;

    /// Follow mode: (train shard seq, chunk index inside the shard) of the chunk `next_chunk`
    /// returned last, for the per-step record of what was trained on. `None` in static mode.
    fn last_chunk_id(&self) -> Option<(u64, u64)> {
        None
    }

    /// Static mode under `--on-bad-chunk skip`: the chunks left out since the last call.
    fn take_skipped(&mut self) -> Vec<SkippedChunk> {
        Vec::new()
    }
}

/// What the thread sends: a batch, the end of the data (with the final position), or the error
/// that stopped it. A chunk skipped as bad is sent before the batch it would have been part of.
pub(crate) enum Staged {
    Skipped(SkippedChunk),
    Batch(Batch),
    End(DataPosition),
    Failed(DataError),
}

pub(crate) struct Prefetcher {
    rx: Option<Receiver<Staged>>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Prefetcher {
    /// Starts the thread; it stages up to `depth` batches (plus the one it is building).
    pub(crate) fn spawn(
        source: Box<dyn ChunkSource>,
        micro_batch: usize,
        seq_len: usize,
        depth: usize,
    ) -> Result<Self, DataError> {
        let (tx, rx) = sync_channel(depth);
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = stop.clone();
        let handle = std::thread::Builder::new()
            .name("data-prefetch".into())
            .spawn(move || run(source, micro_batch, seq_len, tx, &thread_stop))
            .map_err(|e| DataError::LoaderStopped { what: format!("cannot start the prefetch thread: {e}") })?;
        Ok(Prefetcher { rx: Some(rx), stop, handle: Some(handle) })
    }

    /// Blocks until the thread has the next item; `Ok(None)` when `stop` (checked every
    /// [`STOP_POLL`] while blocked) turns true first.
    pub(crate) fn recv(&mut self, stop: Option<&AtomicBool>) -> Result<Option<Staged>, DataError> {
        let got = loop {
            let Some(rx) = &self.rx else { break None };
            let Some(stop) = stop else { break rx.recv().ok() };
            match rx.recv_timeout(STOP_POLL) {
                Ok(staged) => break Some(staged),
                Err(RecvTimeoutError::Timeout) if stop.load(Ordering::SeqCst) => return Ok(None),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break None,
            }
        };
        match got {
            Some(staged) => Ok(Some(staged)),
            None => {
                // The thread ended without saying why: it panicked, or it already sent its error.
                let what = match self.handle.take().map(JoinHandle::join) {
                    Some(Err(panic)) => panic_message(panic.as_ref()),
                    _ => "it had already stopped after an earlier error".into(),
                };
                Err(DataError::LoaderStopped { what })
            }
        }
    }
}

impl Drop for Prefetcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.rx = None;
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        format!("panic: {s}")
    } else if let Some(s) = panic.downcast_ref::<String>() {
        format!("panic: {s}")
    } else {
        "panic".into()
    }
}

/// The thread's loop: build a batch, send it, until the data ends, an error occurs, or nobody listens.
fn run(
    mut source: Box<dyn ChunkSource>,
    micro_batch: usize,
    seq_len: usize,
    tx: SyncSender<Staged>,
    stop: &AtomicBool,
) {
    let chunk_tokens = chunk_tokens_for(seq_len);
    let mut chunk = Vec::with_capacity(chunk_tokens);
    loop {
        let mut tokens = Vec::with_capacity(micro_batch * chunk_tokens);
        let mut rows = 0;
        let mut position_after = None;
        let mut chunks = Vec::new();
        while rows < micro_batch {
            let next = source.next_chunk(&mut chunk, stop);
            for skipped in source.take_skipped() {
                if tx.send(Staged::Skipped(skipped)).is_err() {
                    return;
                }
            }
            match next {
                Ok(Some(pos)) => {
                    tokens.extend_from_slice(&chunk);
                    rows += 1;
                    position_after = Some(pos);
                    chunks.extend(source.last_chunk_id());
                }
                Ok(None) => break,
                Err(e) => {
                    let _ = tx.send(Staged::Failed(e));
                    return;
                }
            }
        }
        if stop.load(Ordering::SeqCst) {
            return;
        }
        if let Some(position_after) = position_after {
            let batch = Batch { tokens, micro_batch: rows, seq_len, position_after, chunks, wait: Duration::ZERO };
            if tx.send(Staged::Batch(batch)).is_err() {
                return;
            }
        }
        if rows < micro_batch {
            let _ = tx.send(Staged::End(source.position()));
            return;
        }
    }
}
