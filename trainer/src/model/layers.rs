//! Small building blocks shared by the parallel forward and the recurrent step: bias-free linear
//! layers (PyTorch `nn.Linear` convention, weight `(out, in)`), RMSNorm and softplus.

use candle_core::{DType, Result, Tensor};

/// `x @ wᵀ` over the last dim, for `x` of any rank: `(.., in)` → `(.., out)`. A 2-D `x` goes
/// straight to the matmul; other ranks are reshaped to 2-D and back (two more autograd nodes).
pub fn linear(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    if x.rank() == 2 {
        return x.matmul(&w.t()?); // (rows, out)
    }
    let dims = x.dims().to_vec();
    let (out, inp) = w.dims2()?;
    let rows: usize = dims[..dims.len() - 1].iter().product();
    let x2 = x.reshape((rows, inp))?; // (rows, in)
    let y = x2.matmul(&w.t()?)?; // (rows, out)
    let mut out_dims = dims;
    let last = out_dims.len() - 1;
    out_dims[last] = out;
    y.reshape(out_dims)
}

/// The dtype of the residual stream and of normalisation statistics: f32, or f64 when the
/// model runs in f64 (gradient checks). Half-precision activations accumulate in f32.
pub fn acc_dtype(dtype: DType) -> DType {
    if dtype == DType::F64 {
        DType::F64
    } else {
        DType::F32
    }
}

/// RMSNorm as in mamba_ssm / HF `MambaRMSNorm`: statistics in f32, `w · x / √(mean(x²) + eps)`,
/// as one fused op (`mamba_ops::rms_norm`, CPU and CUDA, with its own backward).
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    let dtype = x.dtype();
    let x = x.to_dtype(acc_dtype(dtype))?; // (.., d)
    mamba_ops::rms_norm(&x, weight, eps)?.to_dtype(dtype)
}

/// [`rms_norm`] of the residual stream `x` (f32) with the result in the compute dtype `dtype`: under
/// mixed precision (bf16) one op writes bf16 directly, with no cast node after it (a cast node's
/// backward costs a cast and an f32 gradient add per layer).
pub fn rms_norm_into(x: &Tensor, weight: &Tensor, eps: f64, dtype: DType) -> Result<Tensor> {
    if x.dtype() == dtype {
        return rms_norm(x, weight, eps);
    }
    mamba_ops::rms_norm_to(x, weight, eps, dtype)
}

/// softplus(x) = log(1 + eˣ), computed stably as relu(x) + log(1 + e^-|x|).
pub fn softplus(x: &Tensor) -> Result<Tensor> {
    let tail = x.abs()?.neg()?.exp()?.affine(1.0, 1.0)?.log()?;
    x.relu()? + tail
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn softplus_matches_definition_and_is_stable() {
        let x = Tensor::new(&[-30f32, -1.0, 0.0, 2.0, 100.0], &Device::Cpu).unwrap();
        let got: Vec<f32> = softplus(&x).unwrap().to_vec1().unwrap();
        let want = [(-30f64).exp(), (1.0 + (-1f64).exp()).ln(), 2f64.ln(), (1.0 + 2f64.exp()).ln(), 100.0];
        for (g, w) in got.iter().zip(want) {
            assert!((*g as f64 - w).abs() <= 1e-6 * w.abs().max(1e-6), "{g} vs {w}");
        }
    }

    #[test]
    fn rms_norm_normalises_rows() {
        let x = Tensor::new(&[[3f32, 4.0], [1.0, 1.0]], &Device::Cpu).unwrap();
        let w = Tensor::new(&[1f32, 2.0], &Device::Cpu).unwrap();
        let y: Vec<Vec<f32>> = rms_norm(&x, &w, 0.0).unwrap().to_vec2().unwrap();
        let r = (12.5f32).sqrt();
        assert!((y[0][0] - 3.0 / r).abs() < 1e-6 && (y[0][1] - 8.0 / r).abs() < 1e-6);
        assert!((y[1][0] - 1.0).abs() < 1e-6 && (y[1][1] - 2.0).abs() < 1e-6);
    }

    #[test]
    fn linear_keeps_leading_dims() {
        let x = Tensor::ones((2, 3, 4), DType::F32, &Device::Cpu).unwrap();
        let w = Tensor::ones((5, 4), DType::F32, &Device::Cpu).unwrap();
        let y = linear(&x, &w).unwrap();
        assert_eq!(y.dims(), &[2, 3, 5]);
        assert_eq!(y.flatten_all().unwrap().to_vec1::<f32>().unwrap(), vec![4.0; 30]);
    }
}
