//! `mamba_ops::cross_entropy` on the CPU against a plain f64 loop reference, forward and
//! gradient, for f32, bf16 and f64 logits; plus its errors.

mod common;

use candle_core::{DType, Device, Result, Tensor, Var};
use common::{assert_close, bits, flat, rng, uniform};
use mamba_ops::cross_entropy;
use rand::Rng;

/// Reference: `loss = mean_i (ln Σ_j exp x_ij − x_i,t_i)` and its gradient times `scale`,
/// `scale / n · (softmax(x_i) − onehot(t_i))`, in f64 with plain loops.
fn reference(x: &[f64], t: &[u32], v: usize, scale: f64) -> (f64, Vec<f64>) {
    let n = t.len();
    let mut loss = 0.0;
    let mut grad = vec![0.0; x.len()];
    for i in 0..n {
        let row = &x[i * v..(i + 1) * v];
        let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lse = m + row.iter().map(|a| (a - m).exp()).sum::<f64>().ln();
        loss += lse - row[t[i] as usize];
        for j in 0..v {
            let onehot = if j == t[i] as usize { 1.0 } else { 0.0 };
            grad[i * v + j] = scale / n as f64 * ((row[j] - lse).exp() - onehot);
        }
    }
    (loss / n as f64, grad)
}

/// Random logits in [-8, 8) with one row shifted by +30 (the max subtraction matters there) and
/// some classes at -inf (masked), and random targets.
fn inputs(n: usize, v: usize, seed: u64) -> (Vec<f64>, Vec<u32>) {
    let mut r = rng(seed);
    let mut x = uniform(&mut r, n * v, -8.0, 8.0);
    for a in &mut x[(n / 2) * v..(n / 2 + 1) * v] {
        *a += 30.0;
    }
    let t: Vec<u32> = (0..n).map(|_| r.gen_range(0..v as u32)).collect();
    if v > 2 {
        for i in 0..n {
            let j = (t[i] as usize + 1) % v; // never the target
            x[i * v + j] = f64::NEG_INFINITY;
        }
    }
    (x, t)
}

/// Runs the op on `x` in `dtype`, then `(loss · scale).backward()`; returns the loss, its dtype,
/// the gradient (as f64) and the gradient's dtype.
fn run(x: &[f64], t: &[u32], v: usize, dtype: DType, scale: f64) -> Result<(f64, DType, Vec<f64>, DType)> {
    let n = t.len();
    let xv = Var::from_tensor(&Tensor::from_slice(x, (n, v), &Device::Cpu)?.to_dtype(dtype)?)?;
    let tt = Tensor::from_slice(t, n, &Device::Cpu)?;
    let loss = cross_entropy(xv.as_tensor(), &tt)?;
    let grads = loss.affine(scale, 0.0)?.backward()?;
    let g = grads.get(xv.as_tensor()).ok_or_else(|| candle_core::Error::Msg("no gradient".into()))?;
    Ok((loss.to_dtype(DType::F64)?.to_scalar::<f64>()?, loss.dtype(), flat(g)?, g.dtype()))
}

/// The values `x` rounded to `dtype` and back, so the reference sees exactly the op's inputs.
fn rounded(x: &[f64], dtype: DType) -> Vec<f64> {
    let t = Tensor::from_slice(x, x.len(), &Device::Cpu).and_then(|t| t.to_dtype(dtype));
    match t.and_then(|t| flat(&t)) {
        Ok(v) => v,
        Err(e) => panic!("rounding to {dtype:?}: {e}"),
    }
}

