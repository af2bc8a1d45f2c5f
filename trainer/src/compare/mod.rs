//! `trainer compare`: turns `trainer train` run directories into an optimizer-comparison report.
//!
//! ```text
//! trainer compare runs/adamw-1e-3 runs/hybrid-m1e-3-a1e-4 ... --out report [--title TEXT]
//! ```
//!
//! Reads each run's `config.resolved.toml` and `metrics.jsonl` ([`runs`]), picks the target
//! loss = the best final val loss among the baseline runs and finds when every run first reaches
//! it ([`target`]), and writes into `--out`:
//! - `summary.md`: the table (also printed on stdout) and the per-run settings ([`table`]);
//! - `summary.json`: the same numbers, unrounded;
//! - `val_loss_vs_tokens.png` and `val_loss_vs_tokens_zoom.png` ([`chart`]).
//!
//! Baselines: runs whose optimizer is `adamw` (AdamW-only), or with `--baseline-prefix P` the
//! runs whose label (directory name) starts with P.
//!
//! Incomplete runs: a run that has not trained all its configured steps is reported with
//! "(unfinished)" and a warning. A run directory without a readable `config.resolved.toml` or
//! `metrics.jsonl`, or without eval records, is an error; with `--skip-incomplete` such runs,
//! and unfinished ones, are skipped with a warning instead. A directory that does not exist is
//! always an error (a typo is not an incomplete run).

pub mod chart;
pub mod runs;
pub mod table;
pub mod target;

use std::path::{Path, PathBuf};

use crate::metrics::MetricsError;

pub use runs::{read_run, Run};
pub use table::Summary;
pub use target::{pick_target, tokens_to_reach, Target};

pub const SUMMARY_MD: &str = "summary.md";
pub const SUMMARY_JSON: &str = "summary.json";

#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    #[error("{path}: no such run directory")]
    MissingDir { path: PathBuf },
    /// Reading a run's files (I/O, a bad `metrics.jsonl` line) or drawing a chart: the errors of
    /// the metrics module, which writes those files.
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    #[error("{path}: {what}")]
    Config { path: PathBuf, what: String },
    #[error("{path}: no eval records (\"kind\":\"eval\"): the run has not evaluated yet")]
    NoEvals { path: PathBuf },
    #[error("writing {path}: {what}")]
    Write { path: PathBuf, what: String },
    #[error("no run to compare{0}")]
    NoRuns(String),
}

impl CompareError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        MetricsError::io(path, source).into()
    }
}

/// Flags of `trainer compare`.
#[derive(Debug, Clone, clap::Args)]
pub struct CompareArgs {
    /// Run directories written by `trainer train` (each with metrics.jsonl and config.resolved.toml).
    #[arg(required = true, value_name = "RUN_DIR")]
    pub runs: Vec<PathBuf>,
    /// Directory for summary.md, summary.json and the PNG charts (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Baseline runs are those whose label (directory name) starts with this; default: the runs
    /// whose optimizer is adamw (AdamW-only).
    #[arg(long, value_name = "PREFIX")]
    pub baseline_prefix: Option<String>,
    /// Title of the charts and of summary.md. [default: "Validation loss vs training tokens"]
    #[arg(long, value_name = "TEXT")]
    pub title: Option<String>,
    /// Skip runs that cannot be compared yet, with a warning: runs without a readable config or
    /// metrics.jsonl or without eval records (an error without this flag), and unfinished runs
    /// (fewer steps than configured; without this flag they are compared, marked "(unfinished)").
    /// A missing directory is always an error.
    #[arg(long)]
    pub skip_incomplete: bool,
}

/// What `run` produced: the summary and the text printed on stdout.
pub struct CompareOutcome {
    pub summary: Summary,
    pub printed: String,
    pub warnings: Vec<String>,
}

