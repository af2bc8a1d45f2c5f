//! `trainer`: trains a Mamba language model on shard files (hybrid Muon + AdamW), samples from
//! checkpoints, and benchmarks the training step.
//!
//! ```text
//! trainer train --data data --model 130m --out runs/seed [--config run.toml] ...
//! trainer generate --checkpoint runs/seed --prompt "The meaning of life"
//! trainer eval --checkpoint runs/seed --data data
//! trainer bench --model tiny
//! trainer compare runs/adamw-1e-3 runs/hybrid-m1e-3-a1e-4 --out report
//! ```

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use mamba_shards::dir_lock::{DirLock, TRAINER_LOCK};
use mamba_shards::stop_signal::StopSignals;
use mamba_trainer::train::StopReason;
use mamba_trainer::{bench, compare, config::TrainArgs, eval_cmd, generate, train};
use tracing_subscriber::fmt::writer::BoxMakeWriter;

#[derive(Parser)]
#[command(name = "trainer", version = concat!(env!("CARGO_PKG_VERSION"), " (git ", env!("GIT_HASH"), ")"), about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train (or resume training) a Mamba model on the shards in --data.
    Train(Box<TrainArgs>),
    /// Sample text from a checkpoint with the recurrent O(1)-per-token state.
    Generate(generate::GenerateArgs),
    /// Validation loss and perplexity of a checkpoint on shards (a split, or one shard file).
    Eval(eval_cmd::EvalArgs),
    /// Time the training step (forward + backward + optimizer) on random tokens.
    Bench(bench::BenchArgs),
    /// Compare runs: table of final val loss and tokens to reach the best AdamW-only loss, PNG charts.
    Compare(compare::CompareArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `eval`, `compare` and `generate` print their result on stdout alone: their log goes to
    // stderr. `train` logs around its progress display. Colour only on a terminal.
    let (log_to, ansi) = if matches!(cli.command, Command::Eval(_) | Command::Compare(_) | Command::Generate(_)) {
        (BoxMakeWriter::new(std::io::stderr), std::io::stderr().is_terminal())
    } else {
        (BoxMakeWriter::new(mamba_trainer::metrics::progress::BarAwareStdout), std::io::stdout().is_terminal())
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_target(false)
        .with_ansi(ansi)
        .with_writer(log_to)
        .init();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The exit status: success, or 128 + the signal that stopped `train` (after its checkpoint).
fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Train(args) => {
            // Parse config: defaults ← --config file ← flags.
            let cfg = args.resolve()?;
            // One trainer per run directory, for as long as this process lives.
            std::fs::create_dir_all(&cfg.out)
                .with_context(|| format!("creating run directory {}", cfg.out.display()))?;
            let _lock = DirLock::acquire(&cfg.out, TRAINER_LOCK, "trainer")?;
            // SIGINT/SIGTERM: finish the current step (or stop waiting for data), save a
            // checkpoint, exit 128 + signal; a second signal exits at once.
            let signals = StopSignals::install("finishing the current step, then saving a checkpoint")
                .context("installing the signal handler")?;
            let outcome = train::run(&cfg, &signals.flag())?;
            if outcome.skipped_chunks > 0 {
                println!(
                    "left out {} corrupt chunks (--on-bad-chunk skip; see skipped_chunks in metrics.jsonl)",
                    outcome.skipped_chunks
                );
            }
            println!(
                "finished at step {} ({}), last val loss {}",
                outcome.step,
                outcome.stop,
                outcome.last_val_loss.map_or("-".into(), |l| format!("{l:.4}"))
            );
            Ok(match (outcome.stop, signals.exit_status()) {
                (StopReason::Signal, Some(status)) => ExitCode::from(status),
                _ => ExitCode::SUCCESS,
            })
        }
        Command::Generate(args) => {
            let text = generate::run(&args)?;
            println!("{text}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Eval(args) => {
            let report = eval_cmd::run(&args)?;
            println!("{}", if args.json { report.to_json()? } else { report.human_line() });
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(args) => bench::run(&args).map(|()| ExitCode::SUCCESS),
        Command::Compare(args) => {
            println!("{}", compare::run(&args)?.printed);
            Ok(ExitCode::SUCCESS)
        }
    }
}
