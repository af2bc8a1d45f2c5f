//! Tests of the hybrid optimizer on a full 2-layer model: checkpoint round trip, state errors,
//! weight-decay groups, AdamW-only mode, the summary, bad inputs, gradients from backward.
#![allow(clippy::unwrap_used)]

use super::super::testutil::randn;
use super::*;

/// A 2-layer model (d_model 8, d_inner 16, d_state 4, dt_rank 2, d_conv 4, vocab 32).
fn model(seed: u64) -> Vec<(String, Var)> {
    let mut shapes = vec![("backbone.embeddings.weight".to_string(), vec![32, 8])];
    for i in 0..2 {
        let p = format!("backbone.layers.{i}.");
        for (n, s) in [
            ("norm.weight", vec![8]),
            ("mixer.A_log", vec![16, 4]),
            ("mixer.D", vec![16]),
            ("mixer.in_proj.weight", vec![32, 8]),
            ("mixer.conv1d.weight", vec![16, 1, 4]),
            ("mixer.conv1d.bias", vec![16]),
            ("mixer.x_proj.weight", vec![10, 16]),
            ("mixer.dt_proj.weight", vec![16, 2]),
            ("mixer.dt_proj.bias", vec![16]),
            ("mixer.out_proj.weight", vec![8, 16]),
        ] {
            shapes.push((format!("{p}{n}"), s));
        }
    }
    shapes.push(("backbone.norm_f.weight".to_string(), vec![8]));
    shapes
        .into_iter()
        .enumerate()
        .map(|(i, (n, s))| (n, Var::from_tensor(&randn(&s, seed + i as u64)).unwrap()))
        .collect()
}

fn grads(params: &[(String, Var)], seed: u64) -> Vec<(String, Tensor)> {
    let g = |(i, (n, v)): (usize, &(String, Var))| (n.clone(), randn(v.dims(), seed * 1000 + i as u64));
    params.iter().enumerate().map(g).collect()
}

fn copy_params(params: &[(String, Var)]) -> Vec<(String, Var)> {
    params.iter().map(|(n, v)| (n.clone(), Var::from_tensor(&v.as_tensor().copy().unwrap()).unwrap())).collect()
}

fn bits(params: &[(String, Var)]) -> Vec<Vec<u32>> {
    let b =
        |v: &Var| v.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().map(|x| x.to_bits()).collect();
    params.iter().map(|(_, v)| b(v)).collect()
}

fn cfg(kind: OptimizerKind) -> OptimConfig {
    OptimConfig { kind, muon_lr: 0.02, adamw_lr: 0.01, warmup_steps: 2, total_steps: 10, ..Default::default() }
}

