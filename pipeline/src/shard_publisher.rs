//! The publishing thread: shards are compressed, written, fsynced, renamed into place and recorded
//! in the manifest here, in the order they were handed over, while the main thread goes on
//! tokenizing. Publishing is dominated by fsync latency (a shard, its directory entry, the
//! manifest and its directory entry: four fsyncs), which would otherwise stall tokenizing.
//!
//! Durability is unchanged: each shard is fsynced before its rename (mamba_shards::ShardWriter),
//! and a manifest is only written after every shard it records is in place. When several jobs are
//! queued, their shards are published one after the other and the manifest is written once, with
//! the newest state. All manifest writes of a run go through this thread, so none can record a
//! shard that is not yet on disk. The queue is bounded: a slow disk holds back tokenizing.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use mamba_shards::{Manifest, ShardParams, Split};

use crate::shard_out::{write_shard, ShardJob};
use crate::Interrupted;

/// Jobs (shards of `--chunks-per-shard` chunks, about 2 MB of tokens each) waiting to be published.
const QUEUE: usize = 4;

pub struct OwnedShard {
    pub split: Split,
    pub seq: u64,
    pub first_token: u64,
    /// `n_chunks · seq_len + 1` stream tokens.
    pub tokens: Vec<u32>,
    pub n_chunks: usize,
}

enum Job {
    /// A shard, then the manifest that records it.
    Shard(OwnedShard, Box<Manifest>),
    /// A manifest change that publishes no shard (a skipped file, the end of the run).
    Manifest(Box<Manifest>),
}

/// What the thread has done so far (for the progress line and the summary).
#[derive(Default)]
struct Done {
    jobs: Mutex<u64>,
    changed: Condvar,
    shards: AtomicU64,
    bytes: AtomicU64,
}

pub struct ShardPublisher {
    tx: Option<SyncSender<Job>>,
    thread: Option<JoinHandle<Result<()>>>,
    done: Arc<Done>,
    sent: u64,
}

impl ShardPublisher {
    pub fn spawn(
        dir: PathBuf,
        params: ShardParams,
        level: i32,
        pool: Arc<rayon::ThreadPool>,
        stop: Arc<AtomicBool>,
    ) -> Result<ShardPublisher> {
        let (tx, rx) = sync_channel(QUEUE);
        let done = Arc::new(Done::default());
        let d = done.clone();
        let thread = std::thread::Builder::new()
            .name("publisher".into())
            .spawn(move || publish_all(&rx, &dir, &params, level, &pool, &stop, &d))
            .context("starting the publishing thread")?;
        Ok(ShardPublisher { tx: Some(tx), thread: Some(thread), done, sent: 0 })
    }

    /// Queues a shard and the manifest that records it (blocks while the queue is full).
    pub fn shard(&mut self, shard: OwnedShard, manifest: &Manifest) -> Result<()> {
        self.send(Job::Shard(shard, Box::new(manifest.clone())))
    }

    /// Queues a manifest write (after everything queued before it).
    pub fn manifest(&mut self, manifest: &Manifest) -> Result<()> {
        self.send(Job::Manifest(Box::new(manifest.clone())))
    }

    fn send(&mut self, job: Job) -> Result<()> {
        let sent = self.tx.as_ref().is_some_and(|tx| tx.send(job).is_ok());
        if !sent {
            return Err(self.thread_error());
        }
        self.sent += 1;
        Ok(())
    }

    /// Blocks until everything queued so far is published (the ring counts shards on disk).
    pub fn wait_idle(&mut self) -> Result<()> {
        let mut jobs = self.done.jobs.lock().map_err(|_| anyhow!("publishing thread panicked"))?;
        while *jobs < self.sent {
            if self.thread.as_ref().is_none_or(JoinHandle::is_finished) {
                drop(jobs);
                return Err(self.thread_error());
            }
            jobs = self
                .done
                .changed
                .wait_timeout(jobs, Duration::from_millis(50))
                .map_err(|_| anyhow!("publishing thread panicked"))?
                .0;
        }
        Ok(())
    }

    /// Shards published and their total size in bytes, so far.
    pub fn published(&self) -> (u64, u64) {
        (self.done.shards.load(Ordering::Relaxed), self.done.bytes.load(Ordering::Relaxed))
    }

    /// Publishes everything queued (unless stopped) and ends the thread; its error, if it failed.
    pub fn finish(&mut self) -> Result<()> {
        self.tx = None;
        match self.thread.take() {
            Some(t) => t.join().map_err(|_| anyhow!("publishing thread panicked"))?,
            None => Ok(()),
        }
    }

    /// The thread ended early: its error.
    fn thread_error(&mut self) -> anyhow::Error {
        self.tx = None;
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(Err(e))) => e,
            Some(Ok(Ok(()))) => anyhow!("publishing thread ended early"),
            Some(Err(_)) => anyhow!("publishing thread panicked"),
            None => anyhow!("publishing thread already ended"),
        }
    }
}

fn publish_all(
    rx: &Receiver<Job>,
    dir: &std::path::Path,
    params: &ShardParams,
    level: i32,
    pool: &rayon::ThreadPool,
    stop: &AtomicBool,
    done: &Done,
) -> Result<()> {
    while let Ok(first) = rx.recv() {
        // Everything queued now: shards in order, then one manifest write with the newest state.
        let mut batch = vec![first];
        batch.extend(rx.try_iter());
        let n = batch.len() as u64;
        let mut newest = None;
        let mut result = Ok(());
        for job in batch {
            if stop.load(Ordering::Relaxed) {
                result = Err(Interrupted.into());
                break;
            }
            match job {
                Job::Shard(s, manifest) => {
                    let job = ShardJob {
                        split: s.split,
                        seq: s.seq,
                        first_token: s.first_token,
                        tokens: &s.tokens,
                        n_chunks: s.n_chunks,
                    };
                    match pool.install(|| write_shard(dir, params, level, &job, stop)) {
                        Ok((_, bytes)) => {
                            done.shards.fetch_add(1, Ordering::Relaxed);
                            done.bytes.fetch_add(bytes, Ordering::Relaxed);
                            newest = Some(manifest);
                        }
                        Err(e) => {
                            result = Err(e);
                            break;
                        }
                    }
                }
                Job::Manifest(manifest) => newest = Some(manifest),
            }
        }
        // Also after a failure or stop: the shards published before it are recorded.
        if let Some(m) = newest {
            m.write(dir).with_context(|| {
                format!(
                    "recording train shards below {} and val shards below {} in the manifest",
                    m.train.next_seq, m.val.next_seq
                )
            })?;
        }
        result?;
        let mut jobs = done.jobs.lock().map_err(|_| anyhow!("progress lock poisoned"))?;
        *jobs += n;
        done.changed.notify_all();
    }
    Ok(())
}
