//! `mamba_ops::backward` (the ops' backward as functions, for a model that runs its own backward
//! pass) against candle's autograd through the same ops, on the CPU: RMSNorm (both output
//! dtypes, with and without the residual stream's gradient added), the residual add, the embedding, the cross-entropy and the mixer's split backward (the scan's, then
//! the conv's for both uses of its output). f64 exactly up to summation order; f32 and bf16 IO
//! within rounding. `tests/cuda_vs_cpu.rs` compares the GPU paths with these.
#![allow(clippy::unwrap_used)]

mod common;

use candle_core::{DType, Device, Result, Tensor, Var};
use common::{assert_close, flat, rng, scan_tensors, uniform, weighted_sum};
use mamba_ops::backward;

fn var(r: &mut rand_chacha::ChaCha8Rng, shape: &[usize], lo: f64, hi: f64, dtype: DType) -> Result<Var> {
    let v = uniform(r, shape.iter().product(), lo, hi);
    Var::from_tensor(&Tensor::from_slice(&v, shape, &Device::Cpu)?.to_dtype(dtype)?)
}

fn probe(r: &mut rand_chacha::ChaCha8Rng, shape: &[usize], dtype: DType) -> Result<(Vec<f64>, Tensor)> {
    let g = uniform(r, shape.iter().product(), -1.0, 1.0);
    let t = Tensor::from_slice(&g, shape, &Device::Cpu)?.to_dtype(dtype)?;
    Ok((g, t))
}

#[test]
fn rms_norm_backward_is_autograds() -> Result<()> {
    let mut r = rng(1);
    for (x_dtype, out, bound) in
        [(DType::F64, None, 1e-13), (DType::F32, None, 1e-6), (DType::F32, Some(DType::BF16), 1e-6)]
    {
        let x = var(&mut r, &[37, 24], -2.0, 2.0, x_dtype)?;
        let w = var(&mut r, &[24], 0.5, 1.5, x_dtype)?;
        let y = match out {
            None => mamba_ops::rms_norm(x.as_tensor(), w.as_tensor(), 1e-5)?,
            Some(o) => mamba_ops::rms_norm_to(x.as_tensor(), w.as_tensor(), 1e-5, o)?,
        };
        let (g, gt) = probe(&mut r, y.dims(), y.dtype())?;
        let want = weighted_sum(&y, &g)?.backward()?;
        let (dx, dw) = backward::rms_norm(x.as_tensor(), w.as_tensor(), 1e-5, out, &gt, None)?;
        assert_eq!((dx.dtype(), dw.dtype()), (x_dtype, x_dtype));
        let want_dx = flat(want.get(x.as_tensor()).unwrap())?;
        assert_close("rms_norm dx", &flat(&dx)?, &want_dx, bound);
        assert_close("rms_norm dw", &flat(&dw)?, &flat(want.get(w.as_tensor()).unwrap())?, bound);
        // With the stream's other gradient added in.
        let add = var(&mut r, x.dims(), -1.0, 1.0, x_dtype)?;
        let (dx_add, _) = backward::rms_norm(x.as_tensor(), w.as_tensor(), 1e-5, out, &gt, Some(add.as_tensor()))?;
        let want_sum: Vec<f64> = want_dx.iter().zip(flat(add.as_tensor())?).map(|(a, b)| a + b).collect();
        assert_close("rms_norm dx + add", &flat(&dx_add)?, &want_sum, bound);
        // The variant with dx's copy in the output's dtype.
        let (dx2, _, lo) =
            backward::rms_norm_and_copy(x.as_tensor(), w.as_tensor(), 1e-5, out, &gt, Some(add.as_tensor()))?;
        assert_eq!(flat(&dx2)?, flat(&dx_add)?);
        assert_eq!(
            (lo.dtype(), flat(&lo)?),
            (out.unwrap_or(x_dtype), flat(&dx_add.to_dtype(out.unwrap_or(x_dtype))?)?)
        );
    }
    Ok(())
}

#[test]
fn embedding_backward_is_autograds() -> Result<()> {
    let mut r = rng(2);
    let w = var(&mut r, &[50, 8], -1.0, 1.0, DType::F32)?;
    let ids = Tensor::new(&[3u32, 7, 3, 49, 0, 7, 7], &Device::Cpu)?;
    let y = mamba_ops::embedding(w.as_tensor(), &ids)?;
    let (g, gt) = probe(&mut r, y.dims(), DType::F32)?;
    let want = weighted_sum(&y, &g)?.backward()?;
    let dw = backward::embedding(w.as_tensor(), &ids, &gt)?;
    assert_eq!(flat(&dw)?, flat(want.get(w.as_tensor()).unwrap())?, "bit for bit");
    Ok(())
}

#[test]
fn cross_entropy_backward_is_autograds() -> Result<()> {
    let mut r = rng(3);
    for (dtype, bound) in [(DType::F64, 1e-13), (DType::F32, 1e-6), (DType::BF16, 1e-2)] {
        let x = var(&mut r, &[13, 40], -3.0, 3.0, dtype)?;
        let t = Tensor::new(&[0u32, 39, 5, 5, 12, 1, 2, 3, 38, 20, 21, 7, 9], &Device::Cpu)?;
        let want = mamba_ops::cross_entropy(x.as_tensor(), &t)?.affine(0.75, 0.0)?.backward()?;
        let rows = mamba_ops::cross_entropy_rows(x.as_tensor(), &t)?;
        let loss = mamba_ops::cross_entropy(x.as_tensor(), &t)?;
        assert_eq!(flat(&rows.narrow(1, 0, 1)?.mean_all()?)?, flat(&loss)?, "rows' mean is the loss");
        let dx = backward::cross_entropy(x.as_tensor(), &t, &rows, 0.75)?;
        assert_close("cross_entropy dlogits", &flat(&dx)?, &flat(want.get(x.as_tensor()).unwrap())?, bound);
    }
    Ok(())
}

