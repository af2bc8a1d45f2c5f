//! `mamba_ops::causal_conv1d_silu` against the f64 reference, finite differences and candle's own
//! grouped `conv1d`, through real autograd. Error measure and bounds as in `selective_scan.rs`:
//! f32 forward < 2e-6, f32 gradients < 1e-5, f64 < 1e-12, finite differences < 1e-8.

mod common;

use candle_core::{DType, Device, Result, Tensor, Var};
use common::conv::{field_mut, grad_field, inputs, op_loss, run_op, upstream, FIELDS};
use common::{assert_close, bits, finite_diff, flat, grad, weighted_sum};
use mamba_ops::reference::{causal_conv1d_silu_backward, causal_conv1d_silu_forward, ConvInputs};

/// (b, l, d, k, seed): Mamba's k = 4, kernels longer than the sequence, k = 1, channel counts
/// that are not multiples of the 64-channel gradient blocks.
const SHAPES: [(usize, usize, usize, usize, u64); 6] =
    [(1, 1, 1, 1, 1), (1, 1, 3, 4, 2), (2, 3, 5, 4, 3), (3, 17, 70, 4, 4), (2, 50, 129, 3, 5), (1, 9, 2, 6, 6)];

#[test]
fn forward_and_gradients_match_reference() -> Result<()> {
    for (b, l, d, k, seed) in SHAPES {
        let x = inputs(b, l, d, k, seed);
        let g = upstream(&x, seed);
        let want_out = causal_conv1d_silu_forward(&x);
        let want = causal_conv1d_silu_backward(&x, &g);
        for (dtype, fwd_bound, grad_bound) in [(DType::F32, 2e-6, 1e-5), (DType::F64, 1e-12, 1e-12)] {
            let (out, got) = run_op(&x, &g, dtype)?;
            let what = format!("{dtype:?} {b}x{l}x{d}x{k}");
            assert_close(&format!("{what} forward"), &out, &want_out, fwd_bound);
            for (f, field) in FIELDS.iter().enumerate() {
                let name = format!("{what} d{field}");
                assert_close(&name, grad_field(&got, f), grad_field(&want, f), grad_bound);
            }
        }
    }
    Ok(())
}

#[test]
fn reference_and_op_gradients_match_finite_differences() -> Result<()> {
    for x in [inputs(1, 1, 1, 1, 10), inputs(2, 5, 3, 4, 11), inputs(1, 3, 2, 5, 12)] {
        let g = upstream(&x, 1);
        let ref_loss = |p: &ConvInputs| causal_conv1d_silu_forward(p).iter().zip(&g).map(|(o, w)| o * w).sum::<f64>();
        let fd_ref = finite_diff(&x, 3, field_mut, ref_loss);
        let fd_op = finite_diff(&x, 3, field_mut, |p| op_loss(p, &g));
        let reference = causal_conv1d_silu_backward(&x, &g);
        let (_, op) = run_op(&x, &g, DType::F64)?;
        for f in 0..3 {
            assert_close(&format!("reference d{} vs fd", FIELDS[f]), grad_field(&reference, f), &fd_ref[f], 1e-8);
            assert_close(&format!("op d{} vs fd", FIELDS[f]), grad_field(&op, f), &fd_op[f], 1e-8);
        }
    }
    Ok(())
}

/// Mamba's conv path in PyTorch: `Conv1d(d, d, k, groups=d, padding=k-1)(x)[..., :l]`, here with
/// candle's grouped conv1d on `(b, d, l)`, then SiLU. Gradients come from candle's conv backward.
#[test]
fn matches_candle_grouped_conv1d() -> Result<()> {
    let x = inputs(2, 11, 6, 4, 50);
    let g = upstream(&x, 50);
    let (out, got) = run_op(&x, &g, DType::F64)?;
    let dev = Device::Cpu;
    let xv = Var::from_tensor(&Tensor::from_slice(&x.x, (x.b, x.l, x.d), &dev)?)?;
    let wv = Var::from_tensor(&Tensor::from_slice(&x.weight, (x.d, x.k), &dev)?)?;
    let bv = Var::from_tensor(&Tensor::from_slice(&x.bias, x.d, &dev)?)?;
    let conv = xv
        .transpose(1, 2)?
        .contiguous()?
        .conv1d(&wv.unsqueeze(1)?, x.k - 1, 1, 1, x.d)? // (b, d, l + k - 1)
        .narrow(2, 0, x.l)?
        .broadcast_add(&bv.unsqueeze(1)?)?
        .silu()?
        .transpose(1, 2)?; // (b, l, d)
    assert_close("forward vs candle conv1d", &out, &flat(&conv)?, 1e-12);
    let grads = weighted_sum(&conv, &g)?.backward()?;
    assert_close("dx vs candle", &got.x, &grad(&grads, xv.as_tensor(), "x")?, 1e-12);
    assert_close("dweight vs candle", &got.weight, &grad(&grads, wv.as_tensor(), "weight")?, 1e-12);
    assert_close("dbias vs candle", &got.bias, &grad(&grads, bv.as_tensor(), "bias")?, 1e-12);
    Ok(())
}

