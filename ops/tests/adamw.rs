//! `adamw_step` against the chain of candle ops it replaced in the trainer's AdamW (bit for bit
//! on the CPU: the same f32 operations in the same order), and `adamw_step_in_place` against
//! `adamw_step`.

mod common;

use candle_core::{Device, Result, Tensor};
use common::{flat, rng, uniform};
use mamba_ops::{adamw_step, adamw_step_in_place, AdamWParam, AdamWStep};

fn t(seed: u64, dims: &[usize], lo: f64, hi: f64) -> Result<Tensor> {
    let n = dims.iter().product();
    Tensor::from_vec(
        uniform(&mut rng(seed), n, lo, hi).iter().map(|&x| x as f32).collect::<Vec<_>>(),
        dims,
        &Device::Cpu,
    )
}

#[test]
fn equals_the_candle_chain() -> Result<()> {
    let dims = [3, 5, 4];
    let (w, g, m, v) =
        (t(1, &dims, -1.0, 1.0)?, t(2, &dims, -1.0, 1.0)?, t(3, &dims, -0.1, 0.1)?, t(4, &dims, 0.0, 0.01)?);
    let (lr, b1, b2, eps, wd) = (3e-3, 0.9, 0.95, 1e-8, 0.1);
    for (t_step, decay) in [(1, true), (7, false)] {
        let (bias1, bias2) = (1.0 - f64::powi(b1, t_step), 1.0 - f64::powi(b2, t_step));
        // The former chain (trainer/src/optim/adamw.rs before the fusion).
        let m2 = (m.affine(b1, 0.0)? + g.affine(1.0 - b1, 0.0)?)?;
        let v2 = (v.affine(b2, 0.0)? + g.sqr()?.affine(1.0 - b2, 0.0)?)?;
        let denom = v2.affine(1.0 / bias2, 0.0)?.sqrt()?.affine(1.0, eps)?;
        let update = m2.affine(1.0 / bias1, 0.0)?.div(&denom)?;
        let w1 = if decay { w.affine(1.0 - lr * wd, 0.0)? } else { w.clone() };
        let w2 = (w1 - update.affine(lr, 0.0)?)?;

        let step =
            AdamWStep { lr, beta1: b1, beta2: b2, eps, bias1, bias2, decay: if decay { 1.0 - lr * wd } else { 1.0 } };
        let out = adamw_step(&w, &g, &Tensor::stack(&[&m, &v], 0)?, step)?;
        assert_eq!(out.dims(), &[3, 3, 5, 4]);
        assert_eq!(flat(&out.get(0)?)?, flat(&w2)?, "w, step {t_step}");
        assert_eq!(flat(&out.get(1)?)?, flat(&m2)?, "m, step {t_step}");
        assert_eq!(flat(&out.get(2)?)?, flat(&v2)?, "v, step {t_step}");
    }
    assert!(
        adamw_step(&w, &g, &m, AdamWStep { lr, beta1: b1, beta2: b2, eps, bias1: 1.0, bias2: 1.0, decay: 1.0 })
            .is_err(),
        "mv must be (2, ..)"
    );
    Ok(())
}

/// `adamw_step_in_place` on several parameters equals the stacked op on each, bit for bit, and
/// leaves the weights and moments in the tensors given.
#[test]
fn in_place_equals_the_stacked_op() -> Result<()> {
    let shapes: [&[usize]; 3] = [&[4, 3], &[7], &[2, 2, 5]];
    let step = AdamWStep { lr: 3e-3, beta1: 0.9, beta2: 0.95, eps: 1e-8, bias1: 0.19, bias2: 0.0975, decay: 0.9997 };
    let mut want = Vec::new();
    let mut params = Vec::new();
    for (i, dims) in shapes.iter().enumerate() {
        let s = 10 * i as u64;
        let (w, g, m, v) = (
            t(s + 1, dims, -1.0, 1.0)?,
            t(s + 2, dims, -1.0, 1.0)?,
            t(s + 3, dims, -0.1, 0.1)?,
            t(s + 4, dims, 0.0, 0.01)?,
        );
        let decay = i != 1;
        let h = AdamWStep { decay: if decay { step.decay } else { 1.0 }, ..step };
        want.push(adamw_step(&w, &g, &Tensor::stack(&[&m, &v], 0)?, h)?);
        params.push((w, g, m, v, decay));
    }
    let items: Vec<AdamWParam> =
        params.iter().map(|(w, g, m, v, decay)| AdamWParam { w, g, m, v, decay: *decay }).collect();
    adamw_step_in_place(&items, step)?;
    for (i, ((w, _, m, v, _), out)) in params.iter().zip(&want).enumerate() {
        assert_eq!(flat(w)?, flat(&out.get(0)?)?, "w of parameter {i}");
        assert_eq!(flat(m)?, flat(&out.get(1)?)?, "m of parameter {i}");
        assert_eq!(flat(v)?, flat(&out.get(2)?)?, "v of parameter {i}");
    }
    // Checked: one shape per parameter, f32 only.
    let (w, g) = (t(1, &[3], -1.0, 1.0)?, t(2, &[4], -1.0, 1.0)?);
    let e = adamw_step_in_place(
        &[AdamWParam { w: &w, g: &g, m: &w.zeros_like()?, v: &w.zeros_like()?, decay: true }],
        step,
    )
    .expect_err("must be refused")
    .to_string();
    assert!(e.contains("`g` tensor 0 has shape [4], expected [3]"), "{e}");
    let wb = w.to_dtype(candle_core::DType::BF16)?;
    let e = adamw_step_in_place(&[AdamWParam { w: &wb, g: &w, m: &w, v: &w, decay: true }], step)
        .expect_err("must be refused")
        .to_string();
    assert!(e.contains("`w` tensor 0 must be contiguous f32"), "{e}");
    Ok(())
}
