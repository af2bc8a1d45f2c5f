//! Run metrics: what the training loop reports, in four forms.
//!
//! - `run_dir/metrics.jsonl`: one line per step (`{"kind":"step",...}`) and per eval
//!   (`{"kind":"eval",...}`), with the unix `time` of the record ([`jsonl`]); in follow mode a
//!   step also lists the `chunks` it trained on.
//! - `run_dir/tb/events.out.tfevents.*`: the same scalars for `tensorboard --logdir` and
//!   `wandb sync --sync-tensorboard` ([`tensorboard`], written by hand: [`tfrecord`], [`event_proto`]).
//!   Tags: train/loss, train/lr_muon, train/lr_adamw, train/grad_norm, perf/tokens_per_sec,
//!   perf/step_ms, perf/data_wait_ms (+ perf/mfu when the device has a peak, perf/fwd_ms,
//!   perf/bwd_ms, perf/opt_ms when measured), val/loss, val/ppl; and the samples of
//!   `--sample-every` as text (tag samples/text).
//! - `run_dir/loss.png`: train and val loss against the step, and below them the learning rates
//!   and the gradient norm, drawn at the first step, redrawn at every eval, at least every
//!   [`PLOT_EVERY`] of steps, and at every flush ([`plot`]).
//! - On a terminal, a progress display of the run ([`progress`]).
//! - [`format_step_line`]: the one fixed-format log line per step.
//! - [`mfu`]: the model FLOPs utilisation of a rate, shown in all of them and by `trainer bench`.
//!
//! ```text
//! let mut metrics = MetricsWriter::open(&run_dir, resume_step)?;  // resume: drops records after resume_step
//! metrics.log_step(&StepMetrics { .. })?;   tracing::info!("{}", format_step_line(&m, &data.ring_status()));
//! metrics.log_eval(&EvalMetrics { .. })?;   // also redraws loss.png
//! metrics.flush()?;                         // fsync, e.g. with each checkpoint
//! ```

mod event_proto;
mod jsonl;
pub mod mfu;
mod plot;
mod png;
pub mod progress;
mod tensorboard;
mod tfrecord;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::Value;

pub use jsonl::read_jsonl;
pub use plot::{write_loss_png, Curves, LOSS_PLOT_HEIGHT};
pub(crate) use png::{draw_legend, legend_line, write_png, PngError, AXIS_DESC_FONT, LABEL_FONT};
pub use png::{PLOT_HEIGHT, PLOT_WIDTH};
pub use tensorboard::{read_tensorboard_scalars, TbScalar};

use jsonl::JsonlLog;
use tensorboard::EventWriter;

pub const METRICS_FILE: &str = "metrics.jsonl";
pub const PLOT_FILE: &str = "loss.png";
pub const TB_DIR: &str = "tb";
/// The longest time step records go without `loss.png` being redrawn (drawing takes tens of ms,
/// so it is not redrawn after every fast step).
pub const PLOT_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: line {line}: {what}")]
    Json { path: PathBuf, line: usize, what: String },
    #[error("{path}: bad TensorBoard event file: {what}")]
    EventFile { path: PathBuf, what: String },
    /// `loss.png` or a chart of `trainer compare`.
    #[error("{path}: cannot draw the chart: {what}")]
    Plot { path: PathBuf, what: String },
    #[error("{what}")]
    Shared { what: String },
}

impl MetricsError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        MetricsError::Io { path: path.into(), source }
    }
}

/// One optimizer step.
#[derive(Debug, Clone, Serialize)]
pub struct StepMetrics {
    pub step: u64,
    pub loss: f64,
    pub lr_muon: f64,
    pub lr_adamw: f64,
    pub grad_norm: f64,
    pub tokens_per_sec: f64,
    /// Model FLOPs utilisation of one device (`tokens_per_sec` ÷ ranks), a fraction of its peak ([`mfu`];
    /// absent when the device has none, e.g. the CPU without `--peak-tflops`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mfu: Option<f64>,
    pub step_ms: f64,
    /// Time the step spent blocked on the data loader.
    pub data_wait_ms: f64,
    /// Training tokens seen so far, this step included.
    pub tokens: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fwd_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bwd_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub opt_ms: Option<f64>,
    /// Follow mode: the chunks this step trained on, as [train shard seq, chunk index in the
    /// shard]. With the resume rule of `metrics.jsonl` (records after the checkpoint's step are
    /// dropped) the kept records list every chunk of the final model's history exactly once.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub chunks: Vec<[u64; 2]>,
    /// Static mode, `--on-bad-chunk skip`: corrupt chunks left out while this step's batches
    /// were gathered (absent when none); their sum over the records is the run's total.
    #[serde(skip_serializing_if = "is_zero")]
    pub skipped_chunks: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// One evaluation on the validation set.
#[derive(Debug, Clone, Serialize)]
pub struct EvalMetrics {
    pub step: u64,
    pub tokens: u64,
    pub val_loss: f64,
    pub val_ppl: f64,
}

/// A text sample generated during training (`--sample-every`).
#[derive(Debug, Clone, Serialize)]
pub struct SampleMetrics {
    pub step: u64,
    pub prompt: String,
    /// The generated continuation (without the prompt).
    pub text: String,
}

/// An eval record with the chunks it ran on: their count and a digest of their tokens
/// (`data::val_digest`); equal digests = the same fixed val set, across live, static and resumed runs.
#[derive(Debug, Clone, Serialize)]
struct EvalOn<'a> {
    #[serde(flatten)]
    metrics: &'a EvalMetrics,
    val_chunks: u64,
    val_digest: &'a str,
}

