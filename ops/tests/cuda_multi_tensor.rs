//! The multi-tensor ops on the GPU (one launch over a table of chunks) against the CPU's
//! per-tensor loops, on tensors of many sizes (smaller than one chunk, several chunks, not a
//! multiple of the chunk), and the GPU's check that tensors written share no memory. Needs a GPU:
//! built with `--features cuda`, run on the GPU machine (see docs/gpu.md).
#![cfg(feature = "cuda")]
#![allow(clippy::unwrap_used)]

use candle_core::{DType, Device, Tensor};
use mamba_ops::{adamw_step_in_place, add_in_place, scale_in_place, AdamWParam, AdamWStep};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const SIZES: [usize; 5] = [1, 768, 32 * 1024, 3072 * 768 + 5, 50264 * 768];

/// A tensor of `shape` with values uniform in [-1, 1).
fn rand(rng: &mut ChaCha8Rng, shape: &[usize]) -> Tensor {
    Tensor::from_vec(
        (0..shape.iter().product()).map(|_| rng.gen_range(-1f32..1.0)).collect::<Vec<_>>(),
        shape,
        &Device::Cpu,
    )
    .unwrap()
}

fn rand_ts(rng: &mut ChaCha8Rng, lo: f32, hi: f32) -> Vec<Tensor> {
    SIZES
        .iter()
        .map(|&n| {
            Tensor::from_vec((0..n).map(|_| rng.gen_range(lo..hi)).collect::<Vec<f32>>(), n, &Device::Cpu).unwrap()
        })
        .collect()
}

/// The GPU, one handle for the whole test binary: candle's `Device::new_cuda` makes a new device
/// (with its own id) per call, and the ops want all tensors on one.
fn gpu() -> Device {
    static GPU: std::sync::OnceLock<Device> = std::sync::OnceLock::new();
    GPU.get_or_init(|| Device::new_cuda(0).unwrap()).clone()
}

fn on_gpu(ts: &[Tensor]) -> Vec<Tensor> {
    ts.iter().map(|t| t.to_device(&gpu()).unwrap()).collect()
}

fn values(t: &Tensor) -> Vec<f32> {
    t.to_device(&Device::Cpu).unwrap().to_vec1().unwrap()
}

/// ‖a − b‖ / ‖b‖, in f64.
fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(x, y)| f64::from(x - y).powi(2)).sum::<f64>().sqrt();
    let den: f64 = b.iter().map(|y| f64::from(*y).powi(2)).sum::<f64>().sqrt();
    num / den.max(1e-30)
}

#[test]
fn scale_and_add_equal_the_cpu() {
    let mut rng = ChaCha8Rng::seed_from_u64(61);
    let (a, x) = (rand_ts(&mut rng, -1.0, 1.0), rand_ts(&mut rng, -1.0, 1.0));
    let (ag, xg) = (on_gpu(&a), on_gpu(&x));
    scale_in_place(&a, 0.37).unwrap();
    scale_in_place(&ag, 0.37).unwrap();
    add_in_place(&a, &x).unwrap();
    add_in_place(&ag, &xg).unwrap();
    for (i, (c, g)) in a.iter().zip(&ag).enumerate() {
        assert_eq!(values(c), values(g), "tensor {i} ({} elements)", SIZES[i]);
    }
    println!("scale_in_place + add_in_place: GPU equals CPU bit for bit on {SIZES:?}");
}

#[test]
fn add_of_bf16_equals_the_cpu() {
    // The LM head's bf16 partial gradients summed into f32 (trainer model/head_loss.rs).
    let mut rng = ChaCha8Rng::seed_from_u64(66);
    let a = rand_ts(&mut rng, -1.0, 1.0);
    let x: Vec<Tensor> = rand_ts(&mut rng, -1.0, 1.0).iter().map(|t| t.to_dtype(DType::BF16).unwrap()).collect();
    let (ag, xg) = (on_gpu(&a), on_gpu(&x));
    add_in_place(&a, &x).unwrap();
    add_in_place(&ag, &xg).unwrap();
    for (i, (c, g)) in a.iter().zip(&ag).enumerate() {
        assert_eq!(values(c), values(g), "tensor {i} ({} elements)", SIZES[i]);
    }
    println!("add_in_place (bf16 into f32): GPU equals CPU bit for bit on {SIZES:?}");
}

