//! `muon_ns_input`, `muon_apply`, `axpby` and `muon_ns_poly` against the candle composites they
//! replace in Muon's step (trainer/src/optim/muon.rs and newton_schulz.rs before the fusion):
//! look-ahead, per-matrix Frobenius norm and division; decay and scaled update; the momentum;
//! Newton–Schulz's aI + bA + cA².

mod common;

use candle_core::{DType, Device, Result, Tensor};
use common::{flat, rel_err, rng, uniform};
use mamba_ops::{axpby, muon_apply, muon_apply_in_place, muon_ns_input, muon_ns_poly};

fn stack(seed: u64, (k, r, c): (usize, usize, usize)) -> Result<Tensor> {
    Tensor::from_vec(uniform(&mut rng(seed), k * r * c, -1.0, 1.0).iter().map(|&x| x as f32).collect::<Vec<_>>(), (k, r, c), &Device::Cpu)
}

#[test]
fn ns_input_is_the_normalized_look_ahead() -> Result<()> {
    for dims in [(3, 4, 5), (1, 1, 1), (2, 17, 9)] {
        let (g, m) = (stack(1, dims)?, stack(2, dims)?);
        for nesterov in [true, false] {
            let v = if nesterov { (&g + m.affine(0.95, 0.0)?)? } else { m.clone() };
            let norm = v.sqr()?.sum_keepdim((1, 2))?.sqrt()?.affine(1.0, 1e-7)?;
            let want = flat(&v.broadcast_div(&norm)?)?;
            let got = muon_ns_input(&g, &m, 0.95, nesterov, DType::F32)?;
            assert_eq!(got.dims(), g.dims());
            let e = rel_err(&flat(&got)?, &want);
            assert!(e < 1e-6, "{dims:?} nesterov {nesterov}: {e}");
            // Each matrix has unit norm; bf16 output is the f32 one rounded.
            let bf = muon_ns_input(&g, &m, 0.95, nesterov, DType::BF16)?;
            assert_eq!(bf.dtype(), DType::BF16);
            assert_eq!(flat(&bf)?, flat(&got.to_dtype(DType::BF16)?)?);
        }
    }
    // A zero matrix stays zero.
    let z = Tensor::zeros((2, 3, 3), DType::F32, &Device::Cpu)?;
    assert!(flat(&muon_ns_input(&z, &z, 0.9, true, DType::F32)?)?.iter().all(|&x| x == 0.0));
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
    let e = err(muon_ns_input(&g, &stack(6, (2, 4, 3))?, 0.9, true, DType::F32));
    assert!(e.contains("muon_ns_input") && e.contains("`m`"), "{e}");
    let e = err(muon_ns_input(&g.flatten_all()?, &g, 0.9, true, DType::F32));
    assert!(e.contains("(k, r, c) f32 stack"), "{e}");
    let e = err(muon_ns_input(&g, &g, 0.9, true, DType::F16));
    assert!(e.contains("f32 or bf16"), "{e}");
    let e = err(muon_apply(&g, &g.to_dtype(DType::F64)?, 1.0, 1.0));
    assert!(e.contains("muon_apply"), "{e}");
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
        let want = axpby(&xb.to_dtype(DType::F32)?, &yb.to_dtype(DType::F32)?, 3.4445, -4.775)?.to_dtype(DType::BF16)?;
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
        let got = muon_ns_poly(&g, &g2, a, b, c)?;
        assert_eq!(got.dims(), g.dims());
        assert!(rel_err(&flat(&got)?, &flat(&want)?) < 1e-6, "({k}, {r}, {r})");
        // bf16: the f32 result of the bf16 inputs, rounded once.
        let (gb, g2b) = (g.to_dtype(DType::BF16)?, g2.to_dtype(DType::BF16)?);
        let want = muon_ns_poly(&gb.to_dtype(DType::F32)?, &g2b.to_dtype(DType::F32)?, a, b, c)?.to_dtype(DType::BF16)?;
        assert_eq!(flat(&muon_ns_poly(&gb, &g2b, a, b, c)?)?, flat(&want)?, "({k}, {r}, {r}) bf16");
    }
    let e = muon_ns_poly(&stack(1, (2, 3, 4))?, &stack(1, (2, 3, 4))?, a, b, c).expect_err("not square").to_string();
    assert!(e.contains("square"), "{e}");
    assert!(muon_ns_poly(&stack(1, (2, 3, 3))?, &stack(1, (1, 3, 3))?, a, b, c).is_err(), "shape mismatch");
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
