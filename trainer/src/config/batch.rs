//! The batch of an optimizer step and how it is split: `--batch-size` (sequences per optimizer
//! step over all ranks), `--micro-batch auto|N` (sequences per forward/backward pass on one
//! device) and `--grad-accum` (micro-batches per step on one device, derived).
//!
//! The rules, in order ([`batch_target`]):
//! - `--micro-batch N --grad-accum M` (both numbers): N × M sequences per device per step, as
//!   before `--batch-size` existed (old commands and saved configs mean what they meant); a
//!   `--batch-size` beside them must equal N × M × ranks.
//! - Otherwise the step is `--batch-size` sequences (default [`DEFAULT_BATCH_SIZE`]), a multiple
//!   of the number of ranks; each rank trains `batch-size ÷ ranks` of them:
//!   - `--micro-batch N`: N must divide that; grad-accum = per-device ÷ N;
//!   - `--micro-batch auto --grad-accum M`: M must divide it; the micro-batch is per-device ÷ M;
//!   - `--micro-batch auto` alone: the micro-batch is chosen once the model, seq_len, dtype and
//!     device are known (`config::memory_plan`, `train::batch_plan`).
//!
//! The data order does not depend on the split: a step takes the next batch-size chunks of the
//! stream whatever the micro-batch (`train::step`, `train::batch_share`).

use std::fmt;
use std::str::FromStr;

use anyhow::{bail, Result};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Sequences per optimizer step over all ranks when neither `--batch-size` nor both of
/// `--micro-batch` and `--grad-accum` say otherwise (the seed recipe's 32).
pub const DEFAULT_BATCH_SIZE: usize = 32;

/// `--micro-batch`: `auto` (chosen from the device's memory at start) or a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MicroBatch {
    #[default]
    Auto,
    Fixed(usize),
}

impl MicroBatch {
    /// The number, when it is one.
    pub fn fixed(self) -> Option<usize> {
        match self {
            MicroBatch::Auto => None,
            MicroBatch::Fixed(n) => Some(n),
        }
    }
}

impl fmt::Display for MicroBatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MicroBatch::Auto => f.write_str("auto"),
            MicroBatch::Fixed(n) => write!(f, "{n}"),
        }
    }
}

impl FromStr for MicroBatch {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "auto" => Ok(MicroBatch::Auto),
            n => n.parse().map(MicroBatch::Fixed).map_err(|_| format!("`{s}`: expected auto or a number of sequences")),
        }
    }
}

/// In TOML and JSON: the string `"auto"` or an integer (old configs hold integers).
impl Serialize for MicroBatch {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            MicroBatch::Auto => s.serialize_str("auto"),
            MicroBatch::Fixed(n) => s.serialize_u64(*n as u64),
        }
    }
}

impl<'de> Deserialize<'de> for MicroBatch {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Number(u64),
            Text(String),
        }
        match Repr::deserialize(d)? {
            Repr::Number(n) => usize::try_from(n).map(MicroBatch::Fixed).map_err(serde::de::Error::custom),
            Repr::Text(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// The batch of one optimizer step as the flags fix it, before the device is looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchTarget {
    /// Sequences per optimizer step over all ranks.
    pub batch_size: usize,
    /// Data-parallel ranks.
    pub world: usize,
    /// Sequences per optimizer step on one rank (`batch_size ÷ world`).
    pub per_device: usize,
    /// The micro-batch when the flags fix it (a number, or `--grad-accum` beside `auto`);
    /// `None`: `auto`, chosen from the device's memory.
    pub micro_batch: Option<usize>,
}

/// A per-device split of a [`BatchTarget`]: micro-batch × grad-accum = its `per_device`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchSplit {
    pub micro_batch: usize,
    pub grad_accum: usize,
}

impl BatchTarget {
    /// The split with `micro_batch` sequences per pass; it must divide the per-device batch.
    pub fn split(&self, micro_batch: usize) -> Result<BatchSplit> {
        if micro_batch == 0 || !self.per_device.is_multiple_of(micro_batch) {
            bail!(
                "--micro-batch {micro_batch} does not divide the {} sequences each rank trains per step (--batch-size {} ÷ {} ranks); pick a divisor of {0}, or --micro-batch auto",
                self.per_device,
                self.batch_size,
                self.world
            );
        }
        Ok(BatchSplit { micro_batch, grad_accum: self.per_device / micro_batch })
    }