#[test]
fn state_round_trip_through_safetensors_is_bit_identical() {
    for kind in [OptimizerKind::Hybrid, OptimizerKind::AdamW] {
        let a_params = model(1);
        let mut a = HybridOptimizer::new(a_params.clone(), cfg(kind)).unwrap();
        for s in 0..3 {
            a.step(&grads(&a_params, s as u64), s).unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("optim.safetensors");
        let state: HashMap<String, Tensor> = a.state_tensors().unwrap().into_iter().collect();
        candle_core::safetensors::save(&state, &path).unwrap();
        let loaded = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();

        let b_params = copy_params(&a_params);
        let c_params = copy_params(&a_params);
        let mut b = HybridOptimizer::new(b_params.clone(), cfg(kind)).unwrap();
        b.load_state_tensors(&loaded).unwrap();
        let mut fresh = HybridOptimizer::new(c_params.clone(), cfg(kind)).unwrap();
        for s in 3..5 {
            let g = grads(&a_params, s as u64);
            a.step(&g, s).unwrap();
            b.step(&g, s).unwrap();
            fresh.step(&g, s).unwrap();
        }
        assert_eq!(bits(&a_params), bits(&b_params), "{kind:?}: resumed run differs");
        // Control: without the state the steps differ, so the comparison above can fail.
        assert_ne!(bits(&a_params), bits(&c_params), "{kind:?}");
    }
}

#[test]
fn load_rejects_missing_misshaped_and_foreign_state() {
    let params = model(2);
    let mut opt = HybridOptimizer::new(params.clone(), cfg(OptimizerKind::Hybrid)).unwrap();
    opt.step(&grads(&params, 1), 0).unwrap();
    let good: HashMap<String, Tensor> = opt.state_tensors().unwrap().into_iter().collect();
    let before = opt.state_tensors().unwrap();

    let mut s = good.clone();
    s.remove("adamw.v.backbone.layers.1.mixer.D");
    let err = opt.load_state_tensors(&s).unwrap_err();
    assert!(matches!(err, OptimError::MissingState(ref n) if n == "adamw.v.backbone.layers.1.mixer.D"), "{err}");

    let mut s = good.clone();
    let name = "muon.momentum.backbone.layers.0.mixer.in_proj.weight".to_string();
    s.insert(name, Tensor::zeros((8, 32), DType::F32, &Device::Cpu).unwrap());
    let err = opt.load_state_tensors(&s).unwrap_err();
    assert!(matches!(err, OptimError::StateShapeMismatch { .. }), "{err}");

    let mut s = good.clone();
    s.insert(
        "muon.momentum.backbone.layers.9.mixer.in_proj.weight".into(),
        Tensor::zeros(1, DType::F32, &Device::Cpu).unwrap(),
    );
    s.insert("model.unrelated".into(), Tensor::zeros(1, DType::F32, &Device::Cpu).unwrap());
    let err = opt.load_state_tensors(&s).unwrap_err();
    assert!(matches!(err, OptimError::UnexpectedState(ref n) if n.contains("layers.9")), "{err}");

    // A hybrid checkpoint cannot resume an adamw-only run and vice versa.
    let mut other = HybridOptimizer::new(params.clone(), cfg(OptimizerKind::AdamW)).unwrap();
    let err = other.load_state_tensors(&good).unwrap_err();
    assert!(matches!(err, OptimError::MissingState(ref n) if n.contains("in_proj")), "{err}");
    let adamw_state: HashMap<String, Tensor> = other.state_tensors().unwrap().into_iter().collect();
    assert!(matches!(opt.load_state_tensors(&adamw_state), Err(OptimError::MissingState(_))));

    // Failed loads changed nothing.
    let after = opt.state_tensors().unwrap();
    for ((n1, t1), (n2, t2)) in before.iter().zip(&after) {
        assert_eq!(n1, n2);
        let d = (t1.to_dtype(DType::F64).unwrap() - t2.to_dtype(DType::F64).unwrap()).unwrap();
        assert_eq!(d.abs().unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap(), 0.0, "{n1}");
    }
}

#[test]
fn weight_decay_only_where_it_belongs() {
    // Zero gradients: Adam's and Muon's updates are exactly 0, so only decay moves weights.
    for kind in [OptimizerKind::Hybrid, OptimizerKind::AdamW] {
        let params = model(3);
        let before = bits(&params);
        let c = OptimConfig { weight_decay: 0.5, warmup_steps: 0, ..cfg(kind) };
        let mut opt = HybridOptimizer::new(params.clone(), c).unwrap();
        let zeros: Vec<(String, Tensor)> = params.iter().map(|(n, v)| (n.clone(), v.zeros_like().unwrap())).collect();
        let stats = opt.step(&zeros, 0).unwrap();
        for ((name, var), old) in params.iter().zip(&before) {
            let new = bits(&[(name.clone(), var.clone())]).remove(0);
            let lr = match route(name, var.dims(), kind).unwrap() {
                Group::AdamWNoDecay => {
                    assert_eq!(&new, old, "{kind:?}: {name} must not decay");
                    continue;
                }
                Group::Muon => stats.lr_muon,
                Group::AdamWDecay => stats.lr_adamw,
            };
            for (n, o) in new.iter().zip(old) {
                let want = f32::from_bits(*o) as f64 * (1.0 - lr * 0.5);
                assert!((f32::from_bits(*n) as f64 - want).abs() < 1e-6, "{kind:?}: {name}");
            }
        }
    }
}

#[test]
fn adamw_only_mode_updates_matrices_with_adamw() {
    let params = model(4);
    let w0 = params[4].1.as_tensor().copy().unwrap(); // layers.0.mixer.in_proj.weight
    assert_eq!(params[4].0, "backbone.layers.0.mixer.in_proj.weight");
    let mut opt = HybridOptimizer::new(params.clone(), cfg(OptimizerKind::AdamW)).unwrap();
    assert!(opt.groups_summary().contains("muon                0 tensors"), "{}", opt.groups_summary());
    let g = grads(&params, 7);
    let stats = opt.step(&g, 0).unwrap();
    assert_eq!(stats.lr_adamw, 0.01 / 2.0);
    // First AdamW step: p(1 − lr·wd) − lr·g/(|g| + eps).
    let (lr, wd) = (stats.lr_adamw, 0.01);
    let gv = g[4].1.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let w0 = w0.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let w1 = params[4].1.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    for ((w0, g), w1) in w0.iter().zip(&gv).zip(&w1) {
        let (w0, g) = (*w0 as f64, *g as f64);
        let want = w0 * (1.0 - lr * wd) - lr * g / (g.abs() + 1e-8);
        assert!((*w1 as f64 - want).abs() < 1e-6, "{w1} vs {want}");
    }
}

#[test]
fn summary_counts_groups() {
    let opt = HybridOptimizer::new(model(5), cfg(OptimizerKind::Hybrid)).unwrap();
    let s = opt.groups_summary();
    // Muon: 2 × (32·8 + 10·16 + 8·16) = 1088; decay: 32·8 + 2 × (16·4 + 16·2) = 448;
    // no decay: 8 + 2 × (8 + 64 + 16 + 16 + 16) = 248; 1 + 2 × 10 + 1 = 22 tensors.
    assert!(s.contains("optimizer hybrid: 22 tensors, 1784 params"), "{s}");
    assert!(s.contains("muon                6 tensors         1088 params"), "{s}");
    assert!(s.contains("adamw (decay)       5 tensors          448 params"), "{s}");
    assert!(s.contains("adamw (no decay)   11 tensors          248 params"), "{s}");
    assert!(s.contains("2×(32, 8), 2×(10, 16), 2×(8, 16)"), "{s}");
}

#[test]
fn bad_params_and_grads_are_errors() {
    let mut dup = model(6);
    dup.push(dup[0].clone());
    assert!(matches!(HybridOptimizer::new(dup, cfg(OptimizerKind::Hybrid)), Err(OptimError::DuplicateParameter(_))));
    let mut unknown = model(6);
    unknown.push(("lm_head.weight".into(), unknown[0].1.clone()));
    assert!(matches!(HybridOptimizer::new(unknown, cfg(OptimizerKind::Hybrid)), Err(OptimError::UnknownParameter(_))));
    assert!(matches!(HybridOptimizer::new(vec![], cfg(OptimizerKind::Hybrid)), Err(OptimError::NoParameters)));

    let params = model(6);
    let mut opt = HybridOptimizer::new(params.clone(), cfg(OptimizerKind::Hybrid)).unwrap();
    let mut g = grads(&params, 1);
    g.swap(1, 2);
    assert!(matches!(opt.step(&g, 0), Err(OptimError::GradNameMismatch { index: 1, .. })));
    g.swap(1, 2);
    g[4].1 = g[4].1.t().unwrap(); // in_proj (32, 8) → (8, 32)
    assert!(matches!(opt.step(&g, 0), Err(OptimError::GradShapeMismatch { .. })));
    g.pop();
    assert!(matches!(opt.step(&g, 0), Err(OptimError::GradCountMismatch { .. })));
}

#[test]
fn grads_come_from_the_backward_pass() {
    let params = model(8);
    let opt = HybridOptimizer::new(params.clone(), cfg(OptimizerKind::Hybrid)).unwrap();
    // loss = Σ p²  →  grad = 2p.
    let mut loss = Tensor::zeros((), DType::F32, &Device::Cpu).unwrap();
    for (_, v) in &params {
        loss = (loss + v.as_tensor().sqr().unwrap().sum_all().unwrap()).unwrap();
    }
    let g = opt.grads_from_store(&loss.backward().unwrap()).unwrap();
    for ((n, v), (gn, g)) in params.iter().zip(&g) {
        assert_eq!(n, gn);
        let d = (g - v.as_tensor().affine(2.0, 0.0).unwrap()).unwrap().abs().unwrap();
        assert!(d.flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap() < 1e-6);
    }
    let missing = Tensor::zeros((), DType::F32, &Device::Cpu).unwrap();
    let store = (missing + params[0].1.as_tensor().sum_all().unwrap()).unwrap().backward().unwrap();
    assert!(matches!(opt.grads_from_store(&store), Err(OptimError::MissingGrad(_))));
}
