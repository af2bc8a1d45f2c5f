//! `muon_apply`, `axpby`, `muon_ns_poly`, `muon_gram_scales` and `muon_gram_normalize` against the
//! candle composites they replace in Muon's step (trainer/src/optim/muon.rs and newton_schulz.rs
//! before the fusion): decay and scaled update; the momentum; Newton–Schulz's aI + bA + cA²;
//! the per-matrix Frobenius norm and division, from the Gram matrix.

mod common;

use candle_core::{DType, Device, Result, Tensor};
use common::{flat, rel_err, rng, uniform};
use mamba_ops::{
    axpby, muon_apply, muon_apply_in_place, muon_gram_normalize, muon_gram_scales, muon_momentum, muon_ns_poly,
};

fn stack(seed: u64, (k, r, c): (usize, usize, usize)) -> Result<Tensor> {
    Tensor::from_vec(
        uniform(&mut rng(seed), k * r * c, -1.0, 1.0).iter().map(|&x| x as f32).collect::<Vec<_>>(),
        (k, r, c),
        &Device::Cpu,
    )
}

#[test]
fn gram_scales_are_inverse_frobenius_norms() -> Result<()> {
    for (k, r, c) in [(3, 4, 5), (1, 1, 1), (2, 17, 9)] {
        // Very different scales per matrix: the norm is per matrix.
        let x = stack(1, (k, r, c))?
            .broadcast_mul(&Tensor::new(&[0.01f32, 1.0, 300.0][..k], &Device::Cpu)?.reshape((k, 1, 1))?)?;
        let norm = x.sqr()?.sum_keepdim((1, 2))?.sqrt()?.affine(1.0, 1e-7)?; // (k, 1, 1)
        let want = flat(&norm.recip()?.flatten_all()?)?;
        for gram in [x.matmul(&x.t()?)?, x.t()?.matmul(&x)?] {
            let s = muon_gram_scales(&gram)?;
            assert_eq!(s.dims(), &[k]);
            assert!(rel_err(&flat(&s)?, &want) < 1e-6, "({k}, {r}, {c}) gram {:?}", gram.dims());
            // s²·gram is the Gram matrix of the normalized stack.
            let xn = x.broadcast_div(&norm)?;
            let want_g = if gram.dim(1)? == r { xn.matmul(&xn.t()?)? } else { xn.t()?.matmul(&xn)? };
            assert!(
                rel_err(&flat(&muon_gram_normalize(&gram, &s)?)?, &flat(&want_g)?) < 1e-5,
                "({k}, {r}, {c}) normalized"
            );
            // bf16: the f32 result of the bf16 input, rounded once.
            let gb = gram.to_dtype(DType::BF16)?;
            let sb = muon_gram_scales(&gb)?;
            assert_eq!(sb.dtype(), DType::F32);
            assert_eq!(flat(&sb)?, flat(&muon_gram_scales(&gb.to_dtype(DType::F32)?)?)?);
            let want_b = muon_gram_normalize(&gb.to_dtype(DType::F32)?, &sb)?.to_dtype(DType::BF16)?;
            assert_eq!(flat(&muon_gram_normalize(&gb, &sb)?)?, flat(&want_b)?);
        }
    }
    // A zero matrix stays zero.
    let z = Tensor::zeros((2, 3, 3), DType::F32, &Device::Cpu)?;
    let s = muon_gram_scales(&z)?;
    assert!(flat(&muon_gram_normalize(&z, &s)?)?.iter().all(|&x| x == 0.0));
    assert!(muon_gram_scales(&stack(1, (2, 3, 4))?).is_err(), "not square");
    assert!(muon_gram_normalize(&z, &Tensor::ones(3, DType::F32, &Device::Cpu)?).is_err(), "one scale per matrix");
    Ok(())
}

