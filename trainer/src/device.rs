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

/// The compute dtype. Mixed precision (bf16 activations, f32 master weights) needs the CUDA build.
pub fn parse_dtype(s: &str, device: &Device) -> Result<DType> {
    match s {
        "f32" => Ok(DType::F32),
        "bf16" if device.is_cpu() => bail!("--dtype bf16 is not yet supported on CPU; use f32"),
        "bf16" => bail!("--dtype bf16 is not implemented yet (GPU issue); use f32"),
        _ => bail!("--dtype {s}: expected f32 or bf16"),
    }
}
