//! Command line and config file. Every flag can also be given in a TOML file (`--config FILE`,
//! keys are the long flag names with `_`, e.g. `ring_slots = 3`, the trainer's convention; the
//! older `ring-slots = 3` is accepted too); flags on the command line win. Example:
//! `pipeline/configs/example.toml`.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(name = "pipeline", version = concat!(env!("CARGO_PKG_VERSION"), " (git ", env!("PIPELINE_GIT_HASH"), ")"), about = "Streams FineWeb parquet (Hub or local), tokenizes it and writes shard files", args_override_self = true)]
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
    /// Tokens of decoded text to show per split.
    #[arg(long, default_value_t = 64)]
    pub sample_tokens: usize,
    /// One line per shard file (default: one summary line per split; shards with errors are
    /// always listed).
    #[arg(long)]
    pub all: bool,
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
    /// TOML file with flag values (keys = long flag names with `_`, e.g. ring_slots = 4; see pipeline/configs/example.toml); command-line flags override it.
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
    /// Tokens per training sequence; chunks hold seq_len + 1 tokens. Allowed: 1..=1048576.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=MAX_SEQ_LEN as i64))]
    pub seq_len: u32,
    /// Chunks per shard file. Allowed: 1..=1048576, and at most 134217728 tokens per shard
    /// (chunks-per-shard × seq-len; a shard is held in memory while it is written).
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=MAX_CHUNKS_PER_SHARD as i64))]
    pub chunks_per_shard: u32,
    /// zstd compression level of the chunk frames (zstd's range: negative = faster, up to 22).
    #[arg(long, default_value_t = 3, allow_negative_numbers = true)]
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
    /// Tokenizer/compressor threads (default: all cores). Allowed: 1..=1024.
    #[arg(long, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=MAX_THREADS))]
    pub threads: Option<usize>,
    /// What to do with a file that keeps failing (after retries) or is not valid input.
    #[arg(long, value_enum, default_value_t = OnError::Fail)]
    pub on_error: OnError,
    /// Attempts per HTTP range request before the file counts as failed. Allowed: 1..=1000.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub retries: u32,
    /// First retry delay in milliseconds; doubles per failure, capped at 30 s.
    #[arg(long, default_value_t = 500)]
    pub retry_backoff_ms: u64,
    /// Seconds without a byte from the server before a request is abandoned and retried.
    /// Allowed: 1..=86400.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub http_timeout: u64,
    /// Seconds between progress log lines (0 = at every update). Allowed: 0..=86400.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(0..=86_400))]
    pub log_every: u64,
    /// No progress bar and no periodic log lines (warnings, errors and the summary remain).
    #[arg(long)]
    pub quiet: bool,
}

/// Largest `--seq-len`.
pub const MAX_SEQ_LEN: u32 = 1 << 20;
/// Largest `--chunks-per-shard`.
pub const MAX_CHUNKS_PER_SHARD: u32 = 1 << 20;
/// Largest chunks-per-shard × seq-len: the tokens of one shard, held in memory (as u32) while it
/// is written, a few shards at a time (512 MiB each at this bound).
pub const MAX_SHARD_TOKENS: u64 = 1 << 27;
/// Largest `--threads`.
pub const MAX_THREADS: u64 = 1024;

/// Parses the command line, with `--config FILE` values inserted in front of the real flags, and
/// checks the values (ranges of single flags are checked by clap, with the flag's name).
pub fn parse() -> Result<Cli> {
    let cli = parse_args(std::env::args().collect())?;
    cli.run.validate()?;
    Ok(cli)
}

/// [`parse`] of the given arguments (the program name first), before the values are checked.
pub fn parse_args(args: Vec<String>) -> Result<Cli> {
    let cli = Cli::parse_from(&args);
    let Some(path) = cli.run.config.clone() else { return Ok(cli) };
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading config file {}", path.display()))?;
    let table: toml::Table = text.parse().with_context(|| format!("parsing config file {}", path.display()))?;
    // Keys are the long flag names with `_` (as in the trainer's config files); `-` is accepted too.
    let known: Vec<String> = {
        use clap::CommandFactory;
        Cli::command()
            .get_arguments()
            .filter_map(|a| a.get_long())
            .filter(|l| *l != "config")
            .map(|l| l.replace('-', "_"))
            .collect()
    };
    let mut merged = vec![args[0].clone()];
    for (key, value) in &table {
        let name = key.replace('-', "_");
        if !known.contains(&name) {
            bail!("config file {}: unknown key `{key}`; keys are the long flag names with `_` (see `pipeline --help`): {}", path.display(), known.join(", "));
        }
        let flag = format!("--{}", name.replace('_', "-"));
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
        if !(1..=MAX_SEQ_LEN).contains(&self.seq_len) {
            bail!("--seq-len {} is out of range: allowed 1..={MAX_SEQ_LEN}", self.seq_len);
        }
        if !(1..=MAX_CHUNKS_PER_SHARD).contains(&self.chunks_per_shard) {
            bail!("--chunks-per-shard {} is out of range: allowed 1..={MAX_CHUNKS_PER_SHARD}", self.chunks_per_shard);
        }
        let shard_tokens = u64::from(self.chunks_per_shard) * u64::from(self.seq_len);
        if shard_tokens > MAX_SHARD_TOKENS {
            bail!(
                "--chunks-per-shard {} × --seq-len {} = {shard_tokens} tokens per shard, more than the {MAX_SHARD_TOKENS} allowed (a shard is held in memory while it is written); lower --chunks-per-shard",
                self.chunks_per_shard,
                self.seq_len
            );
        }
        let levels = zstd::compression_level_range();
        if !levels.contains(&self.zstd_level) {
            bail!("--zstd-level {} is out of range: allowed {}..={}", self.zstd_level, levels.start(), levels.end());
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parse_with(file: &std::path::Path, extra: &[&str]) -> Result<Cli> {
        let mut args = vec!["pipeline".to_string(), "--config".into(), file.display().to_string()];
        args.extend(extra.iter().map(|s| s.to_string()));
        parse_args(args)
    }

    #[test]
    fn the_example_config_parses_and_sets_every_key_it_names() {
        let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/example.toml");
        let cli = parse_with(&file, &[]).unwrap();
        let r = &cli.run;
        assert_eq!(
            (r.data_dir.as_path(), r.ring_slots, r.seq_len, r.chunks_per_shard),
            (std::path::Path::new("data"), 8, 1024, 256)
        );
        assert_eq!(
            (r.dataset.as_str(), r.subset.as_str(), r.tokenizer.as_str(), r.on_error),
            ("HuggingFaceFW/fineweb", "sample/10BT", "gpt2", OnError::Fail)
        );
        r.validate().unwrap();
    }

    #[test]
    fn keys_take_underscores_or_hyphens_and_unknown_keys_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.toml");
        std::fs::write(&file, "ring_slots = 3\nchunks-per-shard = 7\nquiet = true\n").unwrap();
        let cli = parse_with(&file, &["--ring-slots", "5"]).unwrap();
        assert_eq!((cli.run.ring_slots, cli.run.chunks_per_shard, cli.run.quiet), (5, 7, true));
        std::fs::write(&file, "ring_slotz = 3\n").unwrap();
        let err = format!("{:#}", parse_with(&file, &[]).unwrap_err());
        assert!(
            err.contains("p.toml") && err.contains("unknown key `ring_slotz`") && err.contains("ring_slots"),
            "{err}"
        );
    }
}