fn f32_bits(x: &ConvInputs, g: &[f64]) -> Result<Vec<Vec<u64>>> {
    let (out, grads) = run_op(x, g, DType::F32)?;
    Ok(vec![bits(&out), bits(&grads.x), bits(&grads.weight), bits(&grads.bias)])
}

#[test]
fn results_are_bit_identical_across_runs_and_thread_counts() -> Result<()> {
    let x = inputs(3, 40, 200, 4, 60);
    let g = upstream(&x, 60);
    let first = f32_bits(&x, &g)?;
    assert_eq!(first, f32_bits(&x, &g)?, "two runs differ");
    for threads in [1, 3, 7] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().map_err(candle_core::Error::wrap)?;
        assert_eq!(first, pool.install(|| f32_bits(&x, &g))?, "result differs with {threads} threads");
    }
    Ok(())
}

#[test]
fn non_contiguous_inputs_give_identical_results() -> Result<()> {
    let x = inputs(2, 7, 5, 4, 70);
    let g = upstream(&x, 70);
    let (want_out, want) = run_op(&x, &g, DType::F32)?;
    let dev = Device::Cpu;
    let f32t = |v: &[f64], shape: &[usize]| Tensor::from_slice(v, shape, &dev)?.to_dtype(DType::F32);
    let xv = Var::from_tensor(&f32t(&x.x, &[x.b, x.l, x.d])?.transpose(1, 2)?.contiguous()?)?; // (b, d, l)
    let wv = Var::from_tensor(&f32t(&x.weight, &[x.d, x.k])?.t()?.contiguous()?)?; // (k, d)
    let (xs, ws) = (xv.transpose(1, 2)?, wv.t()?);
    assert!(!xs.is_contiguous() && !ws.is_contiguous());
    let bv = Var::from_tensor(&f32t(&x.bias, &[x.d])?)?;
    let out = mamba_ops::reference::causal_conv1d_silu(&xs, &ws, bv.as_tensor())?;
    assert_eq!(bits(&flat(&out)?), bits(&want_out), "forward differs");
    let grads = weighted_sum(&out, &g)?.backward()?;
    let dx = grads.get(xv.as_tensor()).ok_or_else(|| candle_core::Error::Msg("no dx".into()))?;
    let dw = grads.get(wv.as_tensor()).ok_or_else(|| candle_core::Error::Msg("no dw".into()))?;
    assert_eq!(bits(&flat(&dx.transpose(1, 2)?)?), bits(&want.x), "dx differs");
    assert_eq!(bits(&flat(&dw.t()?)?), bits(&want.weight), "dweight differs");
    assert_eq!(bits(&grad(&grads, bv.as_tensor(), "bias")?), bits(&want.bias), "dbias differs");
    Ok(())
}

#[test]
fn dtypes_and_bad_arguments() -> Result<()> {
    let x = inputs(1, 6, 4, 4, 80);
    let g = upstream(&x, 80);
    let (out, _) = run_op(&x, &g, DType::BF16)?;
    assert_close("bf16 forward", &out, &causal_conv1d_silu_forward(&x), 0.05);
    let t = |shape: &[usize], dtype| Tensor::zeros(shape, dtype, &Device::Cpu);
    let y = mamba_ops::reference::causal_conv1d_silu(
        &t(&[1, 3, 2], DType::BF16)?,
        &t(&[2, 4], DType::F32)?,
        &t(&[2], DType::F32)?,
    )?;
    assert_eq!(y.dtype(), DType::BF16);
    let err = mamba_ops::reference::causal_conv1d_silu(
        &t(&[1, 3, 2], DType::F32)?,
        &t(&[3, 4], DType::F32)?,
        &t(&[2], DType::F32)?,
    )
    .expect_err("weight with wrong channel count must fail")
    .to_string();
    assert!(err.contains("`weight`"), "{err}");
    let err = mamba_ops::reference::causal_conv1d_silu(
        &t(&[1, 3, 2], DType::F32)?,
        &t(&[2, 4], DType::F32)?,
        &t(&[3], DType::F32)?,
    )
    .expect_err("bias with wrong length must fail")
    .to_string();
    assert!(err.contains("`bias`"), "{err}");
    Ok(())
}

#[test]
fn empty_batch_or_sequence_gives_empty_output_and_zero_gradients() -> Result<()> {
    for (b, l, d, k) in [(0, 4, 3, 4), (2, 0, 3, 4)] {
        let x = inputs(b, l, d, k, 90);
        let (out, grads) = run_op(&x, &[], DType::F32)?;
        assert!(out.is_empty());
        assert!(grads.weight.iter().chain(&grads.bias).all(|v| *v == 0.0));
        assert_eq!(grads.weight.len(), d * k);
    }
    Ok(())
}