#[test]
fn cast_many_equals_the_cpu() {
    // bf16 gradients into f32: one launch, the results views of one buffer; exact either way.
    let mut rng = ChaCha8Rng::seed_from_u64(65);
    let xs: Vec<Tensor> = rand_ts(&mut rng, -3.0, 3.0).iter().map(|t| t.to_dtype(DType::BF16).unwrap()).collect();
    let (cpu, gpu) =
        (mamba_ops::cast_many(&xs, DType::F32).unwrap(), mamba_ops::cast_many(&on_gpu(&xs), DType::F32).unwrap());
    for (i, (c, g)) in cpu.iter().zip(&gpu).enumerate() {
        assert_eq!((g.dtype(), g.dims()), (DType::F32, c.dims()), "tensor {i}");
        assert_eq!(values(c), values(g), "tensor {i} ({} elements)", SIZES[i]);
    }
    println!("cast_many bf16 -> f32: GPU equals CPU bit for bit on {SIZES:?}");
}

#[test]
fn adamw_in_place_matches_the_cpu() {
    let mut rng = ChaCha8Rng::seed_from_u64(62);
    let (w, g, m) = (rand_ts(&mut rng, -1.0, 1.0), rand_ts(&mut rng, -1.0, 1.0), rand_ts(&mut rng, -0.1, 0.1));
    let v = rand_ts(&mut rng, 0.0, 0.01);
    let (wg, gg, mg, vg) = (on_gpu(&w), on_gpu(&g), on_gpu(&m), on_gpu(&v));
    let step = AdamWStep { lr: 3e-3, beta1: 0.9, beta2: 0.95, eps: 1e-8, bias1: 0.19, bias2: 0.0975, decay: 0.9997 };
    let items = |w: &'_ [Tensor],
                 g: &'_ [Tensor],
                 m: &'_ [Tensor],
                 v: &'_ [Tensor]|
     -> Vec<(Tensor, Tensor, Tensor, Tensor, bool)> {
        (0..w.len()).map(|i| (w[i].clone(), g[i].clone(), m[i].clone(), v[i].clone(), i % 2 == 0)).collect()
    };
    for set in [items(&w, &g, &m, &v), items(&wg, &gg, &mg, &vg)] {
        let params: Vec<AdamWParam> = set.iter().map(|(w, g, m, v, d)| AdamWParam { w, g, m, v, decay: *d }).collect();
        adamw_step_in_place(&params, step).unwrap();
    }
    for (i, (c, gpu)) in [(&w, &wg), (&m, &mg), (&v, &vg)].iter().flat_map(|(c, g)| c.iter().zip(g.iter())).enumerate()
    {
        let e = rel_err(&values(gpu), &values(c));
        println!("adamw_step_in_place, tensor {i}: rel err {e:.2e}");
        assert!(e < 1e-6, "adamw_step_in_place tensor {i}: {e}");
    }
}

