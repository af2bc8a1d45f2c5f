//! GPU mixer ops: launches `ops/kernels/mixer_conv.cu` and `mixer_scan.cu` with the IO type of
//! `xz` (bf16 or f32).
//! Backward partials (dB, dC per block, per-channel parameters per batch element, conv weights
//! per strip of rows) are summed in a fixed order by `kernels/partials.cu`, so results are
//! deterministic.
//!
//! `conv.rs` launches the conv's kernels, `scan.rs` the scan's; both refuse conv widths the kernels
//! do not support ([`check_k`]).

mod conv;
mod scan;

pub(crate) use conv::{conv_backward, conv_backward_with, conv_forward};
pub(crate) use scan::{scan_backward, scan_backward_deferred, scan_forward};

use super::MixerDims;
use candle_core::cuda_backend::CudaStorage;
use candle_core::{bail, Result};

/// Refuses conv widths the kernels were not written for.
fn check_k(op: &str, dims: &MixerDims) -> Result<()> {
    if dims.k > 8 {
        bail!("{op}: the CUDA kernels support conv widths up to 8, got {}", dims.k)
    }
    Ok(())
}

/// What [`scan_backward_deferred`] leaves for the conv: `du`, the scan's share of the gradient of
/// the conv's output (f32, `(b·l, d)`), and `dxz` with its z half written.
pub(crate) struct ScanShare {
    pub du: CudaStorage,
    pub dxz: CudaStorage,
}
