//! What the training loop needs to know about the data directory around the loop: the shard
//! parameters (waiting for the pipeline in follow mode), whether one optimizer step fits the
//! pipeline's ring, and what to say when follow mode finds nothing left to train on.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use mamba_shards::ShardParams;

use crate::config::TrainConfig;
use crate::data::{train_shard_params, DataPosition};

/// The data's shard parameters (its sequence length), from the first train shard's header. Follow
/// mode waits (saying so) for the pipeline to create the directory and publish a shard; `None`:
/// `stop` came first.
pub(super) fn discover_shard_params(cfg: &TrainConfig, stop: &AtomicBool) -> Result<Option<ShardParams>> {
    let mut announced = None;
    loop {
        let found = if cfg.follow && !cfg.data.is_dir() {
            None
        } else if !cfg.data.exists() {
            bail!(
                "--data {}: no such directory. Build shards there first, e.g. `pipeline --input pipeline/assets/sample-corpus --data-dir {0}` (the sample corpus of the repository) or `pipeline --data-dir {0}` (FineWeb from the Hub); add --follow to train while the pipeline writes them; or try the whole job at once: `bash tools/demo.sh`",
                cfg.data.display()
            );
        } else {
            train_shard_params(&cfg.data).with_context(|| format!("--data {}", cfg.data.display()))?
        };
        if found.is_some() {
            return Ok(found);
        }
        if !cfg.follow {
            bail!(
                "--data {}: no train shards (train-*.shard). Build some first, e.g. `pipeline --input pipeline/assets/sample-corpus --data-dir {0}` (the sample corpus of the repository) or `pipeline --data-dir {0}` (FineWeb from the Hub); or try the whole job at once: `bash tools/demo.sh`",
                cfg.data.display()
            );
        }
        if let Some(m) = mamba_shards::Manifest::read(&cfg.data)
            .with_context(|| format!("--data {}", cfg.data.display()))?
            .filter(|m| m.finished)
        {
            let why = if m.train.next_seq == 0 {
                format!("it published no train shard at all ({}; all its tokens went to the val set: lower its --val-tokens)", m.finish_reason)
            } else {
                format!("its {} train shards were all released by an earlier trainer and removed", m.train.next_seq)
            };
            bail!("--follow {}: the pipeline has finished and {why}: nothing to train. Resume the earlier run with --resume, or rerun the pipeline with a larger --max-tokens or into a new --data-dir", cfg.data.display());
        }
        if stop.load(Ordering::SeqCst) {
            return Ok(None);
        }
        let what = if cfg.data.is_dir() { "publish the first train shard in" } else { "create the data directory" };
        if announced != Some(what) {
            tracing::info!(
                "waiting for the pipeline to {what} {} (e.g. `pipeline --data-dir {0} --ring-slots 4`)",
                cfg.data.display()
            );
            announced = Some(what);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Follow mode: shards are only released at step boundaries, so one optimizer step must fit in
/// the pipeline's ring (`docs/ring.md`, rule 5). A step of more chunks than the whole ring holds
/// can never be gathered (both programs would wait for ever): an error. One that may span more
/// than N − 1 shard boundaries can deadlock: a warning.
pub(super) fn check_step_fits_ring(cfg: &TrainConfig, world: usize) -> Result<()> {
    let Some(m) = mamba_shards::Manifest::read(&cfg.data)? else { return Ok(()) };
    let Some(slots) = m.ring_slots.filter(|&n| n > 0) else { return Ok(()) };
    let split = cfg.split()?;
    let step = (split.micro_batch * split.grad_accum * world) as u64;
    let per_shard = u64::from(m.chunks_per_shard);
    let fix = "raise the pipeline's --ring-slots or lower --batch-size";
    if step > u64::from(slots) * per_shard {
        bail!(
            "one optimizer step takes {step} chunks (--batch-size: micro-batch {} × grad-accum {} × {world} ranks) but the pipeline's ring holds only {slots} shards × {per_shard} chunks: the step could never be gathered; {fix}",
            split.micro_batch, split.grad_accum
        );
    }
    if step > u64::from(slots.saturating_sub(1)) * per_shard {
        tracing::warn!("one optimizer step takes {step} chunks, more than {} of the ring's {slots} shards of {per_shard} chunks: the two programs may deadlock; {fix}", slots.saturating_sub(1));
    }
    Ok(())
}

/// Follow mode with nothing to train: the pipeline finished and no chunk is left past `pos`.
pub(super) fn nothing_left(cfg: &TrainConfig, pos: &DataPosition) -> String {
    let dir = cfg.data.display();
    let published = match mamba_shards::Manifest::read(&cfg.data) {
        Ok(Some(m)) => {
            format!("{}: {} train shards ({} chunks) published", m.finish_reason, m.train.next_seq, m.train.chunks)
        }
        _ => "its manifest is unreadable now".into(),
    };
    let released = mamba_shards::ring::read_release(&cfg.data)
        .ok()
        .flatten()
        .map_or(String::new(), |r| format!(", released below shard {}", r.train_released_below));
    format!(
        "--follow {dir}: the pipeline has finished ({published}) and no train chunk is left for this run (data position {pos}{released}): \
         nothing to train. Every chunk was trained on by {}; for more data rerun the pipeline with a larger --max-tokens, or use a new --data-dir",
        if cfg.resume { "this run" } else { "an earlier trainer (resume it with --resume and its --out)" }
    )
}