/// Reads the runs, writes the report into `--out`, returns the table to print.
pub fn run(args: &CompareArgs) -> Result<CompareOutcome, CompareError> {
    // ---- read the runs (skipping or failing on incomplete ones) -------------------------------
    let mut warnings = Vec::new();
    let mut runs = Vec::new();
    for dir in &args.runs {
        match read_run(dir) {
            Ok(r) if !r.finished() && args.skip_incomplete => {
                warnings.push(format!(
                    "{}: skipped: unfinished (step {} of {})",
                    dir.display(),
                    r.last_step,
                    r.config.steps
                ));
            }
            Ok(r) => {
                if !r.finished() {
                    warnings.push(format!(
                        "{}: unfinished (step {} of {}): its numbers are not final",
                        dir.display(),
                        r.last_step,
                        r.config.steps
                    ));
                }
                runs.push(r);
            }
            Err(e @ CompareError::MissingDir { .. }) => return Err(e),
            Err(e) if args.skip_incomplete => warnings.push(format!("skipped: {e}")),
            Err(e) => return Err(e),
        }
    }
    if runs.is_empty() {
        return Err(CompareError::NoRuns(if warnings.is_empty() {
            String::new()
        } else {
            format!(": {}", warnings.join("; "))
        }));
    }
    disambiguate_labels(&mut runs);
    let models: std::collections::BTreeSet<&str> = runs.iter().map(|r| r.config.model.as_str()).collect();
    if models.len() > 1 {
        warnings.push(format!(
            "the runs train different models ({}): their tokens to the target are not comparable",
            models.into_iter().collect::<Vec<_>>().join(", ")
        ));
    }
    for w in &warnings {
        tracing::warn!("{w}");
    }

    // ---- target: best final val loss among the baselines --------------------------------------
    let is_baseline = |r: &Run| match &args.baseline_prefix {
        Some(p) => r.label.starts_with(p.as_str()),
        None => r.config.optimizer == "adamw",
    };
    let finals: Vec<_> = runs
        .iter()
        .filter(|r| is_baseline(r))
        .map(|r| (r.label.as_str(), r.final_val_loss(), r.final_eval_tokens()))
        .collect();
    let target = pick_target(&finals);

    // ---- report: summary.md, summary.json, charts ---------------------------------------------
    let title = args.title.clone().unwrap_or_else(|| "Validation loss vs training tokens".to_string());
    let summary = table::summarize(&title, &runs, &is_baseline, target.as_ref());
    std::fs::create_dir_all(&args.out).map_err(|e| CompareError::io(&args.out, e))?;
    let command = command_line(args);
    write_file(&args.out.join(SUMMARY_MD), &table::summary_markdown(&summary, &command, &warnings))?;
    let json = serde_json::to_string_pretty(&summary)
        .map_err(|e| CompareError::Write { path: args.out.join(SUMMARY_JSON), what: e.to_string() })?;
    write_file(&args.out.join(SUMMARY_JSON), &format!("{json}\n"))?;
    let series: Vec<chart::Series> = runs
        .iter()
        .map(|r| chart::Series { label: r.label.clone(), points: r.curve(), baseline: is_baseline(r) })
        .collect();
    chart::write_charts(&args.out, &title, &series, target.as_ref())?;

    let printed = format!("{}\n\n{}", table::target_line(&summary), table::markdown_table(&summary));
    Ok(CompareOutcome { summary, printed, warnings })
}

/// Two directories with the same name (e.g. the same grid point of two studies) get their
/// parent's name in front: `130m/adamw-1e-3`.
fn disambiguate_labels(runs: &mut [Run]) {
    let names: Vec<String> = runs.iter().map(|r| r.label.clone()).collect();
    for r in runs.iter_mut() {
        if names.iter().filter(|n| **n == r.label).count() > 1 {
            let parent = r
                .dir
                .canonicalize()
                .ok()
                .and_then(|p| p.parent().and_then(|p| p.file_name()).map(|n| n.to_string_lossy().into_owned()));
            if let Some(parent) = parent {
                r.label = format!("{parent}/{}", r.label);
            }
        }
    }
}

/// The invocation, for the record in summary.md.
fn command_line(args: &CompareArgs) -> String {
    let mut parts = vec!["trainer compare".to_string()];
    parts.extend(args.runs.iter().map(|p| p.display().to_string()));
    parts.push(format!("--out {}", args.out.display()));
    if let Some(p) = &args.baseline_prefix {
        parts.push(format!("--baseline-prefix {p}"));
    }
    if let Some(t) = &args.title {
        parts.push(format!("--title '{t}'"));
    }
    if args.skip_incomplete {
        parts.push("--skip-incomplete".to_string());
    }
    parts.join(" ")
}

/// Writes through a temporary file and a rename, so a reader never sees half a file.
fn write_file(path: &Path, text: &str) -> Result<(), CompareError> {
    mamba_shards::fsutil::atomic_write(path, text.as_bytes())
        .map_err(|e| CompareError::Write { path: path.into(), what: e.to_string() })
}