#[test]
fn momentum_writes_the_look_ahead_in_its_dtype() -> Result<()> {
    let dims = (3, 4, 5);
    let grads: Vec<Tensor> = (0..3).map(|j| stack(20 + j, (1, 4, 5))?.squeeze(0)).collect::<Result<_>>()?;
    let m0 = stack(2, dims)?;
    for (nesterov, vd) in [(true, DType::F32), (true, DType::BF16), (false, DType::BF16)] {
        let (m, v) = (m0.copy()?, Tensor::zeros(dims, vd, &Device::Cpu)?);
        muon_momentum(&m, &v, &grads, 0.95, nesterov)?;
        let g = Tensor::stack(&grads, 0)?;
        let want_m = (m0.affine(0.95, 0.0)? + &g)?;
        let want_v = if nesterov { (&g + want_m.affine(0.95, 0.0)?)? } else { want_m.clone() };
        assert!(rel_err(&flat(&m)?, &flat(&want_m)?) < 1e-6, "m, nesterov {nesterov}");
        assert_eq!(v.dtype(), vd);
        let tol = if vd == DType::BF16 { 4e-3 } else { 1e-6 };
        assert!(rel_err(&flat(&v)?, &flat(&want_v)?) < tol, "v {vd:?}, nesterov {nesterov}");
    }
    let e = muon_momentum(&m0, &Tensor::zeros(dims, DType::F64, &Device::Cpu)?, &grads, 0.9, true)
        .expect_err("f64 v")
        .to_string();
    assert!(e.contains("`v`"), "{e}");
    Ok(())
}

#[test]
fn apply_is_decay_minus_scaled_update() -> Result<()> {
    let dims = (3, 6, 4);
    let (w, o) = (stack(3, dims)?, stack(4, dims)?);
    let want = flat(&(w.affine(0.99, 0.0)? - o.affine(0.02, 0.0)?)?)?;
    assert!(rel_err(&flat(&muon_apply(&w, &o, 0.99, 0.02)?)?, &want) < 1e-7);
    let ob = o.to_dtype(DType::BF16)?;
    let want_b = flat(&(w.affine(0.99, 0.0)? - ob.to_dtype(DType::F32)?.affine(0.02, 0.0)?)?)?;
    let got_b = muon_apply(&w, &ob, 0.99, 0.02)?;
    assert_eq!(got_b.dtype(), DType::F32);
    assert!(rel_err(&flat(&got_b)?, &want_b) < 1e-7);
    Ok(())
}

#[test]
fn bad_arguments_are_named() -> Result<()> {
    let g = stack(5, (2, 3, 4))?;
    let err = |r: Result<Tensor>| r.expect_err("must fail").to_string();
    let e = err(muon_apply(&g, &g.to_dtype(DType::F64)?, 1.0, 1.0));
    assert!(e.contains("muon_apply"), "{e}");
    let e = err(muon_apply(&g.flatten_all()?, &g, 1.0, 1.0));
    assert!(e.contains("(k, r, c) f32 stack"), "{e}");
    Ok(())
}

#[test]
fn axpby_is_the_affine_sum() -> Result<()> {
    for dims in [(3, 4, 5), (1, 1, 1), (2, 17, 9)] {
        let (x, y) = (stack(5, dims)?, stack(6, dims)?);
        let got = axpby(&x, &y, 3.4445, -4.775)?;
        let want = flat(&(x.affine(3.4445, 0.0)? + y.affine(-4.775, 0.0)?)?)?;
        assert!(rel_err(&flat(&got)?, &want) < 1e-6, "{dims:?}");
        // bf16: the f32 result of the bf16 inputs, rounded once.
        let (xb, yb) = (x.to_dtype(DType::BF16)?, y.to_dtype(DType::BF16)?);
        let want =
            axpby(&xb.to_dtype(DType::F32)?, &yb.to_dtype(DType::F32)?, 3.4445, -4.775)?.to_dtype(DType::BF16)?;
        assert_eq!(flat(&axpby(&xb, &yb, 3.4445, -4.775)?)?, flat(&want)?, "{dims:?} bf16");
        // f64 in, f64 out.
        let x64 = x.to_dtype(DType::F64)?;
        assert_eq!(axpby(&x64, &x64, 1.0, 1.0)?.dtype(), DType::F64);
    }
    assert!(axpby(&stack(1, (2, 2, 2))?, &stack(1, (2, 2, 1))?, 1.0, 1.0).is_err(), "shape mismatch");
    Ok(())
}

