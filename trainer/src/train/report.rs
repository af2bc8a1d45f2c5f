//! The training loop's reporting: the fixed-format log line per step (`metrics::format_step_line`)
//! and the metrics files (JSONL, TensorBoard, loss.png) through `metrics::MetricsWriter`.

use std::time::Duration;

use anyhow::Result;

use super::step::StepResult;
use crate::config::TrainConfig;
use crate::data::ValChunks;
use crate::metrics::{format_step_line, EvalMetrics, MetricsWriter, StepMetrics};

pub struct Report {
    writer: MetricsWriter,
}

impl Report {
    /// `resume_step`: the checkpoint's step when resuming (later records of a killed run are dropped).
    pub fn open(cfg: &TrainConfig, resume_step: Option<usize>) -> Result<Report> {
        Ok(Report { writer: MetricsWriter::open(&cfg.out, resume_step.map(|s| s as u64))? })
    }

    #[allow(clippy::too_many_arguments)]
    pub fn step(&mut self, step: usize, tokens: u64, r: &StepResult, step_tokens: u64, elapsed: Duration, wait: Duration, status: &str, chunks: Vec<[u64; 2]>) -> Result<()> {
        let secs = elapsed.as_secs_f64().max(1e-9);
        let m = StepMetrics {
            step: step as u64,
            loss: r.loss,
            lr_muon: r.optim.lr_muon,
            lr_adamw: r.optim.lr_adamw,
            grad_norm: r.grad_norm,
            tokens_per_sec: step_tokens as f64 / secs,
            step_ms: secs * 1e3,
            data_wait_ms: wait.as_secs_f64() * 1e3,
            tokens,
            fwd_ms: Some(r.fwd_ms),
            bwd_ms: Some(r.bwd_ms),
            opt_ms: Some(r.opt_ms),
            chunks,
        };
        self.writer.log_step(&m)?;
        tracing::info!("{}", format_step_line(&m, status));
        Ok(())
    }

    pub fn eval(&mut self, step: usize, tokens: u64, loss: f64, set: &ValChunks, elapsed: Duration) -> Result<()> {
        let chunks = set.chunks.len();
        let m = EvalMetrics { step: step as u64, tokens, val_loss: loss, val_ppl: loss.exp() };
        self.writer.log_eval_on(&m, chunks as u64, &set.digest)?;
        tracing::info!("eval step {step:>5} | val loss {loss:.4} | ppl {:.2} | {chunks} chunks (set {}) | {:.1} s", loss.exp(), set.digest, elapsed.as_secs_f64());
        Ok(())
    }

    /// Makes the metrics durable; called with every checkpoint and at the end.
    pub fn flush(&mut self) -> Result<()> {
        Ok(self.writer.flush()?)
    }
}
