//! Reading a `trainer train` run directory for `trainer compare`: its `config.resolved.toml`
//! (optimizer, learning rates, model, batch layout, seed, and the git commit from the header
//! comment `# trainer 0.1.0 (git abc123)`) and its `metrics.jsonl` (the `"kind":"step"` records
//! give the steps and tokens trained, the `"kind":"eval"` records the val-loss curve).
//!
//! Reading is strict: a line that is not a JSON object, or an eval/step record without its
//! numbers, is an error naming the file and the line.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use super::CompareError;
use crate::config::batch::batch_target;
use crate::config::MicroBatch;
use crate::metrics::{MetricsError, METRICS_FILE};

pub const CONFIG_FILE: &str = "config.resolved.toml";

/// The settings of a run that the comparison reports.
#[derive(Debug, Clone, PartialEq)]
pub struct RunConfig {
    /// `hybrid` or `adamw`.
    pub optimizer: String,
    pub muon_lr: f64,
    pub adamw_lr: f64,
    pub model: String,
    /// Shard directory (`--data`).
    pub data: String,
    /// Configured total steps (`--steps`).
    pub steps: u64,
    /// Sequences per optimizer step over all ranks (`None`: the config's batch keys contradict).
    pub batch_size: Option<u64>,
    /// Per device; `None` while `--micro-batch auto` was not resolved (a run that never started).
    pub micro_batch: Option<u64>,
    pub grad_accum: Option<u64>,
    pub seed: u64,
    /// Git commit of the trainer that wrote the config, from its first line.
    pub git: Option<String>,
}

/// The fields of `config.resolved.toml` we need; the others are ignored, so configs written by
/// older or newer trainers still read.
#[derive(Deserialize)]
struct ResolvedFields {
    optimizer: String,
    muon_lr: f64,
    adamw_lr: f64,
    model: String,
    data: String,
    steps: u64,
    #[serde(default)]
    batch_size: Option<usize>,
    #[serde(default)]
    micro_batch: MicroBatch,
    #[serde(default)]
    grad_accum: Option<usize>,
    #[serde(default)]
    devices: Option<String>,
    seed: u64,
}

/// One evaluation: training tokens seen so far and the validation loss.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EvalPoint {
    pub step: u64,
    pub tokens: u64,
    pub val_loss: f64,
}

/// A run as read from its directory.
#[derive(Debug, Clone)]
pub struct Run {
    /// The directory name (made unique by `compare` when two directories share a name).
    pub label: String,
    pub dir: PathBuf,
    pub config: RunConfig,
    /// Eval records in file order (the trainer writes them in step order).
    pub evals: Vec<EvalPoint>,
    /// Last step record's step and tokens (0 when there is none).
    pub last_step: u64,
    pub tokens_trained: u64,
}

impl Run {
    /// The last eval's loss (`evals` is never empty for a run returned by [`read_run`]).
    pub fn final_val_loss(&self) -> f64 {
        self.evals.last().map_or(f64::NAN, |e| e.val_loss)
    }

    pub fn final_eval_tokens(&self) -> u64 {
        self.evals.last().map_or(0, |e| e.tokens)
    }

    pub fn best_val_loss(&self) -> f64 {
        self.evals.iter().map(|e| e.val_loss).fold(f64::INFINITY, f64::min)
    }

    /// The run trained all its configured steps.
    pub fn finished(&self) -> bool {
        self.last_step >= self.config.steps
    }

    /// (tokens, val loss) of every eval, for interpolation and plotting.
    pub fn curve(&self) -> Vec<(f64, f64)> {
        self.evals.iter().map(|e| (e.tokens as f64, e.val_loss)).collect()
    }
}