/// The scan reading u from the conv's output, as autograd sees it: `xs = mixer_conv(xz)`
/// (weighted by `gx`) and `reference::selective_scan(u = xs, z = xz's second half, ..)` (by
/// `gy`), against `mixer_scan_saving` forward and `backward::mixer_scan` then
/// `backward::mixer_conv`.
#[test]
fn mixer_split_backward_is_autograds() -> Result<()> {
    let mut r = rng(4);
    for (io, bound) in [(DType::F64, 1e-12), (DType::F32, 1e-5), (DType::BF16, 1e-2)] {
        let small = if io == DType::F64 { DType::F64 } else { DType::F32 };
        let (b, l, d, n, k) = (2, 19, 6, 5, 4);
        let v = [
            var(&mut r, &[b * l, 2 * d], -2.0, 2.0, io)?, // xz
            var(&mut r, &[b * l, d], -3.0, 1.0, io)?,     // delta
            var(&mut r, &[b * l, n], -1.0, 1.0, io)?,     // B (bf16 like x_proj's output)
            var(&mut r, &[b * l, n], -1.0, 1.0, io)?,     // C
            var(&mut r, &[d, k], -1.0, 1.0, small)?,      // conv_w
            var(&mut r, &[d], -1.0, 1.0, small)?,         // conv_b
            var(&mut r, &[d, n], -1.0, 2.5, small)?,      // A_log
            var(&mut r, &[d], -1.0, 1.0, small)?,         // D
            var(&mut r, &[d], -4.0, -1.0, small)?,        // delta_bias
        ];
        let t: Vec<&Tensor> = v.iter().map(|x| x.as_tensor()).collect();
        let xs = mamba_ops::mixer_conv(t[0], Some(l), t[4], t[5])?;
        let seq = |x: &Tensor| x.reshape((b, l, ())); // (b, l, ·)
        let z = t[0].narrow(1, d, d)?;
        let y = mamba_ops::reference::selective_scan(
            &seq(&xs)?,
            &seq(t[1])?,
            t[6],
            &seq(t[2])?,
            &seq(t[3])?,
            t[7],
            &seq(&z)?,
            t[8],
        )?
        .reshape((b * l, d))?;
        let ((gx, gxt), (gy, gyt)) = (probe(&mut r, xs.dims(), io)?, probe(&mut r, y.dims(), io)?);
        let want = (weighted_sum(&xs, &gx)? + weighted_sum(&y, &gy)?)?.backward()?;

        let st = scan_tensors(&v.iter().map(|x| x.as_tensor().clone()).collect::<Vec<_>>(), Some(l));
        let (y_u, saved) = mamba_ops::mixer_scan_saving(&st, &xs)?;
        assert_close(&format!("mixer_scan_saving {io:?} forward"), &flat(&y_u)?, &flat(&y)?, bound);
        let s = backward::mixer_scan(&st, &xs, &gyt, &saved)?;
        let [dxz, dw, db] = backward::mixer_conv(t[0], Some(l), t[4], t[5], &gxt, s.conv)?;
        let got = [dxz, s.delta, s.b, s.c, dw, db, s.a_log, s.d_skip, s.delta_bias];
        for (k, (g, x)) in got.iter().zip(&v).enumerate() {
            assert_eq!((g.dims(), g.dtype()), (x.dims(), x.dtype()), "input {k}: shape and dtype");
            let w = want.get(x.as_tensor()).unwrap();
            assert_close(&format!("mixer {io:?} input {k}"), &flat(g)?, &flat(w)?, bound);
        }
    }
    Ok(())
}

#[test]
fn residual_add_is_cast_and_add() -> Result<()> {
    let mut r = rng(5);
    for (x_dtype, s_dtype) in [(DType::BF16, DType::F32), (DType::F32, DType::F32), (DType::F64, DType::F64)] {
        let res = var(&mut r, &[9, 7], -2.0, 2.0, s_dtype)?;
        let x = var(&mut r, &[9, 7], -2.0, 2.0, x_dtype)?;
        let out = mamba_ops::residual_add(res.as_tensor(), x.as_tensor())?;
        let want = (res.as_tensor() + x.as_tensor().to_dtype(s_dtype)?)?;
        assert_eq!(out.dtype(), s_dtype);
        assert_eq!(flat(&out)?, flat(&want)?, "{x_dtype:?}: exactly the cast and add");
        let (g, _) = probe(&mut r, out.dims(), s_dtype)?;
        let grads = weighted_sum(&out, &g)?.backward()?;
        assert_eq!(flat(grads.get(res.as_tensor()).unwrap())?, g);
        let gx = grads.get(x.as_tensor()).unwrap();
        assert_eq!(gx.dtype(), x_dtype);
        let want_gx = Tensor::from_slice(&g, out.dims(), &Device::Cpu)?.to_dtype(x_dtype)?;
        assert_eq!(flat(gx)?, flat(&want_gx)?);
    }
    assert!(
        mamba_ops::residual_add(
            &Tensor::zeros(3, DType::BF16, &Device::Cpu)?,
            &Tensor::zeros(3, DType::BF16, &Device::Cpu)?
        )
        .is_err(),
        "bf16 stream"
    );
    Ok(())
}