    /// The split the flags fix, `None` while the micro-batch is `auto`.
    pub fn fixed_split(&self) -> Result<Option<BatchSplit>> {
        self.micro_batch.map(|m| self.split(m)).transpose()
    }
}

/// The batch of `--batch-size`, `--micro-batch` and `--grad-accum` over `world` ranks (the rules
/// of the module doc); a contradiction or a batch that does not divide is an error naming the
/// flags. Zero values are errors too (`size_limits::check_flags` words their ranges).
pub fn batch_target(
    batch_size: Option<usize>,
    micro_batch: MicroBatch,
    grad_accum: Option<usize>,
    world: usize,
) -> Result<BatchTarget> {
    let nonzero = |flag: &str, v: usize| if v == 0 { bail!("{flag} must be at least 1") } else { Ok(v) };
    let world = nonzero("the number of ranks (--devices)", world)?;
    if let Some(b) = batch_size {
        nonzero("--batch-size", b)?;
    }
    if let Some(m) = grad_accum {
        nonzero("--grad-accum", m)?;
    }
    if let MicroBatch::Fixed(n) = micro_batch {
        nonzero("--micro-batch", n)?;
    }
    // Both numbers: N × M per device, as always.
    if let (MicroBatch::Fixed(n), Some(m)) = (micro_batch, grad_accum) {
        let Some(total) = n.checked_mul(m).and_then(|p| p.checked_mul(world)) else {
            bail!("--micro-batch {n} × --grad-accum {m} × {world} ranks overflows");
        };
        if let Some(b) = batch_size.filter(|&b| b != total) {
            bail!(
                "--batch-size {b} contradicts --micro-batch {n} × --grad-accum {m} × {world} ranks = {total} sequences per step; give --batch-size with --micro-batch (grad-accum is derived), or drop --batch-size"
            );
        }
        return Ok(BatchTarget { batch_size: total, world, per_device: n * m, micro_batch: Some(n) });
    }
    let batch = batch_size.unwrap_or(DEFAULT_BATCH_SIZE);
    let named = if batch_size.is_some() { "" } else { " (the default)" };
    if !batch.is_multiple_of(world) {
        bail!(
            "--batch-size {batch}{named} is not a multiple of the {world} ranks of --devices: every rank trains the same number of sequences per step"
        );
    }
    let per_device = batch / world;
    let micro = match (micro_batch, grad_accum) {
        (MicroBatch::Fixed(n), _) => Some(n),
        (MicroBatch::Auto, Some(m)) => {
            if !per_device.is_multiple_of(m) {
                bail!(
                    "--grad-accum {m} contradicts --batch-size {batch}{named}: the {per_device} sequences each rank trains per step (÷ {world} ranks) are not a multiple of {m}; drop --grad-accum (it is derived from --batch-size and --micro-batch), or give a divisor of {per_device}"
                );
            }
            Some(per_device / m)
        }
        (MicroBatch::Auto, None) => None,
    };
    let target = BatchTarget { batch_size: batch, world, per_device, micro_batch: micro };
    target.fixed_split()?;
    Ok(target)
}

