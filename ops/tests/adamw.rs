//! `adamw_step` against the chain of candle ops it replaced in the trainer's AdamW (bit for bit
//! on the CPU: the same f32 operations in the same order).

mod common;

use candle_core::{Device, Result, Tensor};
use common::{flat, rng, uniform};
use mamba_ops::{adamw_step, AdamWStep};

fn t(seed: u64, dims: &[usize], lo: f64, hi: f64) -> Result<Tensor> {
    let n = dims.iter().product();
    Tensor::from_vec(uniform(&mut rng(seed), n, lo, hi).iter().map(|&x| x as f32).collect::<Vec<_>>(), dims, &Device::Cpu)
}

#[test]
fn equals_the_candle_chain() -> Result<()> {
    let dims = [3, 5, 4];
    let (w, g, m, v) = (t(1, &dims, -1.0, 1.0)?, t(2, &dims, -1.0, 1.0)?, t(3, &dims, -0.1, 0.1)?, t(4, &dims, 0.0, 0.01)?);
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

        let step = AdamWStep { lr, beta1: b1, beta2: b2, eps, bias1, bias2, decay: if decay { 1.0 - lr * wd } else { 1.0 } };
        let out = adamw_step(&w, &g, &Tensor::stack(&[&m, &v], 0)?, step)?;
        assert_eq!(out.dims(), &[3, 3, 5, 4]);
        assert_eq!(flat(&out.get(0)?)?, flat(&w2)?, "w, step {t_step}");
        assert_eq!(flat(&out.get(1)?)?, flat(&m2)?, "m, step {t_step}");
        assert_eq!(flat(&out.get(2)?)?, flat(&v2)?, "v, step {t_step}");
    }
    assert!(adamw_step(&w, &g, &m, AdamWStep { lr, beta1: b1, beta2: b2, eps, bias1: 1.0, bias2: 1.0, decay: 1.0 }).is_err(), "mv must be (2, ..)");
    Ok(())
}
