//! The CUDA kernels against the CPU ops (which are themselves tested against f64 references), on
//! fresh random inputs, forward and every gradient. Needs a GPU: built with `--features cuda`,
//! run on the GPU machine (see docs/gpu.md).
#![cfg(feature = "cuda")]

use candle_core::{DType, Device, Tensor, Var};
use mamba_ops::{causal_conv1d_silu, selective_scan};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn rand_t(rng: &mut ChaCha8Rng, shape: &[usize], lo: f32, hi: f32) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.gen_range(lo..hi)).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// ‖a − b‖ / ‖b‖ over all elements, computed in f64 on the CPU.
fn rel_err(a: &Tensor, b: &Tensor) -> f64 {
    let a = a.to_device(&Device::Cpu).unwrap().to_dtype(DType::F64).unwrap().flatten_all().unwrap();
    let b = b.to_device(&Device::Cpu).unwrap().to_dtype(DType::F64).unwrap().flatten_all().unwrap();
    let a: Vec<f64> = a.to_vec1().unwrap();
    let b: Vec<f64> = b.to_vec1().unwrap();
    assert!(a.iter().all(|v| v.is_finite()), "non-finite output");
    let num: f64 = a.iter().zip(&b).map(|(x, y)| (x - y) * (x - y)).sum::<f64>().sqrt();
    let den: f64 = b.iter().map(|y| y * y).sum::<f64>().sqrt();
    num / den.max(1e-30)
}

/// Runs `f` on CPU and GPU copies of `inputs` (as Vars), returns outputs and gradients of
/// `sum(out * w)` for a random weight `w`.
fn run_both(inputs: &[Tensor], f: impl Fn(&[Tensor]) -> Tensor, rng: &mut ChaCha8Rng, tol: f64, what: &str) {
    let gpu = Device::new_cuda(0).unwrap();
    let mut results = Vec::new();
    let probe = {
        let vars: Vec<Var> = inputs.iter().map(|t| Var::from_tensor(t).unwrap()).collect();
        let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
        let out = f(&ts);
        rand_t(rng, out.dims(), -1.0, 1.0)
    };
    for dev in [Device::Cpu, gpu] {
        let vars: Vec<Var> = inputs.iter().map(|t| Var::from_tensor(&t.to_device(&dev).unwrap()).unwrap()).collect();
        let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
        let out = f(&ts);
        let loss = (&out * probe.to_device(&dev).unwrap()).unwrap().sum_all().unwrap();
        let grads = loss.backward().unwrap();
        let gs: Vec<Tensor> = vars.iter().map(|v| grads.get(v.as_tensor()).unwrap().clone()).collect();
        results.push((out, gs));
    }
    let (cpu, gpu) = (&results[0], &results[1]);
    let e = rel_err(&gpu.0, &cpu.0);
    println!("{what}: forward rel err {e:.2e}");
    assert!(e < tol, "{what}: forward rel err {e:e} >= {tol:e}");
    for (k, (g_gpu, g_cpu)) in gpu.1.iter().zip(&cpu.1).enumerate() {
        let e = rel_err(g_gpu, g_cpu);
        println!("{what}: grad of input {k} rel err {e:.2e}");
        assert!(e < tol, "{what}: grad of input {k} rel err {e:e} >= {tol:e}");
    }
}

#[test]
fn selective_scan_cuda_matches_cpu() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for &(b, l, d, n) in &[(1, 1, 1, 1), (2, 37, 5, 3), (2, 100, 64, 16), (3, 257, 130, 16), (1, 1024, 96, 32)] {
        let inputs = vec![
            rand_t(&mut rng, &[b, l, d], -1.0, 1.0),  // u
            rand_t(&mut rng, &[b, l, d], -3.0, 1.0),  // delta
            rand_t(&mut rng, &[d, n], -1.0, 2.5),     // A_log
            rand_t(&mut rng, &[b, l, n], -1.0, 1.0),  // B
            rand_t(&mut rng, &[b, l, n], -1.0, 1.0),  // C
            rand_t(&mut rng, &[d], -1.0, 1.0),        // D
            rand_t(&mut rng, &[b, l, d], -2.0, 2.0),  // z
            rand_t(&mut rng, &[d], -4.0, -1.0),       // delta_bias
        ];
        let f = |t: &[Tensor]| selective_scan(&t[0], &t[1], &t[2], &t[3], &t[4], &t[5], &t[6], &t[7]).unwrap();
        run_both(&inputs, f, &mut rng, 1e-5, &format!("scan b{b} l{l} d{d} n{n}"));
    }
}

#[test]
fn selective_scan_cuda_bf16_inputs_close_to_cpu_f32() {
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    let (b, l, d, n) = (2, 300, 64, 16);
    let inputs = vec![
        rand_t(&mut rng, &[b, l, d], -1.0, 1.0),
        rand_t(&mut rng, &[b, l, d], -3.0, 1.0),
        rand_t(&mut rng, &[d, n], -1.0, 2.5),
        rand_t(&mut rng, &[b, l, n], -1.0, 1.0),
        rand_t(&mut rng, &[b, l, n], -1.0, 1.0),
        rand_t(&mut rng, &[d], -1.0, 1.0),
        rand_t(&mut rng, &[b, l, d], -2.0, 2.0),
        rand_t(&mut rng, &[d], -4.0, -1.0),
    ];
    let cpu = selective_scan(&inputs[0], &inputs[1], &inputs[2], &inputs[3], &inputs[4], &inputs[5], &inputs[6], &inputs[7]).unwrap();
    let gpu = Device::new_cuda(0).unwrap();
    let bf: Vec<Tensor> = inputs.iter().map(|t| t.to_device(&gpu).unwrap().to_dtype(DType::BF16).unwrap()).collect();
    let out = selective_scan(&bf[0], &bf[1], &bf[2], &bf[3], &bf[4], &bf[5], &bf[6], &bf[7]).unwrap();
    let e = rel_err(&out, &cpu);
    println!("scan bf16 inputs: rel err {e:.2e}");
    assert!(e < 1e-2, "bf16 rel err {e:e}");
}

#[test]
fn causal_conv1d_cuda_matches_cpu() {
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    for &(b, l, d, k) in &[(1, 1, 1, 4), (2, 3, 7, 4), (2, 513, 300, 4), (3, 64, 33, 2)] {
        let inputs = vec![
            rand_t(&mut rng, &[b, l, d], -2.0, 2.0),
            rand_t(&mut rng, &[d, k], -1.0, 1.0),
            rand_t(&mut rng, &[d], -1.0, 1.0),
        ];
        let f = |t: &[Tensor]| causal_conv1d_silu(&t[0], &t[1], &t[2]).unwrap();
        run_both(&inputs, f, &mut rng, 1e-5, &format!("conv b{b} l{l} d{d} k{k}"));
    }
}
