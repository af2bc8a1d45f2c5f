//! Whole-model checks on the `micro` config: gradients of every parameter kind against central
//! finite differences (f64), and the recurrent step (generation) against the parallel forward.
#![allow(clippy::unwrap_used)]

use candle_core::{DType, Device, Tensor};
use mamba_trainer::model::init::init_params;
use mamba_trainer::model::{MambaConfig, MambaLM, Params};
use rand::{Rng, SeedableRng};

fn micro_tokens(cfg: &MambaConfig, b: usize, l: usize, seed: u64) -> (Tensor, Tensor) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let toks: Vec<u32> = (0..b * (l + 1)).map(|_| rng.gen_range(0..cfg.vocab_size as u32)).collect();
    let all = Tensor::from_vec(toks, (b, l + 1), &Device::Cpu).unwrap();
    (all.narrow(1, 0, l).unwrap().contiguous().unwrap(), all.narrow(1, 1, l).unwrap().contiguous().unwrap())
}

/// Params in f64 with the init perturbed a little (D = 1 and norms = 1 exactly are special points).
fn f64_params(cfg: &MambaConfig) -> Params {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(99);
    let tensors = init_params(cfg, 5)
        .unwrap()
        .into_iter()
        .map(|(n, t)| {
            let noise: Vec<f64> = (0..t.elem_count()).map(|_| rng.gen_range(-0.1..0.1)).collect();
            let noise = Tensor::from_vec(noise, t.dims(), &Device::Cpu).unwrap();
            (n, (t.to_dtype(DType::F64).unwrap() + noise).unwrap())
        })
        .collect();
    Params::from_tensors_dtype(cfg, tensors, &Device::Cpu, DType::F64).unwrap()
}

#[test]
fn gradients_match_finite_differences_for_every_parameter_kind() {
    let cfg = MambaConfig::preset("micro").unwrap();
    let params = f64_params(&cfg);
    let model = MambaLM::new(&cfg, params.var_builder(&Device::Cpu)).unwrap();
    let (x, y) = micro_tokens(&cfg, 2, 12, 1);
    let loss = |m: &MambaLM| m.loss(&x, &y).unwrap().to_scalar::<f64>().unwrap();
    let grads = model.loss(&x, &y).unwrap().backward().unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    let h = 1e-5;
    let mut checked = 0;
    for (name, var) in params.named_vars() {
        let g: Vec<f64> = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("no grad for {name}"))
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let original = var.as_tensor().copy().unwrap();
        let flat: Vec<f64> = original.flatten_all().unwrap().to_vec1().unwrap();
        // Two random entries of every parameter (every kind, every layer).
        for _ in 0..2 {
            let i = rng.gen_range(0..flat.len());
            let mut plus = flat.clone();
            plus[i] += h;
            var.set(&Tensor::from_vec(plus, original.dims(), &Device::Cpu).unwrap()).unwrap();
            let lp = loss(&model);
            let mut minus = flat.clone();
            minus[i] -= h;
            var.set(&Tensor::from_vec(minus, original.dims(), &Device::Cpu).unwrap()).unwrap();
            let lm = loss(&model);
            var.set(&original).unwrap();
            let numeric = (lp - lm) / (2.0 * h);
            // Central differences in f64: truncation error O(h²) ≈ 1e-10, rounding ≈ 1e-11 / h.
            let tol = 1e-6 + 1e-5 * numeric.abs();
            assert!((g[i] - numeric).abs() <= tol, "{name}[{i}]: backward {} vs finite difference {numeric}", g[i]);
            checked += 1;
        }
    }
    assert_eq!(checked, 2 * cfg.param_shapes().len());
}

#[test]
fn recurrent_step_matches_the_parallel_forward() {
    let cfg = MambaConfig { vocab_size: 64, ..MambaConfig::preset("micro").unwrap() };
    let params = Params::init(&cfg, 11, &Device::Cpu).unwrap();
    let model = MambaLM::new(&cfg, params.var_builder(&Device::Cpu)).unwrap();
    let (x, _) = micro_tokens(&cfg, 2, 9, 4);
    let parallel = model.forward(&x).unwrap(); // (b, l, V)
    let mut state = model.zero_state(2).unwrap();
    for t in 0..9 {
        let step = model.step(&x.narrow(1, t, 1).unwrap().squeeze(1).unwrap(), &mut state).unwrap(); // (b, V)
        let want = parallel.narrow(1, t, 1).unwrap().squeeze(1).unwrap();
        let diff = (step - &want).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        let scale = want.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(diff <= 1e-4 * scale.max(1.0), "position {t}: max |Δ| {diff}");
    }
}