#[test]
fn refuses_tensors_written_that_share_memory() {
    let gpu = gpu();
    let buf = Tensor::zeros(100, candle_core::DType::F32, &gpu).unwrap();
    let (a, b) = (buf.narrow(0, 0, 60).unwrap(), buf.narrow(0, 40, 60).unwrap());
    let e = scale_in_place(&[a.clone(), b.clone()], 2.0).unwrap_err().to_string();
    assert!(e.contains("shares memory"), "{e}");
    let e = add_in_place(std::slice::from_ref(&a), std::slice::from_ref(&b)).unwrap_err().to_string();
    assert!(e.contains("shares memory"), "{e}");
    // Disjoint views of one buffer, and one tensor read twice, are fine.
    let (c, d) = (buf.narrow(0, 0, 50).unwrap(), buf.narrow(0, 50, 50).unwrap());
    let x = Tensor::ones(50, candle_core::DType::F32, &gpu).unwrap();
    add_in_place(&[c.clone(), d.clone()], &[x.clone(), x]).unwrap();
    assert_eq!(values(&buf), vec![1f32; 100]);
}

/// Three matrices of one shape (two chunks and a part each), as Muon's shape groups are.
#[test]
fn muon_apply_many_matches_the_cpu() {
    let mut rng = ChaCha8Rng::seed_from_u64(63);
    let (k, n) = (3, 2 * 32 * 1024 + 77);
    for dtype in [candle_core::DType::F32, candle_core::DType::BF16] {
        let ws: Vec<Tensor> = (0..k).map(|_| rand(&mut rng, &[n])).collect();
        let wg = on_gpu(&ws);
        let o = rand(&mut rng, &[k, n]).to_dtype(dtype).unwrap();
        for (j, w) in ws.iter().enumerate() {
            mamba_ops::muon_apply_in_place(w, &o.get(j).unwrap(), 0.999, 0.01).unwrap();
        }
        mamba_ops::muon_apply_many(&wg, &o.to_device(&gpu()).unwrap(), 0.999, 0.01).unwrap();
        for (i, (c, g)) in ws.iter().zip(&wg).enumerate() {
            let (c, g) = (values(c), values(g));
            let worst = c.iter().zip(&g).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            println!("muon_apply_many {dtype:?}, matrix {i}: worst abs diff {worst:.2e}");
            assert!(worst < 1e-6, "muon_apply_many {dtype:?} matrix {i}: {worst}");
        }
        let bad = rand(&mut rng, &[k, n + 1]).to_device(&gpu()).unwrap();
        let err = mamba_ops::muon_apply_many(&wg, &bad, 0.999, 0.01).unwrap_err().to_string();
        assert!(err.contains("elements"), "{err}");
    }
}

/// Muon's momentum and look-ahead for a group of three matrices (two chunks and a part each).
#[test]
fn muon_momentum_matches_the_cpu() {
    let mut rng = ChaCha8Rng::seed_from_u64(64);
    let (k, n) = (3, 2 * 32 * 1024 + 77);
    // The look-ahead in f32, or in bf16 (Newton–Schulz's input on the GPU): the same f32 value,
    // rounded once.
    for (nesterov, vd) in [(true, DType::F32), (false, DType::F32), (true, DType::BF16)] {
        let (m, v) = (rand(&mut rng, &[k, n]), rand(&mut rng, &[k, n]).to_dtype(vd).unwrap());
        let grads: Vec<Tensor> = (0..k).map(|_| rand(&mut rng, &[n])).collect();
        let (mg, vg, gg) = (m.to_device(&gpu()).unwrap(), v.to_device(&gpu()).unwrap(), on_gpu(&grads));
        mamba_ops::muon_momentum(&m, &v, &grads, 0.95, nesterov).unwrap();
        mamba_ops::muon_momentum(&mg, &vg, &gg, 0.95, nesterov).unwrap();
        for (what, c, g) in [("m", &m, &mg), ("v", &v, &vg)] {
            let f = |t: &Tensor| values(&t.flatten_all().unwrap().to_dtype(DType::F32).unwrap());
            let e = rel_err(&f(g), &f(c));
            println!("muon_momentum nesterov={nesterov} v {vd:?} {what}: rel err {e:.2e}");
            assert!(
                e < if what == "v" && vd == DType::BF16 { 1e-2 } else { 1e-6 },
                "muon_momentum nesterov={nesterov} {what}: {e}"
            );
        }
    }
}
