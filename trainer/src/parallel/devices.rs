//! `--devices`: which devices the ranks of data-parallel training run on, one rank per entry.
//!
//! - `0,1,2,3` (or `cuda:0,cuda:1,…`): CUDA ordinals, one rank per GPU, NCCL between them (needs
//!   a build with `--features nccl`).
//! - `cpu,cpu` (W times `cpu`): W CPU ranks in this process with the in-process [`LocalComm`]
//!   (super::local::LocalComm). Slow; it exists to test and debug the data-parallel path without
//!   GPUs, and gives the same run as one device with W× the gradient accumulation.
//!
//! Mixing CPU and CUDA, repeating a GPU and empty entries are errors.

/// Where the ranks run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Placement {
    /// `world` CPU ranks with the in-process communicator.
    Cpu { world: usize },
    /// One rank per CUDA ordinal, in rank order.
    Cuda { ordinals: Vec<usize> },
}

/// A `--devices` value that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("--devices {value}: {what} (expected a list of CUDA ordinals like 0,1,2,3, or cpu,cpu for CPU ranks)")]
pub struct DevicesError {
    pub value: String,
    pub what: String,
}

impl Placement {
    /// Number of ranks.
    pub fn world(&self) -> usize {
        match self {
            Placement::Cpu { world } => *world,
            Placement::Cuda { ordinals } => ordinals.len(),
        }
    }

    /// The `--device`-style name of rank `rank`'s device (`cpu` or `cuda:N`), for logs.
    pub fn device_name(&self, rank: usize) -> String {
        match self {
            Placement::Cpu { .. } => "cpu".into(),
            Placement::Cuda { ordinals } => ordinals.get(rank).map_or_else(|| "?".into(), |o| format!("cuda:{o}")),
        }
    }
}

/// Parses a `--devices` value (see the module doc).
pub fn parse_devices(value: &str) -> Result<Placement, DevicesError> {
    let err = |what: String| DevicesError { value: value.to_string(), what };
    let entries: Vec<&str> = value.split(',').map(str::trim).collect();
    if entries.iter().any(|e| e.is_empty()) {
        return Err(err("empty entry".into()));
    }
    let cpus = entries.iter().filter(|e| **e == "cpu").count();
    if cpus == entries.len() {
        return Ok(Placement::Cpu { world: cpus });
    }
    if cpus > 0 {
        return Err(err("cannot mix cpu and CUDA ranks".into()));
    }
    let mut ordinals = Vec::with_capacity(entries.len());
    for e in entries {
        let n = e.strip_prefix("cuda:").unwrap_or(e);
        let ordinal: usize = n.parse().map_err(|_| err(format!("`{e}` is not a CUDA ordinal")))?;
        if ordinals.contains(&ordinal) {
            return Err(err(format!("GPU {ordinal} is listed twice (one rank per GPU)")));
        }
        ordinals.push(ordinal);
    }
    Ok(Placement::Cuda { ordinals })
}

/// NCCL's NVLink SHARP / multicast (NVLS) stays off unless the user set `NCCL_NVLS_ENABLE`: the
/// GPU machines this trainer is run on do not support it reliably (see docs/multi-gpu.md).
/// Must run before the first communicator is created; returns the value in effect and whether
/// the user set it.
pub fn nvls_default() -> (String, bool) {
    match std::env::var("NCCL_NVLS_ENABLE") {
        Ok(v) => (v, true),
        Err(_) => {
            // Changing the environment races with threads reading it: this runs before any rank
            // thread exists (see `RankGroup::start`).
            std::env::set_var("NCCL_NVLS_ENABLE", "0");
            ("0".into(), false)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_gpu_lists_and_cpu_ranks() {
        assert_eq!(parse_devices("0,1,2,3").unwrap(), Placement::Cuda { ordinals: vec![0, 1, 2, 3] });
        assert_eq!(parse_devices("cuda:2, cuda:0").unwrap(), Placement::Cuda { ordinals: vec![2, 0] });
        assert_eq!(parse_devices("cpu,cpu,cpu").unwrap(), Placement::Cpu { world: 3 });
        assert_eq!(parse_devices("5").unwrap().world(), 1);
        assert_eq!(parse_devices("1,3").unwrap().device_name(1), "cuda:3");
    }

    #[test]
    fn bad_values_say_what_is_wrong() {
        for (value, what) in [
            ("0,0", "listed twice"),
            ("0,,1", "empty entry"),
            ("cpu,0", "cannot mix"),
            ("gpu0", "not a CUDA ordinal"),
            ("", "empty entry"),
            ("0,-1", "not a CUDA ordinal"),
        ] {
            let e = parse_devices(value).unwrap_err().to_string();
            assert!(e.contains(what) && e.contains(&format!("--devices {value}")), "{value}: {e}");
        }
    }
}
