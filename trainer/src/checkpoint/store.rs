//! The checkpoint directories of a run: `RUN_DIR/ckpt-{step:06}/`. A checkpoint is written into
//! `ckpt-{step:06}.tmp/`, every file fsynced, then renamed into place (the commit point) and the
//! run directory fsynced; a crash leaves at most a `.tmp` directory, removed by the next save.
//! After a save only the newest `keep` checkpoints remain.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use candle_core::{Device, Tensor};

use super::model_files::{save_model, write_safetensors};
use super::trainer_state::TrainerState;
use crate::model::{MambaConfig, Params};

pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";

/// What goes into one checkpoint.
pub struct CheckpointContents<'a> {
    pub model: &'a MambaConfig,
    pub params: &'a Params,
    pub optimizer_state: Vec<(String, Tensor)>,
    pub state: &'a TrainerState,
}

pub fn checkpoint_dir_name(step: usize) -> String {
    format!("ckpt-{step:06}")
}

fn parse_checkpoint_dir_name(name: &str) -> Option<usize> {
    let digits = name.strip_prefix("ckpt-")?;
    if digits.len() < 6 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Committed checkpoints of `run_dir`, oldest first.
pub fn list_checkpoints(run_dir: &Path) -> Result<Vec<(usize, PathBuf)>> {
    let mut out = Vec::new();
    if !run_dir.exists() {
        return Ok(out);
    }
    for entry in std::fs::read_dir(run_dir).with_context(|| format!("listing {}", run_dir.display()))? {
        let entry = entry.with_context(|| format!("listing {}", run_dir.display()))?;
        if let Some(step) = entry.file_name().to_str().and_then(parse_checkpoint_dir_name) {
            if entry.path().is_dir() {
                out.push((step, entry.path()));
            }
        }
    }
    out.sort();
    Ok(out)
}

pub fn latest_checkpoint(run_dir: &Path) -> Result<Option<PathBuf>> {
    Ok(list_checkpoints(run_dir)?.pop().map(|(_, p)| p))
}

/// Writes checkpoint `contents.state.step` atomically and prunes to the newest `keep`.
pub fn save_checkpoint(run_dir: &Path, contents: CheckpointContents, keep: usize) -> Result<PathBuf> {
    let name = checkpoint_dir_name(contents.state.step);
    let final_dir = run_dir.join(&name);
    let tmp_dir = run_dir.join(format!("{name}.tmp"));
    remove_stale_temporaries(run_dir)?;
    std::fs::create_dir_all(&tmp_dir).with_context(|| format!("creating {}", tmp_dir.display()))?;
    save_model(&tmp_dir, contents.model, contents.params)?;
    if super::hf_tokenizer::has_gpt2_vocab(contents.model) {
        super::hf_tokenizer::write_tokenizer_files(&tmp_dir, contents.state.seq_len)?;
    }
    write_safetensors(&tmp_dir.join(OPTIMIZER_FILE), contents.optimizer_state)?;
    contents.state.save(&tmp_dir)?;
    fsync_dir(&tmp_dir)?;
    if final_dir.exists() {
        // Only when re-saving the same step (e.g. a resumed run that stops immediately).
        std::fs::remove_dir_all(&final_dir).with_context(|| format!("replacing {}", final_dir.display()))?;
    }
    std::fs::rename(&tmp_dir, &final_dir)
        .with_context(|| format!("renaming {} to {}", tmp_dir.display(), final_dir.display()))?;
    fsync_dir(run_dir)?;
    let all = list_checkpoints(run_dir)?;
    for (_, old) in all.iter().take(all.len().saturating_sub(keep.max(1))) {
        std::fs::remove_dir_all(old).with_context(|| format!("removing old checkpoint {}", old.display()))?;
    }
    Ok(final_dir)
}

/// The files of a run that `trainer train` writes into its run directory (besides `ckpt-*`).
const RUN_FILES: [&str; 5] = ["metrics.jsonl", "metrics.jsonl.prev", "loss.png", "config.resolved.toml", "tb"];

/// Checks `--out` before training: a directory that already holds a run (checkpoints, or a
/// metrics.jsonl with records) is only continued with `resume`, or cleared of that run's files
/// with `overwrite` (other files in it are left alone); otherwise it is refused with a hint, so
/// that a new run never mixes with the old one's checkpoints.
pub fn prepare_run_dir(run_dir: &Path, resume: bool, overwrite: bool) -> Result<()> {
    if resume || !run_dir.is_dir() {
        return Ok(());
    }
    let checkpoints = std::fs::read_dir(run_dir)
        .with_context(|| format!("listing {}", run_dir.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("ckpt-") && e.path().is_dir())
        .map(|e| e.path())
        .collect::<Vec<_>>();
    let metrics = run_dir.join("metrics.jsonl");
    let has_metrics = std::fs::metadata(&metrics).is_ok_and(|m| m.len() > 0);
    if checkpoints.is_empty() && !has_metrics {
        return Ok(());
    }
    if !overwrite {
        let what = match list_checkpoints(run_dir)?.last() {
            Some((step, _)) => format!("a run (checkpoints up to step {step})"),
            None => "a run (metrics.jsonl)".to_string(),
        };
        anyhow::bail!(
            "--out {} already holds {what}. Add --resume to continue it, or --overwrite to delete it and start afresh (or choose another --out)",
            run_dir.display()
        );
    }
    let mut removed = 0;
    for dir in &checkpoints {
        std::fs::remove_dir_all(dir).with_context(|| format!("--overwrite: removing {}", dir.display()))?;
        removed += 1;
    }
    for name in RUN_FILES {
        let path = run_dir.join(name);
        let result = if path.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
        match result {
            Ok(()) => removed += 1,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("--overwrite: removing {}", path.display())),
        }
    }
    tracing::info!("--overwrite: removed the previous run in {} ({removed} checkpoints and files)", run_dir.display());
    Ok(())
}

fn remove_stale_temporaries(run_dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(run_dir).with_context(|| format!("listing {}", run_dir.display()))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("ckpt-") && name.ends_with(".tmp") {
            tracing::warn!("removing unfinished checkpoint {}", entry.path().display());
            std::fs::remove_dir_all(entry.path()).with_context(|| format!("removing {}", entry.path().display()))?;
        }
    }
    Ok(())
}

