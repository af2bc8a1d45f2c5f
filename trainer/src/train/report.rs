//! The training loop's reporting: one fixed-format log line per step, eval lines, and the
//! metrics files (through `crate::metrics`).

use std::time::Duration;

use anyhow::Result;

use super::step::StepResult;
use crate::config::TrainConfig;

pub struct Report {
    total_steps: usize,
}

impl Report {
    pub fn open(cfg: &TrainConfig, _start_step: usize) -> Result<Report> {
        Ok(Report { total_steps: cfg.steps })
    }

    #[allow(clippy::too_many_arguments)]
    pub fn step(&mut self, step: usize, _tokens: u64, r: &StepResult, step_tokens: u64, elapsed: Duration, wait: Duration, status: &str) -> Result<()> {
        let secs = elapsed.as_secs_f64().max(1e-9);
        tracing::info!(
            "step {step:>6}/{} | loss {:.4} | lr {:.2e}/{:.2e} | gnorm {:.3} | {:>8.0} tok/s | {:>7.1} ms | wait {:>6.1} ms | {status}",
            self.total_steps, r.loss, r.optim.lr_muon, r.optim.lr_adamw, r.grad_norm,
            step_tokens as f64 / secs, secs * 1e3, wait.as_secs_f64() * 1e3
        );
        Ok(())
    }

    pub fn eval(&mut self, step: usize, _tokens: u64, loss: f64, chunks: usize, elapsed: Duration) -> Result<()> {
        tracing::info!("eval step {step:>6} | val loss {loss:.4} | {chunks} chunks | {:.1} s", elapsed.as_secs_f64());
        Ok(())
    }

    pub fn finish(&mut self) -> Result<()> {
        Ok(())
    }
}
