//! The progress display of `trainer train` on a terminal, one line of at most 120 columns:
//!
//! ```text
//! [=======>      ]   120/1000  12% ETA 00:03:12 | 12.3k tok/s | MFU n/a | loss 5.4321 | lr muon 2.9e-3 adamw 2.9e-3
//! ```
//!
//! MFU is the step record's (`super::mfu`: 6 × parameters × tokens/s ÷ the device's dense peak,
//! `--peak-tflops` or 989 TFLOP/s on CUDA; n/a on the CPU). Without a terminal there is no
//! display and the training loop logs its fixed-format line per step instead
//! (`super::format_step_line`); metrics.jsonl holds the full record either way.
//!
//! While the display is shown, log lines go through [`BarAwareStdout`], which lifts the display,
//! prints the line and redraws it, so the two never garble each other.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::StepMetrics;

/// The display shown now, if any (log lines are printed around it).
static ACTIVE: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// Columns of the display before the message, with six-digit step counts: "[" + 14 + "] " +
/// "123456/123456 " + "100% " + "ETA 00:00:00 | " = 51, and one to spare.
const PREFIX_COLUMNS: usize = 52;
/// The widest the display may be.
pub const MAX_COLUMNS: usize = 120;

/// True when the display can be shown: stdout (the log) and stderr (the display) are terminals.
pub fn on_terminal() -> bool {
    std::io::stdout().is_terminal() && std::io::stderr().is_terminal()
}

pub struct StepProgress {
    bar: ProgressBar,
}

impl StepProgress {
    /// Shows the display at `start_step` of `total_steps` (a resumed run starts part-way).
    pub fn start(start_step: u64, total_steps: u64) -> StepProgress {
        let bar = ProgressBar::with_draw_target(Some(total_steps), ProgressDrawTarget::stderr_with_hz(4));
        let style =
            ProgressStyle::with_template("[{bar:14}] {pos:>6}/{len:<6} {percent:>3}% ETA {eta_precise} | {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
        bar.set_style(style);
        bar.set_position(start_step);
        bar.reset_eta();
        bar.set_message("waiting for the first step");
        if let Ok(mut active) = ACTIVE.lock() {
            *active = Some(bar.clone());
        }
        StepProgress { bar }
    }

    pub fn update(&self, m: &StepMetrics) {
        self.bar.set_position(m.step);
        self.bar.set_message(progress_message(m));
    }
}

impl Drop for StepProgress {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
        if let Ok(mut active) = ACTIVE.lock() {
            *active = None;
        }
    }
}

/// `12.3k`, `950`, `1.23M`.
fn human(x: f64) -> String {
    match x {
        x if x >= 1e6 => format!("{:.2}M", x / 1e6),
        x if x >= 1e4 => format!("{:.1}k", x / 1e3),
        x => format!("{x:.0}"),
    }
}

/// The part of the display after the ETA, e.g.
/// `12.3k tok/s | MFU 41.2% | loss 5.4321 | lr muon 2.9e-3 adamw 2.9e-3`.
pub fn progress_message(m: &StepMetrics) -> String {
    let msg = format!(
        "{} tok/s | MFU {} | loss {:.4} | lr muon {:.1e} adamw {:.1e}",
        human(m.tokens_per_sec),
        super::mfu::percent(m.mfu),
        m.loss,
        m.lr_muon,
        m.lr_adamw
    );
    // Never wider than the display allows (absurd values would be: cut, not wrapped).
    msg.chars().take(MAX_COLUMNS - PREFIX_COLUMNS).collect()
}

/// A `tracing` writer to stdout that prints around the progress display when one is shown.
pub struct BarAwareStdout;

/// One log event, buffered, written when dropped.
pub struct BarAwareLine(Vec<u8>);

impl Write for BarAwareLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for BarAwareLine {
    fn drop(&mut self) {
        let bar = ACTIVE.lock().ok().and_then(|a| a.clone());
        let write = || {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(&self.0);
            let _ = out.flush();
        };
        match bar {
            Some(bar) => bar.suspend(write),
            None => write(),
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for BarAwareStdout {
    type Writer = BarAwareLine;

    fn make_writer(&'a self) -> Self::Writer {
        BarAwareLine(Vec::new())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn metrics(tokens_per_sec: f64, loss: f64, lr: f64) -> StepMetrics {
        StepMetrics {
            step: 1,
            loss,
            lr_muon: lr,
            lr_adamw: lr / 10.0,
            grad_norm: 1.0,
            tokens_per_sec,
            mfu: None,
            step_ms: 1.0,
            data_wait_ms: 0.0,
            tokens: 1,
            fwd_ms: None,
            bwd_ms: None,
            opt_ms: None,
            chunks: Vec::new(),
            skipped_chunks: 0,
        }
    }

    #[test]
    fn message_shows_rate_mfu_loss_and_both_learning_rates() {
        let m = metrics(12_345.0, 5.43214, 3e-3);
        assert_eq!(progress_message(&m), "12.3k tok/s | MFU n/a | loss 5.4321 | lr muon 3.0e-3 adamw 3.0e-4");
        // 6 × 129.1M params × 229k tok/s over 989 TFLOPS = 17.9% (`super::mfu`).
        let peak = crate::metrics::mfu::Peak { tflops: 989.0, source: "H100".into() };
        let m = StepMetrics {
            mfu: crate::metrics::mfu::mfu(129_123_072, 229_000.0, Some(&peak)),
            ..metrics(229_000.0, 3.0, 1e-3)
        };
        assert_eq!(progress_message(&m), "229.0k tok/s | MFU 17.9% | loss 3.0000 | lr muon 1.0e-3 adamw 1.0e-4");
    }

    #[test]
    fn the_display_fits_120_columns_even_with_extreme_values() {
        for m in [
            metrics(9.99e9, -123456.789, 1.5e-12),
            metrics(f64::NAN, f64::INFINITY, f64::NAN),
            metrics(950.0, 10.0, 0.0),
        ] {
            let msg = progress_message(&StepMetrics { mfu: Some(f64::MAX), ..m });
            assert!(msg.chars().count() + PREFIX_COLUMNS <= MAX_COLUMNS, "{msg}");
        }
    }
}