fn fsync_dir(dir: &Path) -> Result<()> {
    mamba_shards::fsutil::fsync_dir(dir).map_err(anyhow::Error::from)
}

/// The optimizer state tensors of a checkpoint (CPU).
pub fn load_optimizer_state(dir: &Path, device: &Device) -> Result<HashMap<String, Tensor>> {
    let path = dir.join(OPTIMIZER_FILE);
    candle_core::safetensors::load(&path, device).with_context(|| format!("reading {}", path.display()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_run_dir_with_a_run_needs_resume_or_overwrite() {
        let tmp = tempfile::tempdir().unwrap();
        let run = tmp.path().join("run");
        // Missing, empty, or only an empty metrics file: nothing to protect.
        prepare_run_dir(&run, false, false).unwrap();
        std::fs::create_dir_all(&run).unwrap();
        std::fs::write(run.join("metrics.jsonl"), "").unwrap();
        prepare_run_dir(&run, false, false).unwrap();
        // A run: refused with the two ways out.
        std::fs::create_dir_all(run.join("ckpt-000050")).unwrap();
        std::fs::write(run.join("ckpt-000050/model.safetensors"), "x").unwrap();
        std::fs::write(run.join("metrics.jsonl"), "{}\n").unwrap();
        std::fs::create_dir_all(run.join("tb")).unwrap();
        std::fs::write(run.join("notes.txt"), "mine").unwrap();
        let err = prepare_run_dir(&run, false, false).unwrap_err().to_string();
        assert!(
            err.contains("already holds a run (checkpoints up to step 50)")
                && err.contains("--resume")
                && err.contains("--overwrite"),
            "{err}"
        );
        assert!(run.join("ckpt-000050").is_dir(), "nothing is deleted without --overwrite");
        prepare_run_dir(&run, true, false).unwrap();
        assert!(run.join("ckpt-000050").is_dir());
        // --overwrite removes the run's files, and only those.
        prepare_run_dir(&run, false, true).unwrap();
        assert!(!run.join("ckpt-000050").exists() && !run.join("metrics.jsonl").exists() && !run.join("tb").exists());
        assert_eq!(std::fs::read_to_string(run.join("notes.txt")).unwrap(), "mine");
        prepare_run_dir(&run, false, false).unwrap();
    }
}
