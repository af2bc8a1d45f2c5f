//! The floating-point types the CPU kernels compute in (`f32`, `f64`) and the scalar activation
//! functions they share, written once so forward and backward agree to the last bit.

use candle_core::{bail, DType, Result, Tensor, WithDType};

/// A float the CPU kernels can compute in. Implemented for `f32` and `f64` only.
pub(crate) trait Real: WithDType + std::ops::Neg<Output = Self> {
    fn exp(self) -> Self;
    fn ln_1p(self) -> Self;
    fn sqrt(self) -> Self;
}

impl Real for f32 {
    fn exp(self) -> Self {
        f32::exp(self)
    }
    fn ln_1p(self) -> Self {
        f32::ln_1p(self)
    }
    fn sqrt(self) -> Self {
        f32::sqrt(self)
    }
}

impl Real for f64 {
    fn exp(self) -> Self {
        f64::exp(self)
    }
    fn ln_1p(self) -> Self {
        f64::ln_1p(self)
    }
    fn sqrt(self) -> Self {
        f64::sqrt(self)
    }
}

/// Logistic sigmoid `1 / (1 + e^-x)`.
pub(crate) fn sigmoid<T: Real>(x: T) -> T {
    T::one() / (T::one() + (-x).exp())
}

/// `softplus(x) = ln(1 + e^x)`, returning `x` itself above 20 like PyTorch's `F.softplus`
/// (threshold 20), which Mamba's reference uses. Its derivative is `sigmoid(x)` everywhere.
pub(crate) fn softplus<T: Real>(x: T) -> T {
    if x > T::from_f64(20.0) {
        x
    } else {
        x.exp().ln_1p()
    }
}

/// `silu(x) = x * sigmoid(x)` and its derivative `sigmoid(x) * (1 + x * (1 - sigmoid(x)))`.
pub(crate) fn silu_and_grad<T: Real>(x: T) -> (T, T) {
    let s = sigmoid(x);
    (x * s, s * (T::one() + x * (T::one() - s)))
}

/// The dtype an op computes in: `f64` when every input is `f64` (tests use this for tight
/// comparisons), otherwise `f32`. `f16`/`bf16` inputs are converted to `f32` for the op (the
/// public wrappers convert the result back to the dtype of their first input); other dtypes are
/// an error naming `op`.
pub(crate) fn compute_dtype(op: &str, inputs: &[&Tensor]) -> Result<DType> {
    let mut all_f64 = true;
    for t in inputs {
        match t.dtype() {
            DType::F64 => {}
            DType::F32 | DType::F16 | DType::BF16 => all_f64 = false,
            other => bail!("{op}: unsupported dtype {other:?}; expected f32, f64, f16 or bf16"),
        }
    }
    Ok(if all_f64 { DType::F64 } else { DType::F32 })
}
