//! The hand-written backward against candle's autograd on the same model and batch: every
//! parameter's gradient, in f64, f32 and bf16 mixed precision (CPU; `tests/gpu_model.rs` does the
//! same on the GPU).
#![allow(clippy::unwrap_used)]

use super::*;
use crate::model::{MambaConfig, Params};
use candle_core::Device;
use rand::{Rng, SeedableRng};

fn rel_diff(a: &Tensor, b: &Tensor) -> f64 {
    let a = a.to_dtype(DType::F64).unwrap().flatten_all().unwrap();
    let b = b.to_dtype(DType::F64).unwrap().flatten_all().unwrap();
    let num = (&a - &b).unwrap().sqr().unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap().sqrt();
    let den = b.sqr().unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap().sqrt();
    num / den.max(1e-30)
}

/// Gradients by parameter name, in parameter order.
type Named = Vec<(String, Tensor)>;

/// Gradients of `scale · loss` by parameter name on the micro model: candle's autograd and the
/// hand-written backward, for master weights `master` and compute dtype `compute`.
fn both_gradients(master: DType, compute: DType) -> (Named, Named) {
    let cfg = MambaConfig { n_layer: 3, ..MambaConfig::preset("micro").unwrap() };
    let dev = Device::Cpu;
    let init = Params::init(&cfg, 11, &dev).unwrap().tensors().into_iter().collect();
    let params = Params::from_tensors_dtype(&cfg, init, &dev, master).unwrap();
    let model = MambaLM::new(&cfg, params.var_builder(&dev)).unwrap().with_compute_dtype(compute).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
    let toks: Vec<u32> = (0..3 * 21).map(|_| rng.gen_range(0..cfg.vocab_size as u32)).collect();
    let all = Tensor::from_vec(toks, (3, 21), &dev).unwrap();
    let (x, y) =
        (all.narrow(1, 0, 20).unwrap().contiguous().unwrap(), all.narrow(1, 1, 20).unwrap().contiguous().unwrap());
    let scale = 0.375;

    let loss = model.loss(&x, &y).unwrap();
    let reference = loss.affine(scale, 0.0).unwrap().backward().unwrap();
    let (loss2, saved) = model.forward_saved(&x, &y, &model.compute_weights().unwrap(), None, scale).unwrap();
    let ours = model.backward(saved).unwrap();

    let (l1, l2) = (
        loss.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap(),
        loss2.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap(),
    );
    if compute == DType::BF16 {
        // The saving forward's scan reads u as the conv wrote it, rounded to bf16; autograd's
        // recomputes it in f32.
        assert!((l1 - l2).abs() < 1e-4 * l1.abs(), "losses {l1} and {l2}");
    } else {
        assert_eq!(l1, l2, "the saving forward must compute the same loss");
    }
    let mut a = Vec::new();
    let mut b = Vec::new();
    for (name, var) in params.named_vars() {
        let want = reference.get(var.as_tensor()).unwrap_or_else(|| panic!("autograd: no gradient for {name}"));
        let got = ours.get(var.as_tensor()).unwrap_or_else(|| panic!("hand-written backward: no gradient for {name}"));
        assert_eq!(got.dims(), var.dims(), "{name}: gradient shape");
        assert_eq!(got.dtype(), var.dtype(), "{name}: gradient dtype");
        a.push((name.clone(), want.clone()));
        b.push((name.clone(), got.clone()));
    }
    (a, b)
}

/// The largest relative difference of `got` from `want` over the parameters.
fn worst(got: &[(String, Tensor)], want: &[(String, Tensor)]) -> f64 {
    got.iter()
        .zip(want)
        .map(|((name, g), (_, w))| {
            let r = rel_diff(g, w);
            println!("{name}: {r:.3e}");
            r
        })
        .fold(0.0, f64::max)
}

#[test]
fn matches_autograd_in_f64() {
    let (autograd, ours) = both_gradients(DType::F64, DType::F64);
    let w = worst(&ours, &autograd);
    assert!(w < 1e-12, "worst relative difference {w:.3e}");
}

#[test]
fn matches_autograd_in_f32() {
    let (autograd, ours) = both_gradients(DType::F32, DType::F32);
    let w = worst(&ours, &autograd);
    assert!(w < 1e-5, "worst relative difference {w:.3e}");
}

#[test]
fn as_close_to_f32_as_autograd_under_bf16_mixed_precision() {
    // Under bf16 the two differ by rounding: the hand-written path's scan reads u rounded to
    // bf16 (autograd's op recomputes it in f32) and sums the conv's two gradients in f32. Both
    // must be about as far from the f32 gradients (d_model 8 makes bf16 rounding large).
    let (reference, _) = both_gradients(DType::F32, DType::F32);
    let (autograd, ours) = both_gradients(DType::F32, DType::BF16);
    let (e_ours, e_autograd) = (worst(&ours, &reference), worst(&autograd, &reference));
    println!("bf16 vs f32: hand-written {e_ours:.3e}, autograd {e_autograd:.3e}");
    assert!(e_ours < 1.5 * e_autograd && e_ours < 0.1, "hand-written {e_ours:.3e} vs autograd {e_autograd:.3e}");
}