#[test]
fn forward_and_gradient_match_f64_reference() -> Result<()> {
    // (dtype, loss dtype, loss bound, gradient bound): bf16 gradients are rounded to 8 significant
    // bits (unit roundoff 2^-8 = 3.9e-3).
    let cases = [
        (DType::F64, DType::F64, 1e-13, 1e-13),
        (DType::F32, DType::F32, 1e-6, 2e-6),
        (DType::BF16, DType::F32, 1e-6, 5e-3),
    ];
    for &(n, v, seed) in &[(1, 1, 1), (3, 2, 2), (13, 257, 3), (6, 1000, 4), (4, 5003, 5)] {
        let (x, t) = inputs(n, v, seed);
        for &(dtype, loss_dtype, loss_bound, grad_bound) in &cases {
            let xr = rounded(&x, dtype);
            let (want_loss, want_grad) = reference(&xr, &t, v, 2.5);
            let (loss, got_loss_dtype, grad, grad_dtype) = run(&x, &t, v, dtype, 2.5)?;
            let what = format!("{dtype:?} ({n}, {v})");
            assert_eq!(got_loss_dtype, loss_dtype, "{what}: loss dtype");
            assert_eq!(grad_dtype, dtype, "{what}: gradient dtype");
            assert_close(&format!("{what} loss"), &[loss], &[want_loss], loss_bound);
            assert_close(&format!("{what} gradient"), &grad, &want_grad, grad_bound);
        }
    }
    Ok(())
}

#[test]
fn strided_logits_are_accepted() -> Result<()> {
    let (n, v) = (5, 33);
    let (x, t) = inputs(n, v, 9);
    // The same logits stored transposed: (v, n).t() is a non-contiguous (n, v) view.
    let xt: Vec<f64> = (0..v * n).map(|k| x[(k % n) * v + k / n]).collect();
    let logits = Tensor::from_slice(&xt, (v, n), &Device::Cpu)?.t()?;
    assert!(!logits.is_contiguous());
    let loss = cross_entropy(&logits, &Tensor::from_slice(&t, n, &Device::Cpu)?)?;
    let (want, _) = reference(&x, &t, v, 1.0);
    assert_close("transposed logits loss", &[loss.to_scalar::<f64>()?], &[want], 1e-13);
    Ok(())
}

#[test]
fn repeated_runs_are_bit_identical() -> Result<()> {
    let (n, v) = (64, 3001);
    let (x, t) = inputs(n, v, 11);
    let (l1, _, g1, _) = run(&x, &t, v, DType::F32, 1.0)?;
    let (l2, _, g2, _) = run(&x, &t, v, DType::F32, 1.0)?;
    assert_eq!(l1.to_bits(), l2.to_bits());
    assert_eq!(bits(&g1), bits(&g2));
    Ok(())
}

#[test]
fn rejects_out_of_range_targets() -> Result<()> {
    let x = Tensor::zeros((3, 7), DType::F32, &Device::Cpu)?;
    let t = Tensor::new(&[0u32, 6, 7], &Device::Cpu)?;
    let err = cross_entropy(&x, &t).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("target 7 at row 2") && err.contains("vocabulary of 7"), "unexpected error: {err:?}");
    Ok(())
}

#[test]
fn rejects_bad_shapes_and_dtypes() -> Result<()> {
    let dev = Device::Cpu;
    let x = Tensor::zeros((3, 7), DType::F32, &dev)?;
    let t3 = Tensor::new(&[0u32, 1, 2], &dev)?;
    let cases = [
        (x.clone(), Tensor::new(&[0u32, 1], &dev)?, "`targets` must have shape [3]"),
        (x.clone(), t3.unsqueeze(1)?, "`targets` must have shape [3]"),
        (x.clone(), t3.to_dtype(DType::I64)?, "`targets` must be u32"),
        (x.unsqueeze(0)?, t3.clone(), "`logits` must be (rows >= 1, classes >= 1)"),
        (Tensor::zeros((3, 0), DType::F32, &dev)?, t3.clone(), "`logits` must be (rows >= 1, classes >= 1)"),
        (x.to_dtype(DType::F16)?, t3.clone(), "`logits` must be f32, bf16 or f64"),
    ];
    for (logits, targets, want) in cases {
        let err = cross_entropy(&logits, &targets).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            err.contains(want),
            "logits {:?} targets {:?}: expected {want:?}, got {err:?}",
            logits.dims(),
            targets.dims()
        );
    }
    Ok(())
}