/// A JSONL line: the kind and time, then the metrics' own fields.
#[derive(Serialize)]
struct Record<'a, T: Serialize> {
    kind: &'static str,
    time: f64,
    #[serde(flatten)]
    metrics: &'a T,
}

fn unix_time() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

pub struct MetricsWriter {
    run_dir: PathBuf,
    jsonl: JsonlLog,
    tb: EventWriter,
    /// Every step and eval record so far, for the plot.
    curves: Curves,
    log_scale: bool,
    /// When loss.png was last drawn by this writer (`None`: not yet).
    plotted: Option<std::time::Instant>,
}

impl MetricsWriter {
    /// Opens the run's metrics in `run_dir` (created if missing). With `resume_from_step` = S the
    /// JSONL records of steps <= S are kept and later ones (the lost part of a killed run)
    /// dropped; either way a new TensorBoard event file is started, which tells TensorBoard to
    /// drop older events from step S + 1 on.
    pub fn open(run_dir: &Path, resume_from_step: Option<u64>) -> Result<Self, MetricsError> {
        std::fs::create_dir_all(run_dir).map_err(|e| MetricsError::io(run_dir, e))?;
        let (jsonl, kept) = JsonlLog::open(&run_dir.join(METRICS_FILE), resume_from_step)?;
        let tb = EventWriter::create(&run_dir.join(TB_DIR), resume_from_step.map_or(0, |s| s + 1))?;
        let mut c = Curves::default();
        for r in &kept {
            let step = r.get("step").and_then(Value::as_u64).unwrap_or(0);
            let point = |key: &str| r.get(key).and_then(Value::as_f64).map(|v| (step, v));
            match r.get("kind").and_then(Value::as_str) {
                Some("step") => {
                    c.train.extend(point("loss"));
                    c.lr_muon.extend(point("lr_muon"));
                    c.lr_adamw.extend(point("lr_adamw"));
                    c.grad_norm.extend(point("grad_norm"));
                }
                Some("eval") => c.val.extend(point("val_loss")),
                _ => {}
            }
        }
        tracing::info!(
            "metrics: {} ({} records kept), TensorBoard {}",
            jsonl.path().display(),
            kept.len(),
            tb.path().display()
        );
        Ok(MetricsWriter { run_dir: run_dir.into(), jsonl, tb, curves: c, log_scale: false, plotted: None })
    }

    /// Draw loss.png with a logarithmic loss axis (off by default).
    pub fn set_plot_log_scale(&mut self, on: bool) {
        self.log_scale = on;
    }

    /// The TensorBoard event file of this process.
    pub fn event_file(&self) -> &Path {
        self.tb.path()
    }

    pub fn log_step(&mut self, m: &StepMetrics) -> Result<(), MetricsError> {
        self.jsonl.append(&Record { kind: "step", time: unix_time(), metrics: m })?;
        let mut scalars = vec![
            ("train/loss", m.loss),
            ("train/lr_muon", m.lr_muon),
            ("train/lr_adamw", m.lr_adamw),
            ("train/grad_norm", m.grad_norm),
            ("perf/tokens_per_sec", m.tokens_per_sec),
            ("perf/step_ms", m.step_ms),
            ("perf/data_wait_ms", m.data_wait_ms),
        ];
        for (tag, v) in
            [("perf/mfu", m.mfu), ("perf/fwd_ms", m.fwd_ms), ("perf/bwd_ms", m.bwd_ms), ("perf/opt_ms", m.opt_ms)]
        {
            scalars.extend(v.map(|v| (tag, v)));
        }
        self.tb.scalars(m.step, &scalars)?;
        self.tb.flush(false)?;
        self.curves.train.push((m.step, m.loss));
        self.curves.lr_muon.push((m.step, m.lr_muon));
        self.curves.lr_adamw.push((m.step, m.lr_adamw));
        self.curves.grad_norm.push((m.step, m.grad_norm));
        if self.plotted.is_none_or(|t| t.elapsed() >= PLOT_EVERY) {
            self.plot()?;
        }
        Ok(())
    }

