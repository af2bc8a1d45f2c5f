//! Progress: an indicatif bar over the source files plus a fixed-format log line every
//! `--log-every` seconds, and the final summary line. `--quiet` keeps only the summary.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use crate::backpressure::Occupancy;

pub struct Progress {
    bar: ProgressBar,
    quiet: bool,
    started: Instant,
    last_log: Instant,
    log_every: Duration,
    pub n_files: u64,
    pub files_done: u64,
    pub docs: u64,
    /// Stream tokens appended this run (both splits).
    pub tokens: u64,
    pub shards: u64,
    pub shard_bytes: u64,
    pub ring: Option<Occupancy>,
    pub bytes_read: Arc<AtomicU64>,
}

impl Progress {
    pub fn new(n_files: u64, quiet: bool, log_every: Duration) -> Progress {
        let bar = if quiet { ProgressBar::hidden() } else { ProgressBar::new(n_files) };
        let style = ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} files  {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        bar.set_style(style);
        let now = Instant::now();
        Progress {
            bar,
            quiet,
            started: now,
            last_log: now,
            log_every,
            n_files,
            files_done: 0,
            docs: 0,
            tokens: 0,
            shards: 0,
            shard_bytes: 0,
            ring: None,
            bytes_read: Arc::new(AtomicU64::new(0)),
        }
    }

    pub fn file_done(&mut self) {
        self.files_done += 1;
        self.bar.set_position(self.files_done);
    }

    fn rates(&self) -> (f64, f64, f64) {
        let secs = self.started.elapsed().as_secs_f64().max(1e-9);
        let mb = self.bytes_read.load(Ordering::Relaxed) as f64 / 1e6;
        (secs, mb / secs, self.tokens as f64 / secs)
    }

    fn line(&self) -> String {
        let (_, mbps, tps) = self.rates();
        let ring = match self.ring {
            Some(o) if o.slots > 0 && o.used >= o.slots as usize => format!(" | ring {}/{} full, waiting for trainer", o.used, o.slots),
            Some(o) if o.slots > 0 => format!(" | ring {}/{}", o.used, o.slots),
            _ => String::new(),
        };
        format!(
            "files {}/{} | docs {} | tokens {} | shards {} | {:.1} MB/s read | {:.2}M tokens/s{ring}",
            self.files_done,
            self.n_files,
            self.docs,
            self.tokens,
            self.shards,
            mbps,
            tps / 1e6
        )
    }

    /// Refreshes the bar; logs the progress line when it is due.
    pub fn tick(&mut self) {
        if self.quiet {
            return;
        }
        self.bar.set_message(format!("docs {} tokens {}", self.docs, self.tokens));
        if self.last_log.elapsed() >= self.log_every {
            self.last_log = Instant::now();
            let line = self.line();
            self.bar.suspend(|| tracing::info!("{line}"));
        }
    }

    /// The final, fixed-format summary (printed even with `--quiet`).
    pub fn finish(&self, what: &str) {
        self.bar.finish_and_clear();
        let (secs, mbps, tps) = self.rates();
        tracing::info!(
            "summary: {what} files={}/{} docs={} tokens={} shards={} shard_bytes={} read_mb={:.1} seconds={:.2} read_mb_per_s={:.1} tokens_per_s={:.0}",
            self.files_done,
            self.n_files,
            self.docs,
            self.tokens,
            self.shards,
            self.shard_bytes,
            self.bytes_read.load(Ordering::Relaxed) as f64 / 1e6,
            secs,
            mbps,
            tps
        );
    }
}
