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

/// The largest relative difference over the parameters between the two backward passes of
/// `scale · loss`, after checking that both give the same loss.
fn worst_difference(master: DType, compute: DType) -> f64 {
    let cfg = MambaConfig { n_layer: 3, ..MambaConfig::preset("micro").unwrap() };
    let dev = Device::Cpu;
    let init = Params::init(&cfg, 11, &dev).unwrap().tensors().into_iter().collect();
    let params = Params::from_tensors_dtype(&cfg, init, &dev, master).unwrap();
    let model = MambaLM::new(&cfg, params.var_builder(&dev)).unwrap().with_compute_dtype(compute).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
    let toks: Vec<u32> = (0..3 * 21).map(|_| rng.gen_range(0..cfg.vocab_size as u32)).collect();
    let all = Tensor::from_vec(toks, (3, 21), &dev).unwrap();
    let (x, y) = (all.narrow(1, 0, 20).unwrap().contiguous().unwrap(), all.narrow(1, 1, 20).unwrap().contiguous().unwrap());
    let scale = 0.375;

    let loss = model.loss(&x, &y).unwrap();
    let reference = loss.affine(scale, 0.0).unwrap().backward().unwrap();
    let (loss2, saved) = model.forward_saved(&x, &y).unwrap();
    let ours = model.backward(saved, scale).unwrap();

    let (l1, l2) = (loss.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap(), loss2.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap());
    assert_eq!(l1, l2, "the saving forward must compute the same loss");
    let mut worst = 0f64;
    for (name, var) in params.named_vars() {
        let want = reference.get(var.as_tensor()).unwrap_or_else(|| panic!("autograd: no gradient for {name}"));
        let got = ours.get(var.as_tensor()).unwrap_or_else(|| panic!("hand-written backward: no gradient for {name}"));
        assert_eq!(got.dims(), var.dims(), "{name}: gradient shape");
        assert_eq!(got.dtype(), var.dtype(), "{name}: gradient dtype");
        let r = rel_diff(got, want);
        println!("{name}: {r:.3e}");
        worst = worst.max(r);
    }
    worst
}

#[test]
fn matches_autograd_in_f64() {
    let worst = worst_difference(DType::F64, DType::F64);
    assert!(worst < 1e-12, "worst relative difference {worst:.3e}");
}

#[test]
fn matches_autograd_in_f32() {
    let worst = worst_difference(DType::F32, DType::F32);
    assert!(worst < 1e-5, "worst relative difference {worst:.3e}");
}

#[test]
fn matches_autograd_under_bf16_mixed_precision() {
    // The same ops in the same dtypes; the sums of gradients meet in a different order (the
    // conv's two uses are summed in f32 before it instead of in bf16 after it).
    let worst = worst_difference(DType::F32, DType::BF16);
    assert!(worst < 2e-2, "worst relative difference {worst:.3e}");
}
