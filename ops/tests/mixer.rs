//! `mixer_conv` and `mixer_scan` against the ops they fuse: the plain `reference::causal_conv1d_silu`
//! and `reference::selective_scan` applied to the narrowed halves of `xz` (both tested against f64 references
//! and finite differences in their own test files). Forward and every gradient, through real
//! autograd, in f64 (exact up to summation order), f32, and bf16 IO against f32.

mod common;

use candle_core::{DType, Device, Result, Tensor, Var};
use common::{assert_close, flat, rng, scan_tensors, uniform, weighted_sum};
use mamba_ops::reference::{causal_conv1d_silu, selective_scan};
use mamba_ops::{mixer_conv, mixer_scan, ScanTensors};

/// Inputs in the order of `mixer_scan`: xz, delta, b, c, conv_w, conv_b, a_log, d_skip, delta_bias.
fn inputs(seed: u64, (b, l, d, n, k): (usize, usize, usize, usize, usize)) -> Vec<(Vec<f64>, Vec<usize>)> {
    let mut r = rng(seed);
    let mut t = |shape: &[usize], lo: f64, hi: f64| (uniform(&mut r, shape.iter().product(), lo, hi), shape.to_vec());
    vec![
        t(&[b, l, 2 * d], -2.0, 2.0), // xz
        t(&[b, l, d], -3.0, 1.0),     // delta (raw: the op adds delta_bias and applies softplus)
        t(&[b, l, n], -1.0, 1.0),     // B
        t(&[b, l, n], -1.0, 1.0),     // C
        t(&[d, k], -1.0, 1.0),        // conv_w
        t(&[d], -1.0, 1.0),           // conv_b
        t(&[d, n], -1.0, 2.5),        // A_log
        t(&[d], -1.0, 1.0),           // D
        t(&[d], -4.0, -1.0),          // delta_bias
    ]
}

fn vars(inp: &[(Vec<f64>, Vec<usize>)], dtypes: &[DType]) -> Result<Vec<Var>> {
    inp.iter()
        .zip(dtypes)
        .map(|((v, s), &dt)| Var::from_tensor(&Tensor::from_slice(v, s.as_slice(), &Device::Cpu)?.to_dtype(dt)?))
        .collect()
}

/// The fused op or the composition it replaces, on `t` (the inputs as tensors).
fn scan_fused(t: &[Tensor]) -> Result<Tensor> {
    mixer_scan(&scan_tensors(t, None))
}

fn scan_composed(t: &[Tensor]) -> Result<Tensor> {
    let d = t[4].dim(0)?;
    let x = t[0].narrow(2, 0, d)?;
    let z = t[0].narrow(2, d, d)?;
    let u = causal_conv1d_silu(&x, &t[4], &t[5])?;
    selective_scan(&u, &t[1], &t[6], &t[2], &t[3], &t[7], &z, &t[8])
}

/// Output and the input gradients of `sum(f(inputs) * probe)` (empty for inputs `f` ignores).
fn run(f: fn(&[Tensor]) -> Result<Tensor>, vs: &[Var], probe_seed: u64) -> Result<(Vec<f64>, Vec<Vec<f64>>)> {
    let ts: Vec<Tensor> = vs.iter().map(|v| v.as_tensor().clone()).collect();
    let out = f(&ts)?;
    let probe = uniform(&mut rng(probe_seed), out.elem_count(), -1.0, 1.0);
    let grads = weighted_sum(&out, &probe)?.backward()?;
    let gs = ts.iter().map(|t| grads.get(t).map_or(Ok(Vec::new()), flat)).collect::<Result<_>>()?;
    Ok((flat(&out)?, gs))
}

const NAMES: [&str; 9] = ["xz", "delta", "b", "c", "conv_w", "conv_b", "a_log", "d_skip", "delta_bias"];