#[test]
fn params_count_and_names_follow_the_config() {
    let cfg = MambaConfig::preset("tiny").unwrap();
    let params = Params::init(&cfg, 0, &Device::Cpu).unwrap();
    assert_eq!(params.n_params(), cfg.n_params());
    let names: Vec<&str> = params.named_vars().iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names[0], "backbone.embeddings.weight");
    assert_eq!(names[names.len() - 1], "backbone.norm_f.weight");
    assert!(names.contains(&"backbone.layers.1.mixer.dt_proj.bias"));
}

/// Norm-wise relative difference ‖a − b‖ / ‖b‖ of two tensors of any float dtype.
fn rel_diff(a: &Tensor, b: &Tensor) -> f64 {
    let a = a.to_dtype(DType::F64).unwrap().flatten_all().unwrap();
    let b = b.to_dtype(DType::F64).unwrap().flatten_all().unwrap();
    let num = (&a - &b).unwrap().sqr().unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap().sqrt();
    let den = b.sqr().unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap().sqrt();
    num / den.max(1e-30)
}

#[test]
fn bf16_mixed_precision_tracks_f32_and_keeps_f32_gradients() {
    // `tiny` (d_model 64, full GPT-2 vocabulary) so the head and the loss see realistic widths.
    let cfg = MambaConfig::preset("tiny").unwrap();
    let params = Params::init(&cfg, 7, &Device::Cpu).unwrap();
    let (x, y) = {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        let toks: Vec<u32> = (0..2 * 65).map(|_| rng.gen_range(0..cfg.vocab_size as u32)).collect();
        let all = Tensor::from_vec(toks, (2, 65), &Device::Cpu).unwrap();
        (all.narrow(1, 0, 64).unwrap().contiguous().unwrap(), all.narrow(1, 1, 64).unwrap().contiguous().unwrap())
    };
    let f32_model = MambaLM::new(&cfg, params.var_builder(&Device::Cpu)).unwrap();
    let bf16_model =
        MambaLM::new(&cfg, params.var_builder(&Device::Cpu)).unwrap().with_compute_dtype(DType::BF16).unwrap();
    assert_eq!(bf16_model.compute_dtype(), DType::BF16);
    let (l32, l16) = (f32_model.loss(&x, &y).unwrap(), bf16_model.loss(&x, &y).unwrap());
    assert_eq!(l16.dtype(), DType::F32, "the loss is computed in f32");
    let (a, b) = (l32.to_scalar::<f32>().unwrap() as f64, l16.to_scalar::<f32>().unwrap() as f64);
    assert!((a - b).abs() <= 1e-2 * a.abs(), "bf16 loss {b} vs f32 loss {a}");
    let (g32, g16) = (l32.backward().unwrap(), l16.backward().unwrap());
    for (name, var) in params.named_vars() {
        let (ga, gb) = (g32.get(var.as_tensor()).unwrap(), g16.get(var.as_tensor()).unwrap());
        assert_eq!(gb.dtype(), DType::F32, "{name}: master gradients stay f32");
        let r = rel_diff(gb, ga);
        // bf16 keeps 8 bits of mantissa (≈ 4e-3 per rounding); the errors of a few roundings add.
        assert!(r < 5e-2, "{name}: bf16 gradient differs from f32 by {r:.3e} (norm-wise)");
    }
}

#[test]
fn an_unsupported_compute_dtype_is_refused() {
    let cfg = MambaConfig::preset("micro").unwrap();
    let params = f64_params(&cfg);
    let err =
        MambaLM::new(&cfg, params.var_builder(&Device::Cpu)).unwrap().with_compute_dtype(DType::BF16).err().unwrap();
    assert!(err.to_string().contains("not supported"), "{err}");
}
