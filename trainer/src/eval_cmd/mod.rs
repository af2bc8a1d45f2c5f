//! `trainer eval`: the validation loss and perplexity of a checkpoint on shard files, so that
//! others can reproduce a run's numbers.
//!
//! ```text
//! trainer eval --checkpoint runs/tiny --data data/mini                  # the val shards
//! trainer eval --checkpoint runs/tiny/ckpt-000400 --data data/mini --split train --max-chunks 64
//! # Parquet text: the pipeline cuts all of it into val shards, then eval reads those.
//! pipeline --input corpus/tinyshakespeare.parquet --data-dir data/shakespeare --val-tokens 1000000000000
//! trainer eval --checkpoint runs/tiny --data data/shakespeare --json
//! ```
//!
//! The loss is the one the training loop logs (`train/eval.rs`): mean next-token cross-entropy
//! over chunks, inputs `chunk[..n-1]`, targets `chunk[1..]`. On a run's own data dir with
//! `--max-chunks` = its `--eval-chunks` (and the same `--micro-batch` and `--dtype`) it
//! reproduces the logged val loss. Files: [`data_source`] (what `--data` is), [`shard_chunks`],
//! [`report`].

pub mod data_source;
pub mod report;
pub mod shard_chunks;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use mamba_shards::format::Split;
use mamba_shards::shard_params::seq_len_for;

use crate::checkpoint::trainer_state::TRAINER_STATE_FILE;
use crate::checkpoint::{load_model, params_from_loaded};
use crate::generate::resolve_checkpoint_dir;
use crate::model::MambaLM;
use crate::train::eval::eval_loss;
pub use report::EvalReport;

#[derive(Debug, Clone, clap::Args)]
pub struct EvalArgs {
    /// Checkpoint directory (model.safetensors + config.json), or a run directory (its newest checkpoint).
    #[arg(long, value_name = "DIR")]
    pub checkpoint: PathBuf,
    /// A shard directory or a shard file (parquet text: make val shards of it with `pipeline --input TEXT --val-tokens 1000000000000`).
    #[arg(long, value_name = "DIR_OR_SHARD")]
    pub data: PathBuf,
    /// Which shards of a shard directory to evaluate on [default: val].
    #[arg(long, value_enum)]
    pub split: Option<SplitArg>,
    /// Evaluate on the first N chunks only (default: all). A run's logged val loss uses its --eval-chunks.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_chunks: Option<u64>,
    /// Chunks per forward pass (memory vs speed; the loss does not depend on it beyond rounding). Allowed: 1..=65536.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=crate::config::size_limits::MAX_MICRO_BATCH as u64))]
    pub micro_batch: u64,
    /// Tokens per sequence: a check that the shards' chunks hold seq_len + 1 tokens [default: the shards']. Allowed: 1..=1048576.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1 << 20))]
    pub seq_len: Option<u64>,
    /// cpu or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Compute dtype: f32, or bf16 (mixed precision, as `train --dtype bf16`; use the run's to reproduce its logged loss).
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// Print one JSON object (loss, perplexity, tokens, chunks, seq_len, dtype, step, checkpoint, data, split) instead of the human line.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SplitArg {
    Val,
    Train,
}

impl From<SplitArg> for Split {
    fn from(s: SplitArg) -> Split {
        match s {
            SplitArg::Val => Split::Val,
            SplitArg::Train => Split::Train,
        }
    }
}

/// The `eval` subcommand: the report to print.
pub fn run(args: &EvalArgs) -> Result<EvalReport> {
    // ---- the checkpoint: config + weights, resolved and loaded as `generate` does ---------------
    let device = crate::device::parse_device(&args.device)?;
    let dtype = crate::device::parse_dtype(&args.dtype, &device)?;
    let dir = resolve_checkpoint_dir(&args.checkpoint)?;
    let step = checkpoint_step(&dir);
    let (cfg, params) = params_from_loaded(load_model(&dir)?, &device)?;
    let model = MambaLM::new(&cfg, params.var_builder(&device))?.with_compute_dtype(dtype)?;
    tracing::info!(
        "checkpoint {} (step {}): d_model {} n_layer {} vocab {}",
        dir.display(),
        step.map_or("?".into(), |s| s.to_string()),
        cfg.d_model,
        cfg.n_layer,
        cfg.padded_vocab()
    );

    // ---- the data: the shards of one split, or one shard file -----------------------------------
    let split = args.split.map(Split::from);
    let seq_len = args.seq_len.map(|s| s as usize);
    let mut source = data_source::open(&args.data, split, seq_len, cfg.padded_vocab())?;
    tracing::info!("data {}: {}", args.data.display(), source.describe());
    let limit = args.max_chunks.unwrap_or(u64::MAX);
    let bar = progress_bar(source.total_chunks().min(limit))?;

    // ---- the loop: micro-batches of chunks → the mean loss of every target token ---------------
    let micro_batch = args.micro_batch as usize;
    crate::config::size_limits::check_logits(
        micro_batch,
        source.chunk_tokens().saturating_sub(1),
        cfg.padded_vocab(),
        args.device == "cpu",
    )?;
    let (mut sum, mut chunks) = (0f64, 0u64);
    let mut batch: Vec<Vec<u32>> = Vec::with_capacity(micro_batch);
    loop {
        while batch.len() < micro_batch && chunks + (batch.len() as u64) < limit {
            match source.next_chunk()? {
                Some(chunk) => batch.push(chunk),
                None => break,
            }
        }
        if batch.is_empty() {
            break;
        }
        // Every chunk has the same length, so the mean over chunks is the mean over tokens.
        let mean = eval_loss(&model, &batch, batch.len(), &device)?.context("an empty batch")?;
        sum += mean * batch.len() as f64;
        chunks += batch.len() as u64;
        bar.inc(batch.len() as u64);
        batch.clear();
    }
    bar.finish_and_clear();
    anyhow::ensure!(
        chunks > 0,
        "{}: no whole chunk of {} tokens to evaluate on",
        args.data.display(),
        source.chunk_tokens()
    );

    // ---- the report -----------------------------------------------------------------------------
    let loss = sum / chunks as f64;
    let seq_len = seq_len_for(source.chunk_tokens());
    Ok(EvalReport {
        loss,
        perplexity: loss.exp(),
        tokens: chunks * seq_len as u64,
        chunks,
        seq_len,
        dtype: args.dtype.clone(),
        step,
        checkpoint: dir,
        data: args.data.clone(),
        split: source.split().map(|s| s.to_string()),
    })
}

/// The checkpoint's step from its `trainer_state.json`, if it has one (a Hub or exported
/// checkpoint has none). Only the `step` field is read, so older states still give it.
fn checkpoint_step(dir: &Path) -> Option<u64> {
    let path = dir.join(TRAINER_STATE_FILE);
    let text = std::fs::read_to_string(&path).ok()?;
    let step = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v.get("step").and_then(serde_json::Value::as_u64));
    if step.is_none() {
        tracing::warn!("{}: no readable `step`; the report leaves it out", path.display());
    }
    step
}

/// A bar over chunks on stderr (hidden when stderr is not a terminal).
fn progress_bar(total: u64) -> Result<ProgressBar> {
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("eval {elapsed_precise} [{bar:30}] {pos}/{len} chunks  {per_sec}  eta {eta}")?
            .progress_chars("=> "),
    );
    Ok(bar)
}