#[test]
fn mixer_scan_equals_conv_then_scan() -> Result<()> {
    for (seed, dims) in [(1, (1, 1, 1, 1, 4)), (2, (2, 37, 5, 3, 4)), (3, (2, 70, 33, 16, 4)), (4, (1, 20, 9, 7, 2))] {
        let inp = inputs(seed, dims);
        for (dtype, bound) in [(DType::F64, 1e-12), (DType::F32, 2e-6)] {
            let (want, want_g) = run(scan_composed, &vars(&inp, &[dtype; 9])?, seed + 100)?;
            let (got, got_g) = run(scan_fused, &vars(&inp, &[dtype; 9])?, seed + 100)?;
            assert_close(&format!("{dims:?} {dtype:?} output"), &got, &want, bound);
            for ((name, g), w) in NAMES.iter().zip(&got_g).zip(&want_g) {
                assert_close(&format!("{dims:?} {dtype:?} d{name}"), g, w, bound);
            }
        }
    }
    Ok(())
}

fn conv_fused(t: &[Tensor]) -> Result<Tensor> {
    mixer_conv(&t[0], None, &t[4], &t[5])
}

fn conv_composed(t: &[Tensor]) -> Result<Tensor> {
    causal_conv1d_silu(&t[0].narrow(2, 0, t[4].dim(0)?)?, &t[4], &t[5])
}

#[test]
fn mixer_conv_equals_conv_of_x_half() -> Result<()> {
    for (seed, dims) in [(5, (1, 1, 1, 1, 4)), (6, (2, 41, 13, 1, 4)), (7, (3, 9, 4, 1, 3))] {
        let inp = inputs(seed, dims);
        let (want, want_g) = run(conv_composed, &vars(&inp, &[DType::F64; 9])?, seed)?;
        let (got, got_g) = run(conv_fused, &vars(&inp, &[DType::F64; 9])?, seed)?;
        assert_close(&format!("conv {dims:?} output"), &got, &want, 1e-14);
        for i in [0, 4, 5] {
            assert_close(&format!("conv {dims:?} d{}", NAMES[i]), &got_g[i], &want_g[i], 1e-14);
        }
        // The z half of xz does not reach the output: its gradient is exactly zero.
        let d = dims.2;
        assert!(got_g[0].chunks(2 * d).all(|row| row[d..].iter().all(|&v| v == 0.0)));
    }
    Ok(())
}

/// bf16 `xz` and `delta` (what the model feeds under mixed precision) against f32 on the same
/// bf16-rounded values: output and gradients come back in bf16 and differ only by bf16 rounding.
#[test]
fn bf16_io_close_to_f32() -> Result<()> {
    let dims = (2, 64, 24, 16, 4);
    let mut inp = inputs(9, dims);
    for (values, _) in inp.iter_mut().take(2) {
        for v in values.iter_mut() {
            *v = half::bf16::from_f64(*v).to_f64();
        }
    }
    let mut dtypes = [DType::F32; 9];
    let (want, want_g) = run(scan_fused, &vars(&inp, &dtypes)?, 10)?;
    dtypes[0] = DType::BF16;
    dtypes[1] = DType::BF16;
    let vs = vars(&inp, &dtypes)?;
    let ts: Vec<Tensor> = vs.iter().map(|v| v.as_tensor().clone()).collect();
    assert_eq!(scan_fused(&ts)?.dtype(), DType::BF16);
    assert_eq!(mixer_conv(&ts[0], None, &ts[4], &ts[5])?.dtype(), DType::BF16);
    let (got, got_g) = run(scan_fused, &vs, 10)?;
    assert_close("bf16 output", &got, &want, 1e-2);
    for ((name, g), w) in NAMES.iter().zip(&got_g).zip(&want_g) {
        assert_close(&format!("bf16 d{name}"), g, w, 2e-2);
    }
    Ok(())
}