/// Reads `dir/config.resolved.toml` and `dir/metrics.jsonl`; a run without eval records is an
/// error ([`CompareError::NoEvals`]).
pub fn read_run(dir: &Path) -> Result<Run, CompareError> {
    if !dir.is_dir() {
        return Err(CompareError::MissingDir { path: dir.into() });
    }
    let config = read_config(&dir.join(CONFIG_FILE))?;
    let metrics_path = dir.join(METRICS_FILE);
    let (evals, last_step, tokens_trained) = read_metrics(&metrics_path)?;
    let Some(last_eval) = evals.last().copied() else {
        return Err(CompareError::NoEvals { path: metrics_path });
    };
    // A log holding only eval records still says how far the run got.
    let (last_step, tokens_trained) = (last_step.max(last_eval.step), tokens_trained.max(last_eval.tokens));
    let label = dir
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| dir.display().to_string());
    Ok(Run { label, dir: dir.into(), config, evals, last_step, tokens_trained })
}

/// Parses a resolved config; the git commit comes from the header comment when present.
pub fn read_config(path: &Path) -> Result<RunConfig, CompareError> {
    let text = std::fs::read_to_string(path).map_err(|e| CompareError::io(path, e))?;
    let f: ResolvedFields =
        toml::from_str(&text).map_err(|e| CompareError::Config { path: path.into(), what: e.to_string() })?;
    let git = text
        .lines()
        .next()
        .and_then(|l| l.split_once("(git "))
        .and_then(|(_, rest)| rest.split_once(')'))
        .map(|(hash, _)| hash.to_string());
    let world = f.devices.as_deref().map_or(1, |d| d.split(',').count());
    let batch = batch_target(f.batch_size, f.micro_batch, f.grad_accum, world).ok();
    let split = batch.and_then(|t| t.fixed_split().ok().flatten());
    Ok(RunConfig {
        optimizer: f.optimizer,
        muon_lr: f.muon_lr,
        adamw_lr: f.adamw_lr,
        model: f.model,
        data: f.data,
        steps: f.steps,
        batch_size: batch.map(|t| t.batch_size as u64),
        micro_batch: split.map(|s| s.micro_batch as u64),
        grad_accum: split.map(|s| s.grad_accum as u64),
        seed: f.seed,
        git,
    })
}

/// Eval points, last step and tokens of a `metrics.jsonl`.
fn read_metrics(path: &Path) -> Result<(Vec<EvalPoint>, u64, u64), CompareError> {
    let bytes = std::fs::read(path).map_err(|e| CompareError::io(path, e))?;
    let text = std::str::from_utf8(&bytes).map_err(|e| {
        CompareError::from(MetricsError::Json { path: path.into(), line: 0, what: format!("not UTF-8: {e}") })
    })?;
    let (mut evals, mut last_step, mut tokens) = (Vec::new(), 0, 0);
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let bad = |what: String| CompareError::from(MetricsError::Json { path: path.into(), line: line_no, what });
        let record: Value = serde_json::from_str(line).map_err(|e| bad(e.to_string()))?;
        let uint = |key: &str| {
            record
                .get(key)
                .and_then(Value::as_u64)
                .ok_or_else(|| bad(format!("{} record without an integer \"{key}\"", kind_of(&record))))
        };
        match record.get("kind").and_then(Value::as_str) {
            Some("eval") => {
                let val_loss = record
                    .get("val_loss")
                    .and_then(Value::as_f64)
                    .ok_or_else(|| bad("eval record without a numeric \"val_loss\"".into()))?;
                evals.push(EvalPoint { step: uint("step")?, tokens: uint("tokens")?, val_loss });
            }
            Some("step") => {
                last_step = uint("step")?;
                tokens = uint("tokens")?;
            }
            Some(_) => {}
            None if record.is_object() => return Err(bad("record without a string \"kind\"".into())),
            None => return Err(bad(format!("not a JSON object: {record}"))),
        }
    }
    Ok((evals, last_step, tokens))
}

fn kind_of(record: &Value) -> &str {
    record.get("kind").and_then(Value::as_str).unwrap_or("a")
}
