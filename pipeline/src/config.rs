//! Command line and config file. Every flag can also be given in a TOML file (`--config FILE`,
//! keys are the long flag names, e.g. `ring-slots = 3`); flags on the command line win.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(name = "pipeline", version, about = "Streams FineWeb parquet (Hub or local), tokenizes it and writes shard files", args_override_self = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print header, counts, checksum verification and a decoded sample of shard files.
    Inspect(InspectArgs),
}

#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// A shard file or a data directory.
    pub path: PathBuf,
    /// Tokenizer for the text sample (default: the one in the directory's manifest, else GPT-2).
    #[arg(long)]
    pub tokenizer: Option<String>,
    /// Tokens of decoded text to show per shard.
    #[arg(long, default_value_t = 64)]
    pub sample_tokens: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// Stop with the error (rerun the same command to resume).
    Fail,
    /// Report the file, record it in the manifest and go on with the next file.
    Skip,
}

#[derive(Debug, Clone, clap::Args, serde::Serialize)]
pub struct RunArgs {
    /// TOML file with flag values (keys = long flag names); command-line flags override it.
    #[arg(long)]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Directory the shards, manifest.json and pipeline.config.json are written to.
    #[arg(long, default_value = "data")]
    pub data_dir: PathBuf,
    /// Local parquet files or folders (searched recursively for *.parquet, sorted) instead of the Hub.
    #[arg(long, num_args = 1..)]
    pub input: Vec<PathBuf>,
    /// Hub dataset repository to stream.
    #[arg(long, default_value = "HuggingFaceFW/fineweb")]
    pub dataset: String,
    /// Folder inside the dataset repository whose parquet files are read.
    #[arg(long, default_value = "sample/10BT")]
    pub subset: String,
    /// Git revision of the dataset repository.
    #[arg(long, default_value = "main")]
    pub revision: String,
    /// Hub endpoint or mirror (default: $HF_ENDPOINT, else https://huggingface.co).
    #[arg(long)]
    pub endpoint: Option<String>,
    /// `gpt2` (built in, works offline), a tokenizer.json path, or a Hub model repo holding one.
    #[arg(long, default_value = "gpt2")]
    pub tokenizer: String,
    /// End-of-text token of a `--tokenizer` tokenizer.json (the built-in GPT-2 uses 50256).
    #[arg(long, default_value = "<|endoftext|>")]
    pub eot_token: String,
    /// Tokens per training sequence; chunks hold seq_len + 1 tokens.
    #[arg(long, default_value_t = 1024)]
    pub seq_len: u32,
    /// Chunks per shard file.
    #[arg(long, default_value_t = 256)]
    pub chunks_per_shard: u32,
    /// zstd compression level of the chunk frames.
    #[arg(long, default_value_t = 3)]
    pub zstd_level: i32,
    /// Tokens of the fixed val set: the first documents of the source are held out until their
    /// tokens fill this many (rounded up to whole --seq-len chunks), published before any train shard.
    #[arg(long, default_value_t = 262_144)]
    pub val_tokens: u64,
    /// Fraction of later documents (by a hash of their id) also held out as val, beyond the fixed set.
    #[arg(long, default_value_t = 0.0)]
    pub val_fraction: f64,
    /// Train shards kept on disk (ring for live training); 0 = offline corpus, keep everything.
    #[arg(long, default_value_t = 0)]
    pub ring_slots: u32,
    /// Stop once the train stream reaches this many tokens (default: the whole source).
    #[arg(long)]
    pub max_tokens: Option<u64>,
    /// Number of machines building one corpus together (file i goes to worker i % workers).
    #[arg(long, default_value_t = 1)]
    pub workers: u32,
    /// This machine's index among `--workers`.
    #[arg(long, default_value_t = 0)]
    pub worker_index: u32,
    /// Tokenizer/compressor threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// What to do with a file that keeps failing (after retries) or is not valid input.
    #[arg(long, value_enum, default_value_t = OnError::Fail)]
    pub on_error: OnError,
    /// Attempts per HTTP range request before the file counts as failed.
    #[arg(long, default_value_t = 8)]
    pub retries: u32,
    /// First retry delay in milliseconds; doubles per failure, capped at 30 s.
    #[arg(long, default_value_t = 500)]
    pub retry_backoff_ms: u64,
    /// Seconds without a byte from the server before a request is abandoned and retried.
    #[arg(long, default_value_t = 60)]
    pub http_timeout: u64,
    /// Seconds between progress log lines.
    #[arg(long, default_value_t = 10)]
    pub log_every: u64,
    /// No progress bar and no periodic log lines (warnings, errors and the summary remain).
    #[arg(long)]
    pub quiet: bool,
}

/// Parses the command line, with `--config FILE` values inserted in front of the real flags.
pub fn parse() -> Result<Cli> {
    let args: Vec<String> = std::env::args().collect();
    let cli = Cli::parse_from(&args);
    let Some(path) = cli.run.config.clone() else { return Ok(cli) };
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading config file {}", path.display()))?;
    let table: toml::Table = text.parse().with_context(|| format!("parsing config file {}", path.display()))?;
    let mut merged = vec![args[0].clone()];
    for (key, value) in &table {
        let flag = format!("--{key}");
        match value {
            toml::Value::Boolean(true) => merged.push(flag),
            toml::Value::Boolean(false) => {}
            toml::Value::Array(items) => {
                for item in items {
                    merged.push(flag.clone());
                    merged.push(toml_scalar(item).with_context(|| format!("{}: key {key}", path.display()))?);
                }
            }
            other => {
                merged.push(flag);
                merged.push(toml_scalar(other).with_context(|| format!("{}: key {key}", path.display()))?);
            }
        }
    }
    merged.extend(args[1..].iter().cloned());
    Cli::try_parse_from(&merged).with_context(|| format!("applying config file {}", path.display()))
}

fn toml_scalar(v: &toml::Value) -> Result<String> {
    Ok(match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        other => bail!("unsupported value {other}"),
    })
}

impl RunArgs {
    pub fn validate(&self) -> Result<()> {
        if self.seq_len < 1 {
            bail!("--seq-len must be at least 1");
        }
        if self.chunks_per_shard < 1 {
            bail!("--chunks-per-shard must be at least 1");
        }
        if !(0.0..1.0).contains(&self.val_fraction) {
            bail!("--val-fraction must be in [0, 1), got {}", self.val_fraction);
        }
        if self.val_tokens < 1 {
            bail!("--val-tokens must be at least 1 (the fixed val set holds at least one chunk)");
        }
        if self.workers < 1 || self.worker_index >= self.workers {
            bail!("--worker-index {} must be below --workers {}", self.worker_index, self.workers);
        }
        if self.retries < 1 {
            bail!("--retries must be at least 1");
        }
        Ok(())
    }
}
