//! `pipeline`: streams FineWeb parquet (Hub over HTTP Range requests, or local files), tokenizes
//! it with GPT-2 on all cores and writes zstd-framed chunks into shard files (shard format v1, see
//! docs/shard-format.md): a bounded ring for live training or an offline corpus.
//!
//! `pipeline [FLAGS]` builds/continues a corpus (src/run.rs); `pipeline inspect PATH` checks one.

mod backpressure;
mod cancel;
mod config;
mod doc_reader;
mod gpt2_bpe;
mod gpt2_split;
mod hub;
mod inspect;
mod progress;
mod range_reader;
mod run;
mod shard_out;
mod shard_publisher;
mod source;
mod split_stream;
mod tokenizer;
mod val_split;

use std::process::ExitCode;

use mamba_shards::stop_signal::{self, StopSignals};

/// A stop was requested (SIGINT/SIGTERM); the run ended cleanly and can be resumed.
#[derive(Debug, thiserror::Error)]
#[error("interrupted")]
pub struct Interrupted;

/// `mamba-pipeline <version> (<git commit>)`
pub fn version_string() -> String {
    format!("mamba-pipeline {} ({})", env!("CARGO_PKG_VERSION"), option_env!("PIPELINE_GIT_HASH").unwrap_or("unknown"))
}

/// True when the error (at any level of its context chain) is a stop request.
pub fn is_interrupted(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.is::<Interrupted>())
}

fn main() -> ExitCode {
    // ---- config ----
    let cli = match config::parse() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    // ---- inspect ----
    if let Some(config::Command::Inspect(args)) = cli.command {
        return match inspect::inspect(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        };
    }

    // ---- run: SIGINT/SIGTERM ask for a stop (every wait watches it); the loop abandons the
    //      current shard and the exit status is 128 + the signal; a second signal exits at once ----
    let signals =
        match StopSignals::install("stopping: abandoning the shard in progress (rerun the same command to resume)") {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: installing the SIGINT/SIGTERM handler: {e}");
                return ExitCode::FAILURE;
            }
        };
    match run::run(cli.run, signals.flag()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if is_interrupted(&e) => {
            eprintln!("interrupted: the data dir is consistent; rerun the same command to resume");
            ExitCode::from(signals.exit_status().unwrap_or(stop_signal::exit_status(stop_signal::SIGINT)))
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
