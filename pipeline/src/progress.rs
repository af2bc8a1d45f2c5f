//! Progress: an indicatif bar over the source files (with its ETA) plus a fixed-format log line
//! every `--log-every` seconds, and the final summary line. `--quiet` keeps only the summary.
//! Rates are written with k/M units (a ring that waits for the trainer runs at thousands of
//! tokens/s, not `0.00M`); with `--max-tokens` the log line's ETA comes from the token count,
//! otherwise from the files done.

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
    /// `--max-tokens`: the token total the ETA counts towards.
    pub max_tokens: Option<u64>,
}

/// `950`, `12.3k`, `4.56M`.
pub fn human(x: f64) -> String {
    match x {
        x if x >= 1e6 => format!("{:.2}M", x / 1e6),
        x if x >= 1e3 => format!("{:.1}k", x / 1e3),
        x => format!("{x:.0}"),
    }
}

/// `42s`, `3m05s`, `2h07m`.
pub fn duration(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    match s {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

impl Progress {
    pub fn new(n_files: u64, quiet: bool, log_every: Duration) -> Progress {
        let bar = if quiet { ProgressBar::hidden() } else { ProgressBar::new(n_files) };
        let style = ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} files ETA {eta}  {msg}")
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
            max_tokens: None,
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

    /// Seconds left: by tokens towards `--max-tokens`, else by files; `None` before any progress.
    fn eta(&self) -> Option<f64> {
        let (secs, _, tps) = self.rates();
        match self.max_tokens {
            Some(max) if tps > 0.0 => Some(max.saturating_sub(self.tokens) as f64 / tps),
            None if self.files_done > 0 && self.n_files > 0 => {
                Some(secs * (self.n_files.saturating_sub(self.files_done)) as f64 / self.files_done as f64)
            }
            _ => None,
        }
    }

    fn line(&self) -> String {
        let (_, mbps, tps) = self.rates();
        let ring = match self.ring {
            Some(o) if o.slots > 0 && o.used >= o.slots as usize => {
                format!(" | ring {}/{} full, waiting for trainer", o.used, o.slots)
            }
            Some(o) if o.slots > 0 => format!(" | ring {}/{}", o.used, o.slots),
            _ => String::new(),
        };
        let eta = self.eta().map_or(String::new(), |s| format!(" | ETA {}", duration(s)));
        format!(
            "files {}/{} | docs {} | tokens {} | shards {} | {:.1} MB/s read | {} tokens/s{eta}{ring}",
            self.files_done,
            self.n_files,
            self.docs,
            self.tokens,
            self.shards,
            mbps,
            human(tps)
        )
    }

    /// Refreshes the bar; logs the progress line when it is due.
    pub fn tick(&mut self) {
        if self.quiet {
            return;
        }
        let (_, _, tps) = self.rates();
        self.bar.set_message(format!(
            "docs {} | tokens {} | {} tokens/s",
            self.docs,
            human(self.tokens as f64),
            human(tps)
        ));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_durations_read_well() {
        assert_eq!((human(950.0), human(12_345.0), human(4_560_000.0)), ("950".into(), "12.3k".into(), "4.56M".into()));
        assert_eq!((duration(42.4), duration(185.0), duration(7620.0)), ("42s".into(), "3m05s".into(), "2h07m".into()));
    }

    #[test]
    fn the_log_line_has_a_rate_and_an_eta_towards_max_tokens() {
        let mut p = Progress::new(3, true, Duration::from_secs(10));
        p.max_tokens = Some(1_000_000);
        p.tokens = 5_000;
        std::thread::sleep(Duration::from_millis(20));
        let line = p.line();
        assert!(line.contains("tokens/s | ETA ") && !line.contains("0.00M"), "{line}");
        p.max_tokens = None;
        assert!(!p.line().contains("ETA"), "no file done yet: no ETA: {}", p.line());
        p.files_done = 1;
        assert!(p.line().contains("ETA "), "{}", p.line());
    }
}
