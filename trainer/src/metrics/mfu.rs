//! Model FLOPs utilisation, the one place it is computed: MFU = 6 × parameters × tokens/s ÷ the
//! device's dense peak FLOP/s (2 FLOPs per parameter and token forward, 4 backward; the scan's
//! own FLOPs are not counted). Shown by `trainer bench`, the step log line, `metrics.jsonl`
//! (`mfu`, a fraction) and the progress display.
//!
//! The peak is `--peak-tflops` when given; on CUDA the default is [`CUDA_DEFAULT_PEAK_TFLOPS`],
//! the dense bf16 peak of an H100/H200 SXM (the GPUs this trainer is run on; other cards need
//! the flag); the CPU has no meaningful peak, so its MFU is unknown.

use candle_core::Device;

/// The CUDA default: 989 TFLOP/s, H100/H200 SXM dense bf16 (no sparsity).
pub const CUDA_DEFAULT_PEAK_TFLOPS: f64 = 989.0;

/// A device's dense peak and where the number comes from.
#[derive(Debug, Clone, PartialEq)]
pub struct Peak {
    /// TFLOP/s (10¹² FLOP/s), as given.
    pub tflops: f64,
    /// What the number is, e.g. `H100/H200 SXM dense bf16` or `--peak-tflops`.
    pub source: String,
}

impl Peak {
    /// The peak of `device`: `peak_tflops` (the flag) when given, else the CUDA default; `None`
    /// on the CPU without the flag. A flag that is not a positive number gives no peak.
    pub fn for_device(device: &Device, peak_tflops: Option<f64>) -> Option<Peak> {
        match peak_tflops {
            Some(t) => (t.is_finite() && t > 0.0).then(|| Peak { tflops: t, source: "--peak-tflops".into() }),
            None => device
                .is_cuda()
                .then(|| Peak { tflops: CUDA_DEFAULT_PEAK_TFLOPS, source: "H100/H200 SXM dense bf16".into() }),
        }
    }

    /// `989 TFLOP/s (H100/H200 SXM dense bf16)`.
    pub fn describe(&self) -> String {
        format!("{} TFLOP/s ({})", self.tflops, self.source)
    }
}

/// MFU as a fraction (0.185 = 18.5%) of `n_params` trained at `tokens_per_sec` against `peak`;
/// `None` without a peak or for a rate that is not a number.
pub fn mfu(n_params: u64, tokens_per_sec: f64, peak: Option<&Peak>) -> Option<f64> {
    let peak = peak.filter(|p| p.tflops > 0.0)?;
    let v = 6.0 * n_params as f64 * tokens_per_sec / (peak.tflops * 1e12);
    v.is_finite().then_some(v)
}

/// `18.5%`, or `n/a`.
pub fn percent(mfu: Option<f64>) -> String {
    mfu.map_or_else(|| "n/a".to_string(), |v| format!("{:.1}%", 100.0 * v))
}

/// What `trainer bench` and the training log print: `MFU 18.5% of 989 TFLOP/s (H100/H200 SXM
/// dense bf16)`, or on the CPU `MFU n/a (no peak for cpu; --peak-tflops to set one)`.
pub fn mfu_text(n_params: u64, tokens_per_sec: f64, peak: Option<&Peak>, device_name: &str) -> String {
    match peak {
        Some(p) => format!("MFU {} of {}", percent(mfu(n_params, tokens_per_sec, Some(p))), p.describe()),
        None => format!("MFU n/a (no peak for {device_name}; --peak-tflops to set one)"),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn mfu_is_six_flops_per_parameter_and_token_over_the_peak() {
        let h100 = Peak { tflops: 989.0, source: "H100/H200 SXM dense bf16".into() };
        // 6 × 129.1M params × 229k tok/s over 989 TFLOP/s = 17.9%.
        let v = mfu(129_123_072, 229_000.0, Some(&h100)).unwrap();
        assert!((v - 0.1794).abs() < 1e-4, "{v}");
        assert_eq!(percent(Some(v)), "17.9%");
        assert_eq!(
            mfu_text(129_123_072, 229_000.0, Some(&h100), "cuda:0"),
            "MFU 17.9% of 989 TFLOP/s (H100/H200 SXM dense bf16)"
        );
        assert_eq!(mfu(1, 1.0, None), None);
        assert_eq!(mfu(1, f64::NAN, Some(&h100)), None);
        assert_eq!(mfu_text(1, 1.0, None, "cpu"), "MFU n/a (no peak for cpu; --peak-tflops to set one)");
    }

    #[test]
    fn the_peak_is_the_flag_or_the_cuda_default_and_none_on_the_cpu() {
        assert_eq!(Peak::for_device(&Device::Cpu, None), None);
        let p = Peak::for_device(&Device::Cpu, Some(0.5)).unwrap();
        assert_eq!((p.tflops, p.describe().as_str()), (0.5, "0.5 TFLOP/s (--peak-tflops)"));
        assert_eq!(Peak::for_device(&Device::Cpu, Some(0.0)), None);
        assert_eq!(Peak::for_device(&Device::Cpu, Some(f64::NAN)), None);
    }
}
