//! Helpers of the GPU-vs-CPU test binaries (`cuda_vs_cpu.rs`, `cuda_muon.rs`): random f32
//! inputs and the norm-wise relative error of two tensors on any devices.

use candle_core::{DType, Device, Tensor};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// A CPU f32 tensor of `shape` with values uniform in `[lo, hi)`.
pub fn rand_t(rng: &mut ChaCha8Rng, shape: &[usize], lo: f32, hi: f32) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.gen_range(lo..hi)).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).expect("a tensor of the values drawn")
}

/// ‖a − b‖ / ‖b‖ over all elements, computed in f64 on the CPU; panics on a non-finite `a`.
pub fn rel_err(a: &Tensor, b: &Tensor) -> f64 {
    let host = |t: &Tensor| -> Vec<f64> {
        t.to_device(&Device::Cpu)
            .and_then(|t| t.to_dtype(DType::F64)?.flatten_all()?.to_vec1())
            .expect("tensor values on the host")
    };
    let (a, b) = (host(a), host(b));
    assert!(a.iter().all(|v| v.is_finite()), "non-finite output");
    let num: f64 = a.iter().zip(&b).map(|(x, y)| (x - y) * (x - y)).sum::<f64>().sqrt();
    let den: f64 = b.iter().map(|y| y * y).sum::<f64>().sqrt();
    num / den.max(1e-30)
}