#[test]
fn ns_poly_is_the_gram_polynomial() -> Result<()> {
    let (a, b, c) = (3.4445, -4.775, 2.0315);
    for (k, r) in [(3, 4), (1, 1), (2, 17)] {
        let (g, g2) = (stack(9, (k, r, r))?, stack(10, (k, r, r))?);
        let eye = Tensor::eye(r, DType::F32, &Device::Cpu)?.unsqueeze(0)?.broadcast_as((k, r, r))?;
        let want = ((g.affine(b, 0.0)? + g2.affine(c, 0.0)?)? + eye.affine(a, 0.0)?)?;
        let got = muon_ns_poly(&g, &g2, a, b, c, None)?;
        assert_eq!(got.dims(), g.dims());
        assert!(rel_err(&flat(&got)?, &flat(&want)?) < 1e-6, "({k}, {r}, {r})");
        // bf16: the f32 result of the bf16 inputs, rounded once.
        let (gb, g2b) = (g.to_dtype(DType::BF16)?, g2.to_dtype(DType::BF16)?);
        let want = muon_ns_poly(&gb.to_dtype(DType::F32)?, &g2b.to_dtype(DType::F32)?, a, b, c, None)?
            .to_dtype(DType::BF16)?;
        assert_eq!(flat(&muon_ns_poly(&gb, &g2b, a, b, c, None)?)?, flat(&want)?, "({k}, {r}, {r}) bf16");
        // Scaled per matrix.
        let s = Tensor::new(&[0.5f32, 2.0, -3.0][..k], &Device::Cpu)?;
        let got = muon_ns_poly(&g, &g2, a, b, c, Some(&s))?;
        let want_s = muon_ns_poly(&g, &g2, a, b, c, None)?.broadcast_mul(&s.reshape((k, 1, 1))?)?;
        assert!(rel_err(&flat(&got)?, &flat(&want_s)?) < 1e-6, "({k}, {r}, {r}) scaled");
    }
    let e =
        muon_ns_poly(&stack(1, (2, 3, 4))?, &stack(1, (2, 3, 4))?, a, b, c, None).expect_err("not square").to_string();
    assert!(e.contains("square"), "{e}");
    assert!(muon_ns_poly(&stack(1, (2, 3, 3))?, &stack(1, (1, 3, 3))?, a, b, c, None).is_err(), "shape mismatch");
    Ok(())
}

#[test]
fn apply_in_place_equals_apply() -> Result<()> {
    let (w, o) = (stack(7, (3, 4, 5))?, stack(8, (3, 4, 5))?);
    for od in [DType::F32, DType::BF16] {
        let o = o.to_dtype(od)?;
        let want = muon_apply(&w, &o, 0.99, 0.02)?;
        // One matrix at a time, in a copy of w's own storage.
        let w2 = w.copy()?;
        for j in 0..3 {
            muon_apply_in_place(&w2.get(j)?, &o.get(j)?, 0.99, 0.02)?;
        }
        assert_eq!(flat(&w2)?, flat(&want)?, "{od:?}");
    }
    assert!(muon_apply_in_place(&w.to_dtype(DType::BF16)?, &o, 1.0, 1.0).is_err(), "bf16 weights");
    assert!(muon_apply_in_place(&w, &o.narrow(0, 0, 1)?, 1.0, 1.0).is_err(), "size mismatch");
    Ok(())
}
