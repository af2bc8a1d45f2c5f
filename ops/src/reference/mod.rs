//! The oracles the ops are tested against:
//!
//! - plain `f64` loops that define what the ops compute, forward and backward
//!   ([`selective_scan_forward`], [`causal_conv1d_silu_forward`], [`rms_norm_forward`], …). They
//!   favour being obviously right over being fast (they keep every state, index arrays directly
//!   and run single threaded);
//! - the plain, unfused [`selective_scan`] and [`causal_conv1d_silu`] as candle ops with autograd
//!   (CPU only), which the fused mixer ops (`crate::mixer_conv`, `crate::mixer_scan`) must equal
//!   on the narrowed halves of `xz`, forward and every gradient (tests/mixer.rs). They are tested
//!   against the f64 loops and finite differences themselves.
//!
//! The CUDA kernels are compared with the CPU ops in turn (tests/cuda_vs_cpu.rs).

mod causal_conv1d;
mod conv_op;
mod cpu_op;
mod rms_norm;
mod scan_op;
mod selective_scan;

pub use conv_op::causal_conv1d_silu;
pub use scan_op::selective_scan;

pub use causal_conv1d::{causal_conv1d_silu_backward, causal_conv1d_silu_forward, ConvGrads, ConvInputs};
pub use rms_norm::{rms_norm_backward, rms_norm_forward};
pub use selective_scan::{selective_scan_backward, selective_scan_forward, ScanGrads, ScanInputs};

/// `ln(1 + e^x)`, computed without overflow.
pub fn softplus(x: f64) -> f64 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

/// `1 / (1 + e^-x)`.
pub fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// `x * sigmoid(x)`.
pub fn silu(x: f64) -> f64 {
    x * sigmoid(x)
}

/// `d silu(x) / dx = sigmoid(x) + x sigmoid(x) (1 - sigmoid(x))`.
pub fn silu_grad(x: f64) -> f64 {
    let s = sigmoid(x);
    s + x * s * (1.0 - s)
}
