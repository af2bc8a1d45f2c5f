//! Bounds on the sizes `trainer train`'s flags ask for, checked with exact (u128) arithmetic before
//! anything is allocated: a flag that overflows or asks for more memory than can exist is a clear
//! error naming the flag and the allowed range, never a wrapped value or an allocation abort.
//!
//! - [`check_flags`] (at config resolution): `--micro-batch` (when a number) in
//!   1..=[`MAX_MICRO_BATCH`], `--grad-accum` (when given) in 1..=[`MAX_GRAD_ACCUM`], `--batch-size`
//!   (when given) in 1..=[`MAX_BATCH_SIZE`].
//! - [`check_step_memory`] (once the data's seq_len and the model's vocabulary are known): one
//!   micro-batch's logits (micro-batch × seq_len × padded vocab f32) at most [`MAX_LOGITS_BYTES`]
//!   and, on the CPU, at most this machine's memory; the tokens of one optimizer step (held on the
//!   host while it is gathered: micro-batch × grad-accum × ranks × (seq_len + 1) u32) at most half
//!   this machine's memory. These are sanity bounds against impossible requests, not a memory
//!   planner (that is `--micro-batch auto`: `memory_plan`): a run inside them can still run out of
//!   (GPU) memory, which candle reports as an error.

use anyhow::{bail, Result};

use super::TrainConfig;

/// Largest `--micro-batch` (sequences per forward/backward pass).
pub const MAX_MICRO_BATCH: usize = 1 << 16;
/// Largest `--grad-accum` (micro-batches per optimizer step).
pub const MAX_GRAD_ACCUM: usize = 1 << 20;
/// Largest `--batch-size` (sequences per optimizer step over all ranks).
pub const MAX_BATCH_SIZE: usize = 1 << 30;
/// Largest logits tensor of one micro-batch, in bytes of f32 (64 GiB).
pub const MAX_LOGITS_BYTES: u128 = 64 << 30;
/// Host memory assumed when /proc/meminfo cannot be read.
const ASSUMED_HOST_BYTES: u128 = 64 << 30;

/// The flag-only bounds (see the module doc).
pub fn check_flags(cfg: &TrainConfig) -> Result<()> {
    if let Some(n) = cfg.micro_batch.fixed() {
        in_range("--micro-batch (micro_batch)", n, MAX_MICRO_BATCH)?;
    }
    if let Some(m) = cfg.grad_accum {
        in_range("--grad-accum (grad_accum)", m, MAX_GRAD_ACCUM)?;
    }
    if let Some(b) = cfg.batch_size {
        in_range("--batch-size (batch_size)", b, MAX_BATCH_SIZE)?;
    }
    Ok(())
}

fn in_range(flag: &str, value: usize, max: usize) -> Result<()> {
    if !(1..=max).contains(&value) {
        bail!("{flag} {value} is out of range: allowed 1..={max}");
    }
    Ok(())
}

/// The bounds that need the data's `seq_len`, the model's padded vocabulary and the number of
/// data-parallel ranks (see the module doc); the micro-batch must be resolved (a number).
pub fn check_step_memory(cfg: &TrainConfig, seq_len: usize, vocab: usize, world: usize) -> Result<()> {
    let on_cpu = match &cfg.devices {
        Some(d) => d.split(',').all(|e| e.trim() == "cpu"),
        None => cfg.device == "cpu",
    };
    let split = cfg.split()?;
    check_logits(split.micro_batch, seq_len, vocab, on_cpu)?;
    let (host, host_text) = host_memory();
    let step_tokens = split.micro_batch as u128 * split.grad_accum as u128 * world as u128 * (seq_len as u128 + 1) * 4;
    if step_tokens > host / 2 {
        bail!(
            "--grad-accum {}: one optimizer step's tokens (micro-batch {} × grad-accum × {world} ranks × (seq_len {seq_len} + 1) × 4 bytes) take {}, more than half of {host_text} of memory; lower --batch-size (or --grad-accum or --micro-batch)",
            split.grad_accum,
            split.micro_batch,
            gib(step_tokens)
        );
    }
    Ok(())
}