    /// Redraws `loss.png` from every record so far.
    fn plot(&mut self) -> Result<(), MetricsError> {
        self.plotted = Some(std::time::Instant::now());
        write_loss_png(&self.run_dir.join(PLOT_FILE), &self.curves, self.log_scale)
    }

    /// Logs an eval and redraws `loss.png` from every record so far.
    pub fn log_eval(&mut self, m: &EvalMetrics) -> Result<(), MetricsError> {
        self.jsonl.append(&Record { kind: "eval", time: unix_time(), metrics: m })?;
        self.eval_done(m)
    }

    /// [`MetricsWriter::log_eval`], with the val set's size and digest in the JSONL record.
    pub fn log_eval_on(&mut self, m: &EvalMetrics, val_chunks: u64, val_digest: &str) -> Result<(), MetricsError> {
        self.jsonl.append(&Record {
            kind: "eval",
            time: unix_time(),
            metrics: &EvalOn { metrics: m, val_chunks, val_digest },
        })?;
        self.eval_done(m)
    }

    fn eval_done(&mut self, m: &EvalMetrics) -> Result<(), MetricsError> {
        self.tb.scalars(m.step, &[("val/loss", m.val_loss), ("val/ppl", m.val_ppl)])?;
        self.tb.flush(false)?;
        self.curves.val.push((m.step, m.val_loss));
        self.plot()
    }

    /// Logs a generated sample: a JSONL record and a TensorBoard text summary (tag samples/text,
    /// the prompt in bold, then the continuation).
    pub fn log_sample(&mut self, m: &SampleMetrics) -> Result<(), MetricsError> {
        self.jsonl.append(&Record { kind: "sample", time: unix_time(), metrics: m })?;
        // TensorBoard renders text summaries as Markdown.
        let markdown = format!("**{}**{}", m.prompt.trim_end(), m.text);
        self.tb.text(m.step, "samples/text", &markdown)?;
        self.tb.flush(false)
    }

    /// Makes everything logged so far durable (fsync); call it with every checkpoint.
    pub fn flush(&mut self) -> Result<(), MetricsError> {
        if !self.curves.train.is_empty() || !self.curves.val.is_empty() {
            self.plot()?;
        }
        self.jsonl.sync()?;
        self.tb.flush(true)
    }
}

/// `1.00e-03`: two decimals, sign and at least two exponent digits (Rust's `{:e}` writes `1e-3`).
pub(crate) fn sci(x: f64) -> String {
    let s = format!("{x:.2e}");
    match s.split_once('e') {
        Some((mantissa, exp)) => {
            let (sign, digits) = exp.strip_prefix('-').map_or(("+", exp), |d| ("-", d));
            format!("{mantissa}e{sign}{digits:0>2}")
        }
        None => s,
    }
}

/// The one fixed-format log line of a step, e.g.
/// `step   120 | loss 5.4321 | lr 9.00e-04/9.00e-05 | gnorm 0.812 | 12345 tok/s | MFU 18.5% | 812.3 ms | wait 0.4 ms | <status>`
/// (lr = Muon/AdamW; MFU against the peak named at start, `MFU n/a` without one; when the phases
/// were timed, `| fwd 1.0 bwd 2.0 opt 0.5 ms` comes before the status).
pub fn format_step_line(m: &StepMetrics, status: &str) -> String {
    let mut line = format!(
        "step {:>5} | loss {:.4} | lr {}/{} | gnorm {:.3} | {:>5.0} tok/s | MFU {} | {:>6.1} ms | wait {:.1} ms",
        m.step,
        m.loss,
        sci(m.lr_muon),
        sci(m.lr_adamw),
        m.grad_norm,
        m.tokens_per_sec,
        mfu::percent(m.mfu),
        m.step_ms,
        m.data_wait_ms
    );
    if let (Some(f), Some(b), Some(o)) = (m.fwd_ms, m.bwd_ms, m.opt_ms) {
        line.push_str(&format!(" | fwd {f:.1} bwd {b:.1} opt {o:.1} ms"));
    }
    if !status.is_empty() {
        line.push_str(" | ");
        line.push_str(status);
    }
    line
}
