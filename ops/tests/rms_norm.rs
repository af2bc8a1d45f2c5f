//! `mamba_ops::rms_norm` against the f64 reference and finite differences, through real autograd;
//! bad arguments are errors. Bounds as in the other op tests: f32 forward < 2e-6, f32 gradients
//! < 1e-5, f64 < 1e-12.

#![allow(clippy::unwrap_used)]

mod common;

use candle_core::{DType, Device, Result, Tensor};
use common::{assert_close, flat, grad, rng, uniform, var, weighted_sum};
use mamba_ops::reference::{rms_norm_backward, rms_norm_forward};

/// (leading dims, d, eps): one row (not d = 1: there dx ∝ eps / (x² + eps) is all cancellation in
/// f32), ragged widths (not multiples of 32), 130m's 768, many rows
/// (several strips of the weight-gradient partial sums), eps 0.
const SHAPES: [(&[usize], usize, f64); 6] = [
    (&[1], 2, 1e-5),
    (&[3], 5, 1e-5),
    (&[2, 7], 33, 1e-6),
    (&[2, 40], 768, 1e-5),
    (&[300], 70, 1e-5),
    (&[4, 5], 16, 0.0),
];

#[test]
fn forward_and_gradients_match_reference() -> Result<()> {
    let mut r = rng(1);
    for (lead, d, eps) in SHAPES {
        let mut dims = lead.to_vec();
        dims.push(d);
        let n: usize = dims.iter().product();
        let x = uniform(&mut r, n, -2.0, 2.0);
        let w = uniform(&mut r, d, 0.5, 1.5);
        let g = uniform(&mut r, n, -1.0, 1.0);
        let want_y = rms_norm_forward(&x, &w, eps);
        let (want_dx, want_dw) = rms_norm_backward(&x, &w, eps, &g);
        for (dtype, fwd, bwd) in [(DType::F32, 2e-6, 1e-5), (DType::F64, 1e-12, 1e-12)] {
            let xv = var(&x, &dims, dtype)?;
            let wv = var(&w, &[d], dtype)?;
            let y = mamba_ops::rms_norm(xv.as_tensor(), wv.as_tensor(), eps)?;
            assert_eq!(y.dims(), &dims[..]);
            assert_eq!(y.dtype(), dtype);
            let grads = weighted_sum(&y, &g)?.backward()?;
            let what = format!("{dtype:?} {dims:?} eps {eps}");
            assert_close(&format!("{what} forward"), &flat(&y)?, &want_y, fwd);
            assert_close(&format!("{what} dx"), &grad(&grads, xv.as_tensor(), "x")?, &want_dx, bwd);
            assert_close(&format!("{what} dw"), &grad(&grads, wv.as_tensor(), "w")?, &want_dw, bwd);
        }
    }
    Ok(())
}

#[test]
fn reference_gradients_match_finite_differences() {
    let mut r = rng(2);
    let (rows, d, eps) = (3, 6, 1e-5);
    let x = uniform(&mut r, rows * d, -2.0, 2.0);
    let w = uniform(&mut r, d, 0.5, 1.5);
    let g = uniform(&mut r, rows * d, -1.0, 1.0);
    let loss = |x: &[f64], w: &[f64]| rms_norm_forward(x, w, eps).iter().zip(&g).map(|(a, b)| a * b).sum::<f64>();
    let (dx, dw) = rms_norm_backward(&x, &w, eps, &g);
    let h = 1e-6;
    for i in 0..x.len() {
        let (mut p, mut m) = (x.clone(), x.clone());
        p[i] += h;
        m[i] -= h;
        let fd = (loss(&p, &w) - loss(&m, &w)) / (2.0 * h);
        assert!((fd - dx[i]).abs() < 1e-7 * (1.0 + fd.abs()), "dx[{i}]: {} vs finite difference {fd}", dx[i]);
    }
    for j in 0..d {
        let (mut p, mut m) = (w.clone(), w.clone());
        p[j] += h;
        m[j] -= h;
        let fd = (loss(&x, &p) - loss(&x, &m)) / (2.0 * h);
        assert!((fd - dw[j]).abs() < 1e-7 * (1.0 + fd.abs()), "dw[{j}]: {} vs finite difference {fd}", dw[j]);
    }
}

