//! `--device cpu|cuda:N` and `--dtype f32|bf16`.

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};

pub fn parse_device(s: &str) -> Result<Device> {
    if s == "cpu" {
        return Ok(Device::Cpu);
    }
    if let Some(n) = s.strip_prefix("cuda:").or(if s == "cuda" { Some("0") } else { None }) {
        let ordinal: usize = n.parse().with_context(|| format!("--device {s}: bad GPU ordinal"))?;
        return Device::new_cuda(ordinal).with_context(|| format!("--device {s} (this build needs `--features cuda`)"));
    }
    bail!("--device {s}: expected cpu or cuda:N")
}

/// The compute dtype. bf16 is mixed precision (bf16 matmuls and activations, f32 master weights,
/// optimizer state, recurrence, norm statistics and loss). It also runs on the CPU (slowly:
/// candle's CPU bf16 matmul is not tuned), which is how the tests check it.
pub fn parse_dtype(s: &str, _device: &Device) -> Result<DType> {
    match s {
        "f32" => Ok(DType::F32),
        "bf16" => Ok(DType::BF16),
        _ => bail!("--dtype {s}: expected f32 or bf16"),
    }
}