/// One forward pass of `micro_batch` sequences of `seq_len` tokens makes a logits tensor of
/// micro-batch × seq_len × `vocab` f32: at most [`MAX_LOGITS_BYTES`], and on the CPU at most this
/// machine's memory. Used by `train`, `eval` and `bench` (their `--micro-batch`).
pub fn check_logits(micro_batch: usize, seq_len: usize, vocab: usize, on_cpu: bool) -> Result<()> {
    let (host, host_text) = host_memory();
    let logits = micro_batch as u128 * seq_len as u128 * vocab as u128 * 4;
    let (limit, limit_text) = if on_cpu && host < MAX_LOGITS_BYTES {
        (host, format!("this machine's {host_text}"))
    } else {
        (MAX_LOGITS_BYTES, format!("the {} allowed", gib(MAX_LOGITS_BYTES)))
    };
    if logits > limit {
        bail!(
            "--micro-batch {micro_batch}: one micro-batch's logits (micro-batch × seq_len {seq_len} × vocab {vocab} × 4 bytes) take {}, more than {limit_text}; lower --micro-batch (and raise --grad-accum to keep the effective batch)",
            gib(logits)
        );
    }
    Ok(())
}

/// This machine's memory in bytes (assumed when unreadable) and how to name it in messages.
pub(crate) fn host_memory() -> (u128, String) {
    match host_memory_bytes() {
        Some(b) => (b, gib(b)),
        None => (ASSUMED_HOST_BYTES, format!("{} (assumed: /proc/meminfo unreadable)", gib(ASSUMED_HOST_BYTES))),
    }
}

/// `MemTotal` of /proc/meminfo, in bytes.
fn host_memory_bytes() -> Option<u128> {
    meminfo_bytes("MemTotal:")
}

/// `MemAvailable` of /proc/meminfo (what can be allocated without swapping), in bytes.
pub(crate) fn host_available_bytes() -> Option<u128> {
    meminfo_bytes("MemAvailable:")
}

fn meminfo_bytes(key: &str) -> Option<u128> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    let kib: u128 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// `12.3 GiB`.
pub(crate) fn gib(bytes: u128) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::MicroBatch;

    #[test]
    fn flags_out_of_range_name_the_flag_and_the_range() {
        let c = TrainConfig { micro_batch: MicroBatch::Fixed(1_000_000_000), ..TrainConfig::default() };
        let err = check_flags(&c).unwrap_err().to_string();
        assert!(err.contains("--micro-batch") && err.contains("1..=65536"), "{err}");
        let c = TrainConfig { grad_accum: Some(0), ..TrainConfig::default() };
        assert!(check_flags(&c).unwrap_err().to_string().contains("--grad-accum (grad_accum) 0 is out of range"));
        let c = TrainConfig { batch_size: Some(0), ..TrainConfig::default() };
        assert!(check_flags(&c).unwrap_err().to_string().contains("--batch-size (batch_size) 0 is out of range"));
        check_flags(&TrainConfig::default()).unwrap();
    }

    fn fixed(micro: usize, accum: usize) -> TrainConfig {
        TrainConfig { micro_batch: MicroBatch::Fixed(micro), grad_accum: Some(accum), ..TrainConfig::default() }
    }

    #[test]
    fn impossible_batches_are_refused_and_ordinary_ones_pass() {
        let ok = fixed(8, 4);
        check_step_memory(&ok, 1024, 50_304, 1).unwrap();
        let wide = fixed(MAX_MICRO_BATCH, 4);
        let err = check_step_memory(&wide, 1024, 50_304, 1).unwrap_err().to_string();
        assert!(err.contains("--micro-batch 65536") && err.contains("logits"), "{err}");
        let long = TrainConfig { devices: Some(["cpu"; 8].join(",")), ..fixed(1, MAX_GRAD_ACCUM) };
        let err = check_step_memory(&long, 1 << 20, 8, 8).unwrap_err().to_string();
        assert!(err.contains("--grad-accum 1048576") && err.contains("8 ranks"), "{err}");
        // An unresolved auto is an error, not a guess.
        let err = check_step_memory(&TrainConfig::default(), 1024, 50_304, 1).unwrap_err().to_string();
        assert!(err.contains("not resolved"), "{err}");
    }
}