#[test]
fn bf16_input_keeps_its_dtype_and_computes_in_f32() -> Result<()> {
    let mut r = rng(3);
    let (rows, d) = (4, 40);
    let x = uniform(&mut r, rows * d, -2.0, 2.0);
    let w = uniform(&mut r, d, 0.5, 1.5);
    let xt = Tensor::from_slice(&x, (rows, d), &Device::Cpu)?.to_dtype(DType::BF16)?;
    let wt = Tensor::from_slice(&w, d, &Device::Cpu)?;
    let y = mamba_ops::rms_norm(&xt, &wt, 1e-5)?;
    assert_eq!(y.dtype(), DType::BF16);
    let want = rms_norm_forward(&flat(&xt)?, &w, 1e-5);
    assert_close("bf16 forward", &flat(&y)?, &want, 1e-2);
    Ok(())
}

#[test]
fn deterministic_across_runs() -> Result<()> {
    let mut r = rng(4);
    let (rows, d) = (700, 96);
    let x = uniform(&mut r, rows * d, -2.0, 2.0);
    let w = uniform(&mut r, d, 0.5, 1.5);
    let g = uniform(&mut r, rows * d, -1.0, 1.0);
    let once = || -> Result<Vec<u64>> {
        let wv = var(&w, &[d], DType::F32)?;
        let xt = Tensor::from_slice(&x, (rows, d), &Device::Cpu)?.to_dtype(DType::F32)?;
        let y = mamba_ops::rms_norm(&xt, wv.as_tensor(), 1e-5)?;
        let grads = weighted_sum(&y, &g)?.backward()?;
        Ok(grad(&grads, wv.as_tensor(), "w")?.iter().map(|v| v.to_bits()).collect())
    };
    assert_eq!(once()?, once()?);
    Ok(())
}

#[test]
fn bad_arguments_are_errors() -> Result<()> {
    let x = Tensor::zeros((2, 3), DType::F32, &Device::Cpu)?;
    let err = mamba_ops::rms_norm(&x, &Tensor::zeros(4, DType::F32, &Device::Cpu)?, 1e-5).unwrap_err().to_string();
    assert!(err.contains("rms_norm") && err.contains("weight"), "{err}");
    let err = mamba_ops::rms_norm(&x, &Tensor::zeros(3, DType::F32, &Device::Cpu)?, -1.0).unwrap_err().to_string();
    assert!(err.contains("eps"), "{err}");
    let err = mamba_ops::rms_norm(&x.to_dtype(DType::U32)?, &Tensor::zeros(3, DType::U32, &Device::Cpu)?, 1e-5)
        .unwrap_err()
        .to_string();
    assert!(err.contains("rms_norm"), "{err}");
    Ok(())
}

/// `rms_norm_to(x, w, eps, BF16)` on f32 `x` is exactly `rms_norm(x, w, eps).to_dtype(BF16)`,
/// forward and backward (its bf16 gradient is read as the cast's backward would pass it on), as
/// one op instead of two autograd nodes.
#[test]
fn bf16_output_equals_norm_then_cast() -> Result<()> {
    let (rows, d) = (5, 12);
    let mut r = rng(21);
    let xs = uniform(&mut r, rows * d, -2.0, 2.0);
    let ws = uniform(&mut r, d, 0.5, 1.5);
    let probe = uniform(&mut r, rows * d, -1.0, 1.0);
    let run = |fused: bool| -> Result<(Vec<f64>, Vec<f64>, Vec<f64>)> {
        let x = var(&xs, &[rows, d], DType::F32)?;
        let w = var(&ws, &[d], DType::F32)?;
        let y = if fused {
            mamba_ops::rms_norm_to(x.as_tensor(), w.as_tensor(), 1e-5, DType::BF16)?
        } else {
            mamba_ops::rms_norm(x.as_tensor(), w.as_tensor(), 1e-5)?.to_dtype(DType::BF16)?
        };
        assert_eq!(y.dtype(), DType::BF16);
        let g = weighted_sum(&y, &probe)?.backward()?;
        Ok((flat(&y)?, grad(&g, &x, "x")?, grad(&g, &w, "weight")?))
    };
    let (fused, composed) = (run(true)?, run(false)?);
    assert_eq!(fused, composed);
    let x = Tensor::zeros((2, 3), DType::F32, &Device::Cpu)?;
    let w = Tensor::ones(3, DType::F32, &Device::Cpu)?;
    let e = mamba_ops::rms_norm_to(&x, &w, 1e-5, DType::F16).expect_err("f16 output is not offered").to_string();
    assert!(e.contains("rms_norm") && e.contains("F16"), "{e}");
    Ok(())
}