/// A note for commands written before `--batch-size` existed, when the batch is the default and
/// only one of `--micro-batch N` and `--grad-accum M` is given: they used to mean N × 32 and 1 × M
/// per device (the old defaults were 1 × 32); now they split the batch of 32. `None` otherwise.
pub fn old_meaning_note(
    batch_size: Option<usize>,
    micro_batch: MicroBatch,
    grad_accum: Option<usize>,
) -> Option<String> {
    let old = match (batch_size, micro_batch, grad_accum) {
        (None, MicroBatch::Fixed(n), None) => format!("--micro-batch {n} alone meant {n} × 32"),
        (None, MicroBatch::Auto, Some(m)) => format!("--grad-accum {m} alone meant 1 × {m}"),
        _ => return None,
    };
    Some(format!(
        "the batch is --batch-size {DEFAULT_BATCH_SIZE} (the default); before --batch-size existed, {old} sequences per device: give --batch-size (or both --micro-batch and --grad-accum) for another batch"
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use MicroBatch::{Auto, Fixed};

    fn err(r: Result<BatchTarget>) -> String {
        format!("{:#}", r.unwrap_err())
    }

    #[test]
    fn both_numbers_keep_their_old_meaning_per_device() {
        let t = batch_target(None, Fixed(2), Some(3), 2).unwrap();
        assert_eq!((t.batch_size, t.per_device, t.micro_batch), (12, 6, Some(2)));
        assert_eq!(t.fixed_split().unwrap(), Some(BatchSplit { micro_batch: 2, grad_accum: 3 }));
        // A --batch-size that agrees is fine; one that does not names both.
        batch_target(Some(12), Fixed(2), Some(3), 2).unwrap();
        let e = err(batch_target(Some(32), Fixed(2), Some(3), 2));
        assert!(e.contains("--batch-size 32 contradicts --micro-batch 2 × --grad-accum 3 × 2 ranks = 12"), "{e}");
    }

    #[test]
    fn the_batch_size_is_split_by_whichever_flag_is_given() {
        let t = batch_target(None, Auto, None, 1).unwrap();
        assert_eq!((t.batch_size, t.per_device, t.micro_batch), (32, 32, None));
        assert_eq!(t.split(16).unwrap(), BatchSplit { micro_batch: 16, grad_accum: 2 });
        let t = batch_target(Some(64), Fixed(8), None, 2).unwrap();
        assert_eq!(t.fixed_split().unwrap(), Some(BatchSplit { micro_batch: 8, grad_accum: 4 }));
        let t = batch_target(Some(24), Auto, Some(3), 1).unwrap();
        assert_eq!(t.fixed_split().unwrap(), Some(BatchSplit { micro_batch: 8, grad_accum: 3 }));
        // The seed config's `grad_accum = 32` alone still means 1 × 32.
        let t = batch_target(None, Auto, Some(32), 1).unwrap();
        assert_eq!(t.fixed_split().unwrap(), Some(BatchSplit { micro_batch: 1, grad_accum: 32 }));
    }

    #[test]
    fn splits_that_do_not_divide_are_errors_naming_the_flags() {
        let e = err(batch_target(Some(30), Auto, None, 4));
        assert!(e.contains("--batch-size 30 is not a multiple of the 4 ranks"), "{e}");
        let e = err(batch_target(None, Auto, None, 3));
        assert!(e.contains("--batch-size 32 (the default) is not a multiple of the 3 ranks"), "{e}");
        let e = err(batch_target(Some(24), Fixed(5), None, 1));
        assert!(e.contains("--micro-batch 5 does not divide the 24 sequences"), "{e}");
        let e = err(batch_target(Some(32), Auto, Some(3), 1));
        assert!(e.contains("--grad-accum 3 contradicts --batch-size 32"), "{e}");
        assert!(err(batch_target(Some(0), Auto, None, 1)).contains("--batch-size must be at least 1"));
        assert!(err(batch_target(None, Fixed(0), None, 1)).contains("--micro-batch must be at least 1"));
    }

    #[test]
    fn a_single_old_split_flag_gets_a_note_on_what_it_meant() {
        let note = old_meaning_note(None, Fixed(8), None).unwrap();
        assert!(note.contains("--micro-batch 8 alone meant 8 × 32"), "{note}");
        let note = old_meaning_note(None, Auto, Some(4)).unwrap();
        assert!(note.contains("--grad-accum 4 alone meant 1 × 4"), "{note}");
        assert_eq!(old_meaning_note(Some(32), Fixed(8), None), None);
        assert_eq!(old_meaning_note(None, Fixed(8), Some(4)), None);
        assert_eq!(old_meaning_note(None, Auto, None), None);
    }

    #[test]
    fn micro_batch_reads_and_writes_auto_or_a_number() {
        assert_eq!("auto".parse::<MicroBatch>().unwrap(), Auto);
        assert_eq!("16".parse::<MicroBatch>().unwrap(), Fixed(16));
        assert!("sixteen".parse::<MicroBatch>().unwrap_err().contains("expected auto or a number"));
        #[derive(Serialize, Deserialize, PartialEq, Debug)]
        struct T {
            m: MicroBatch,
        }
        for (text, m) in [("m = \"auto\"\n", Auto), ("m = 8\n", Fixed(8))] {
            assert_eq!(toml::from_str::<T>(text).unwrap(), T { m });
            assert_eq!(toml::to_string(&T { m }).unwrap(), text);
        }
        assert_eq!(serde_json::from_str::<T>("{\"m\":4}").unwrap(), T { m: Fixed(4) });
        assert!(toml::from_str::<T>("m = \"most\"\n").is_err());
    }
}
