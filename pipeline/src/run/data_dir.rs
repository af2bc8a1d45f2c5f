//! The data directory a run writes into: one pipeline at a time (`pipeline.lock`), temporaries
//! of an interrupted run removed, the manifest resumed (only with the options that made it) or
//! new, and the resolved options recorded (`pipeline.config.json`).

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use mamba_shards::dir_lock::{DirLock, PIPELINE_LOCK};
use mamba_shards::manifest::{SourceFingerprint, MANIFEST_VERSION};
use mamba_shards::{Manifest, ShardParams};

use crate::config::RunArgs;
use crate::shard_out::remove_stale_temporaries;

/// Opens `--data-dir` for this run: its lock (held until it is dropped) and its manifest, as
/// written at once for a waiting trainer (ring size, shard params). `None`: the directory is
/// already finished and this run adds nothing.
pub(super) fn open(
    args: &RunArgs,
    params: &ShardParams,
    fingerprint: SourceFingerprint,
) -> Result<Option<(DirLock, Manifest)>> {
    let dir = &args.data_dir;
    std::fs::create_dir_all(dir).with_context(|| format!("creating data dir {}", dir.display()))?;
    // One pipeline per data dir (held until this process ends): a second one is refused here.
    let lock = DirLock::acquire(dir, PIPELINE_LOCK, "pipeline")?;
    let removed = remove_stale_temporaries(dir)?;
    if removed > 0 {
        tracing::info!("removed {removed} temporary files left by an interrupted run");
    }
    let mut manifest = match Manifest::read(dir)? {
        Some(m) => {
            check_same_options(dir, &m, &fingerprint, params)?;
            m
        }
        None => new_manifest(args, params, fingerprint),
    };
    if manifest.finished {
        let more =
            manifest.finish_reason == "max tokens" && args.max_tokens.is_none_or(|m| Some(m) > manifest.max_tokens);
        if !more {
            tracing::info!("{}: already finished ({}); nothing to do", dir.display(), manifest.finish_reason);
            return Ok(None);
        }
        tracing::info!(
            "continuing a corpus that stopped at --max-tokens {}",
            manifest.max_tokens.map_or("-".into(), |m| m.to_string())
        );
        manifest.finished = false;
        manifest.finish_reason.clear();
    }
    manifest.max_tokens = args.max_tokens;
    // The ring size of this run (it may differ from the last run's): the trainer reads it.
    manifest.ring_slots = Some(args.ring_slots);
    save_resolved_config(dir, args)?;
    // Written now, not only at the first publish: a waiting trainer learns the ring size (and, in
    // a new dir, the shard params) before anything is published.
    manifest.write(dir).with_context(|| format!("writing the manifest in {}", dir.display()))?;
    Ok(Some((lock, manifest)))
}

fn new_manifest(args: &RunArgs, params: &ShardParams, fingerprint: SourceFingerprint) -> Manifest {
    let mut m = Manifest::new(*params, fingerprint, crate::version_string());
    m.max_tokens = args.max_tokens;
    m.ring_slots = Some(args.ring_slots);
    m
}
/// A data dir is only resumed with the options that made it; anything else is a clear error.
fn check_same_options(dir: &Path, m: &Manifest, now: &SourceFingerprint, params: &ShardParams) -> Result<()> {
    if m.version < MANIFEST_VERSION {
        bail!(
            "{} was written by an older pipeline (manifest version {}, {}), before the fixed val set of version {MANIFEST_VERSION}: \
             its val split differs, so it cannot be continued. Its shards still train (the trainer reads it); \
             build new data into a new --data-dir",
            dir.join(mamba_shards::ring::MANIFEST_FILE).display(),
            m.version,
            m.written_by
        );
    }
    let was = &m.fingerprint;
    let mut diffs = Vec::new();
    if was.files != now.files {
        let first =
            was.files.iter().zip(&now.files).position(|(a, b)| a != b).unwrap_or(was.files.len().min(now.files.len()));
        diffs.push(format!(
            "source files ({} then, {} now; first difference at index {first}: {:?} vs {:?})",
            was.files.len(),
            now.files.len(),
            was.files.get(first),
            now.files.get(first)
        ));
    }
    let mut cmp = |what: &str, a: String, b: String| {
        if a != b {
            diffs.push(format!("{what} ({a} then, {b} now)"));
        }
    };
    cmp("--tokenizer", was.tokenizer.clone(), now.tokenizer.clone());
    cmp("--seq-len", m.params.seq_len().to_string(), params.seq_len().to_string());
    cmp("--chunks-per-shard", was.chunks_per_shard.to_string(), now.chunks_per_shard.to_string());
    cmp("--val-fraction", was.val_fraction.to_string(), now.val_fraction.to_string());
    cmp("--val-tokens", was.val_tokens.to_string(), now.val_tokens.to_string());
    cmp("--workers", was.workers.to_string(), now.workers.to_string());
    cmp("--worker-index", was.worker_index.to_string(), now.worker_index.to_string());
    let shape = |p: &ShardParams| {
        format!(
            "token_bytes {} chunk_tokens {} vocab {} eot {}",
            p.token_bytes,
            p.chunk_tokens(),
            p.vocab_size,
            p.eot_id
        )
    };
    cmp("shard params", shape(&m.params), shape(params));
    if diffs.is_empty() {
        return Ok(());
    }
    Err(anyhow!(
        "{} was made with different options: {}. Refusing to resume into it; use the original options or a new --data-dir",
        dir.join(mamba_shards::ring::MANIFEST_FILE).display(),
        diffs.join("; ")
    ))
}

/// `pipeline.config.json`: the resolved options plus version and git commit, for the record.
fn save_resolved_config(dir: &Path, args: &RunArgs) -> Result<()> {
    let value = serde_json::json!({ "written_by": crate::version_string(), "args": args });
    let bytes = serde_json::to_vec_pretty(&value).context("serializing the resolved config")?;
    mamba_shards::fsutil::atomic_write(&dir.join("pipeline.config.json"), &bytes)?;
    Ok(())
}