/// The rows forms on `(b·l, width)` views of the same inputs: the sequence length comes from the
/// argument, and outputs and gradients are the 3-D ones, bit for bit, in the 2-D shape.
fn scan_rows(t: &[Tensor]) -> Result<Tensor> {
    let (b, l, _) = t[0].dims3()?;
    let rows = |x: &Tensor| x.reshape((b * l, ()));
    let mut t = scan_tensors(t, Some(l));
    (t.xz, t.delta, t.b, t.c) = (rows(&t.xz)?, rows(&t.delta)?, rows(&t.b)?, rows(&t.c)?);
    mixer_scan(&t)
}

fn conv_rows(t: &[Tensor]) -> Result<Tensor> {
    let (b, l, _) = t[0].dims3()?;
    mixer_conv(&t[0].reshape((b * l, ()))?, Some(l), &t[4], &t[5])
}

#[test]
fn rows_forms_equal_the_3d_ops() -> Result<()> {
    for (seed, dims) in [(12, (1, 5, 3, 2, 4)), (13, (3, 17, 6, 4, 4))] {
        let inp = inputs(seed, dims);
        let vs = vars(&inp, &[DType::F32; 9])?;
        let ts: Vec<Tensor> = vs.iter().map(|v| v.as_tensor().clone()).collect();
        let (b, l, d) = (dims.0, dims.1, dims.2);
        assert_eq!(scan_rows(&ts)?.dims(), &[b * l, d]);
        assert_eq!(conv_rows(&ts)?.dims(), &[b * l, d]);
        for (rows, full) in [
            (scan_rows as fn(&[Tensor]) -> Result<Tensor>, scan_fused as fn(&[Tensor]) -> Result<Tensor>),
            (conv_rows, conv_fused),
        ] {
            let (want, want_g) = run(full, &vs, seed)?;
            let (got, got_g) = run(rows, &vs, seed)?;
            assert_eq!(got, want, "{dims:?} output");
            for ((name, g), w) in NAMES.iter().zip(&got_g).zip(&want_g) {
                assert_eq!(g, w, "{dims:?} d{name}");
            }
        }
    }
    // The rows must split into whole sequences, and the error says so.
    let ts: Vec<Tensor> =
        vars(&inputs(14, (2, 6, 3, 2, 4)), &[DType::F32; 9])?.iter().map(|v| v.as_tensor().clone()).collect();
    let e = mixer_conv(&ts[0].reshape((12, 6))?, Some(5), &ts[4], &ts[5])
        .expect_err("12 rows are not sequences of 5")
        .to_string();
    assert!(e.contains("mixer_conv") && e.contains("len = 5"), "{e}");
    Ok(())
}

#[test]
fn bad_shapes_and_dtypes_are_named() -> Result<()> {
    let inp = inputs(11, (1, 8, 4, 2, 4));
    let ts: Vec<Tensor> = vars(&inp, &[DType::F32; 9])?.iter().map(|v| v.as_tensor().clone()).collect();
    let err = |r: Result<Tensor>| r.expect_err("must fail").to_string();
    let odd = Tensor::zeros((1, 8, 7), DType::F32, &Device::Cpu)?;
    assert!(err(mixer_conv(&odd, None, &ts[4], &ts[5])).contains("`xz` must be"));
    let with_delta = |delta: Tensor| ScanTensors { delta, ..scan_tensors(&ts, None) };
    let e = err(mixer_scan(&with_delta(Tensor::zeros((1, 8, 5), DType::F32, &Device::Cpu)?)));
    assert!(e.contains("mixer_scan") && e.contains("`delta`"), "{e}");
    let e = err(mixer_scan(&with_delta(ts[1].to_dtype(DType::BF16)?)));
    assert!(e.contains("xz's dtype"), "{e}");
    let xz_int = ts[0].to_dtype(DType::U32)?;
    assert!(err(mixer_conv(&xz_int, None, &ts[4], &ts[5])).contains("bf16, f32 or f64"));
    Ok(())
}
