//! The training loop's reporting: on a terminal the progress display (`metrics::progress`),
//! otherwise the fixed-format log line per step (`metrics::format_step_line`); and the metrics
//! files (JSONL, TensorBoard, loss.png) through `metrics::MetricsWriter`.

use std::time::Duration;

use anyhow::Result;

use super::step::StepResult;
use crate::config::TrainConfig;
use crate::data::ValChunks;
use crate::metrics::mfu::{mfu, Peak};
use crate::metrics::progress::{on_terminal, StepProgress};
use crate::metrics::{format_step_line, EvalMetrics, MetricsWriter, SampleMetrics, StepMetrics};

pub struct Report {
    writer: MetricsWriter,
    /// Bad chunks skipped for the next step record (see [`Report::skipped_chunks`]).
    skipped: u64,
    progress: Option<StepProgress>,
    /// The model's parameters, the device's peak and the number of ranks, for each step's MFU
    /// (of one device: the step's tokens/s are over all ranks).
    n_params: u64,
    peak: Option<Peak>,
    world: usize,
}

impl Report {
    /// `resume_step`: the checkpoint's step when resuming (later records of a killed run are
    /// dropped). The MFU of every step is of `n_params` on each of `world` ranks against
    /// `--peak-tflops` or `device`'s default peak, named here once in the log.
    pub fn open(
        cfg: &TrainConfig,
        resume_step: Option<usize>,
        n_params: usize,
        device: &candle_core::Device,
        world: usize,
    ) -> Result<Report> {
        let writer = MetricsWriter::open(&cfg.out, resume_step.map(|s| s as u64))?;
        let peak = Peak::for_device(device, cfg.peak_tflops);
        let per = if world > 1 { format!(" ÷ {world} ranks") } else { String::new() };
        match &peak {
            Some(p) => tracing::info!("MFU = 6 × {n_params} params × tokens/s{per} ÷ {}", p.describe()),
            None => tracing::info!("MFU n/a: no peak for cpu (--peak-tflops to set one)"),
        }
        Ok(Report { writer, skipped: 0, progress: None, n_params: n_params as u64, peak, world: world.max(1) })
    }

    /// Shows the progress display when stdout and stderr are terminals.
    pub fn start_progress(&mut self, cfg: &TrainConfig, start_step: usize) {
        if on_terminal() {
            self.progress = Some(StepProgress::start(start_step as u64, cfg.steps as u64));
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub fn step(
        &mut self,
        step: usize,
        tokens: u64,
        r: &StepResult,
        step_tokens: u64,
        elapsed: Duration,
        wait: Duration,
        status: &str,
        chunks: Vec<[u64; 2]>,
    ) -> Result<()> {
        let secs = elapsed.as_secs_f64().max(1e-9);
        let tokens_per_sec = step_tokens as f64 / secs;
        let m = StepMetrics {
            step: step as u64,
            loss: r.loss,
            lr_muon: r.optim.lr_muon,
            lr_adamw: r.optim.lr_adamw,
            grad_norm: r.grad_norm,
            tokens_per_sec,
            mfu: mfu(self.n_params, tokens_per_sec / self.world as f64, self.peak.as_ref()),
            step_ms: secs * 1e3,
            data_wait_ms: wait.as_secs_f64() * 1e3,
            tokens,
            fwd_ms: Some(r.fwd_ms),
            bwd_ms: Some(r.bwd_ms),
            opt_ms: Some(r.opt_ms),
            chunks,
            skipped_chunks: std::mem::take(&mut self.skipped),
        };
        self.writer.log_step(&m)?;
        match &self.progress {
            Some(p) => {
                p.update(&m);
                tracing::debug!("{}", format_step_line(&m, status));
            }
            None => tracing::info!("{}", format_step_line(&m, status)),
        }
        Ok(())
    }

    /// `--on-bad-chunk skip`: `n` bad chunks were left out while the coming step's batches were
    /// gathered; the next step record carries the count (`skipped_chunks`).
    pub fn skipped_chunks(&mut self, n: usize) {
        self.skipped += n as u64;
    }

    pub fn eval(&mut self, step: usize, tokens: u64, loss: f64, set: &ValChunks, elapsed: Duration) -> Result<()> {
        let chunks = set.chunks.len();
        let m = EvalMetrics { step: step as u64, tokens, val_loss: loss, val_ppl: loss.exp() };
        self.writer.log_eval_on(&m, chunks as u64, &set.digest)?;
        tracing::info!(
            "eval step {step:>5} | val loss {loss:.4} | ppl {:.2} | {chunks} chunks (set {}) | {:.1} s",
            loss.exp(),
            set.digest,
            elapsed.as_secs_f64()
        );
        Ok(())
    }

    /// A sample generated from `prompt` (`--sample-every`): logged, in metrics.jsonl and TensorBoard.
    pub fn sample(&mut self, step: usize, prompt: &str, text: &str) -> Result<()> {
        self.writer.log_sample(&SampleMetrics {
            step: step as u64,
            prompt: prompt.to_string(),
            text: text.to_string(),
        })?;
        tracing::info!("sample step {step:>5} | {:?}", format!("{prompt}{text}"));
        Ok(())
    }

    /// Makes the metrics durable; called with every checkpoint and at the end.
    pub fn flush(&mut self) -> Result<()> {
        Ok(self.writer.flush()?)
    }
}
