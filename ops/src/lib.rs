//! Custom candle ops for Mamba, each with a CPU path, a backward, and a plain reference to test
//! against. Layout is channel-last everywhere: `(batch, seq_len, channels)`, as candle's linear
//! layers produce it.
//!
//! - [`selective_scan`]: `y = scan(u, softplus(delta + delta_bias), A = -exp(A_log), B, C) + D·u`,
//!   gated by `silu(z)` (Mamba paper, Algorithm 2; `selective_scan_fn` in state-spaces/mamba).
//! - [`causal_conv1d_silu`]: depthwise causal conv1d (kernel 4) + bias + SiLU.

mod causal_conv1d;
mod cpu_storage;
mod real;
pub mod reference;
mod selective_scan;

use candle_core::{Result, Tensor};

/// Selective scan with D skip and silu(z) gating.
///
/// Shapes: `u, delta, z: (b, l, d)`, `a_log: (d, n)`, `b, c: (b, l, n)`, `d_skip, delta_bias: (d,)`.
/// Returns `(b, l, d)`. `delta` gets `softplus(delta + delta_bias)` applied inside.
#[allow(clippy::too_many_arguments)]
pub fn selective_scan(
    u: &Tensor,
    delta: &Tensor,
    a_log: &Tensor,
    b: &Tensor,
    c: &Tensor,
    d_skip: &Tensor,
    z: &Tensor,
    delta_bias: &Tensor,
) -> Result<Tensor> {
    selective_scan::selective_scan(u, delta, a_log, b, c, d_skip, z, delta_bias)
}

/// Depthwise causal conv1d + bias + SiLU. `x: (b, l, d)`, `weight: (d, k)`, `bias: (d,)` → `(b, l, d)`.
pub fn causal_conv1d_silu(x: &Tensor, weight: &Tensor, bias: &Tensor) -> Result<Tensor> {
    causal_conv1d::causal_conv1d_silu(x, weight, bias)
}
