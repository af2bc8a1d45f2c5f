//! Newton–Schulz orthogonalization, the heart of Muon (K. Jordan, "Muon: An optimizer for hidden
//! layers in neural networks", 2024, `zeropower_via_newtonschulz5`).
//!
//! For G = U S Vᵀ it returns approximately U S' Vᵀ with S' in about [0.7, 1.2]: a quintic
//! polynomial p(X) = aX + b(XXᵀ)X + c(XXᵀ)²X is applied `steps` times to X = G / ‖G‖_F, and each
//! application maps every singular value σ to aσ + bσ³ + cσ⁵. The coefficients maximize the slope
//! at 0 (fast growth of small singular values) at the price of not converging exactly to 1.
//!
//! Same-shaped matrices are orthogonalized as ONE batch (k, r, c) with batched matmuls: one chain
//! of 3·steps matmuls per shape instead of one chain per matrix (per-matrix loops cost ~10× more
//! on a GPU). The computation runs in the input's dtype (f32 on the CPU; bf16 is meant for CUDA).

use candle_core::{bail, Result, Tensor};

/// The quintic's coefficients (a, b, c) from Keller Jordan's Muon.
pub const NS_COEFFS: (f64, f64, f64) = (3.4445, -4.7750, 2.0315);

/// Orthogonalizes each matrix of the batch `x` (k, r, c) with `steps` (≥ 1) Newton–Schulz
/// iterations.
///
/// Each matrix is divided by its own Frobenius norm, taken from the trace of its first Gram
/// matrix (tr XᵀX = ‖X‖²_F) and folded into the first iteration: for s = 1 / (‖X‖_F + 1e-7),
/// s²·XᵀX is the normalized matrix's Gram matrix and X·s(aI + bA + cA²) its first iterate, so no
/// pass over X goes to the norm (`mamba_ops::muon_gram_scales`, `muon_gram_normalize`). The Gram
/// matrix is always the smaller (min(r,c))² one: XᵀX for tall matrices (r > c), with the
/// polynomial applied from the right (X ← aX + X(bA + cA²)), which equals transposing, iterating
/// and transposing back, without the two transposed copies (the matmuls read the transposed
/// views directly). The output has the shape and dtype of `x`.
pub fn newton_schulz_batched(x: &Tensor, steps: usize) -> Result<Tensor> {
    let (_k, r, c) = x.dims3()?;
    if steps == 0 {
        bail!("newton_schulz_batched: at least one iteration is needed (the first normalizes)")
    }
    let (a, b, c_coef) = NS_COEFFS;
    let tall = r > c;
    let mut x = x.contiguous()?; // (k, r, c)
    for step in 0..steps {
        // aX + X(bA + cA²) = X(aI + bA + cA²): the polynomial is one fused op on the small Gram
        // matrices (`mamba_ops::muon_ns_poly`), then one matmul; no elementwise pass over X.
        let gram = if tall { x.t()?.matmul(&x)? } else { x.matmul(&x.t()?)? }; // (k, s, s) = XᵀX or X Xᵀ, s = min(r, c)
                                                                               // The first iteration normalizes: A = s²·gram, and the polynomial times s.
        let (gram, scales) = match step {
            0 => {
                let s = mamba_ops::muon_gram_scales(&gram)?; // (k,) f32
                (mamba_ops::muon_gram_normalize(&gram, &s)?, Some(s))
            }
            _ => (gram, None),
        };
        let poly = mamba_ops::muon_ns_poly(&gram, &gram.matmul(&gram)?, a, b, c_coef, scales.as_ref())?; // aI + bA + cA²
        x = if tall { x.matmul(&poly)? } else { poly.matmul(&x)? }; // (k, r, c)
    }
    Ok(x)
}

pub fn newton_schulz(g: &Tensor, steps: usize) -> Result<Tensor> {
    newton_schulz_batched(&g.unsqueeze(0)?, steps)?.squeeze(0)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::testutil::{newton_schulz_f64, randn, singular_values, Mat};
    use super::*;
    use candle_core::DType;

    /// The scalar map NS applies to each singular value of the normalized input.
    fn ns_scalar(mut s: f64, steps: usize) -> f64 {
        let (a, b, c) = NS_COEFFS;
        for _ in 0..steps {
            s = a * s + b * s.powi(3) + c * s.powi(5);
        }
        s
    }

    const SHAPES: [(usize, usize); 3] = [(48, 24), (24, 48), (24, 24)]; // tall, wide, square

    #[test]
    fn matches_f64_loop_reference() {
        for (i, &(r, c)) in SHAPES.iter().enumerate() {
            let g = randn(&[r, c], 10 + i as u64);
            let got = Mat::from_tensor(&newton_schulz(&g, 5).unwrap());
            let want = newton_schulz_f64(&Mat::from_tensor(&g), 5);
            let err = got.data.iter().zip(&want.data).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max);
            // Entries are O(1/sqrt(max(r,c))) ~ 0.15; f32 through 15 matmuls of length <= 48.
            assert!(err < 1e-4, "({r},{c}): max abs error {err}");
        }
    }

    #[test]
    fn singular_values_follow_the_scalar_polynomial() {
        // NS acts on singular values one by one, so the output's singular values are exactly the
        // quintic applied 5 times to the normalized input's (as a multiset).
        for (i, &(r, c)) in SHAPES.iter().enumerate() {
            let g = randn(&[r, c], 20 + i as u64);
            let gm = Mat::from_tensor(&g);
            let f = gm.frobenius();
            let mut want: Vec<f64> = singular_values(&gm).iter().map(|s| ns_scalar(s / f, 5)).collect();
            want.sort_by(|x, y| x.total_cmp(y));
            let got = singular_values(&Mat::from_tensor(&newton_schulz(&g, 5).unwrap()));
            for (s, w) in got.iter().zip(&want) {
                assert!((s - w).abs() < 1e-3, "({r},{c}): {got:?}\nvs {want:?}");
            }
        }
    }

    #[test]
    fn singular_values_in_half_to_one_and_a_half() {
        // 5 steps lift every normalized singular value >= ~1.1e-3 into [0.5, 1.21]. Gaussian
        // matrices with aspect ratio 2 are well conditioned: all of them qualify.
        for (i, &(r, c)) in [(64, 32), (32, 64), (96, 48), (40, 80)].iter().enumerate() {
            let g = randn(&[r, c], 30 + i as u64);
            let sv = singular_values(&Mat::from_tensor(&newton_schulz(&g, 5).unwrap()));
            assert_eq!(sv.len(), r.min(c));
            assert!(sv.iter().all(|s| (0.5..=1.5).contains(s)), "({r},{c}): {sv:?}");
        }
        // A square Gaussian matrix can have a singular value too small for 5 steps (its smallest
        // is ~‖G‖_F / n^1.5); every one above the threshold must land in range, and none above.
        for seed in 40..44 {
            let g = randn(&[24, 24], seed);
            let gm = Mat::from_tensor(&g);
            let sin = singular_values(&gm);
            let sout = singular_values(&Mat::from_tensor(&newton_schulz(&g, 5).unwrap()));
            let big = sin.iter().filter(|s| **s / gm.frobenius() >= 1.2e-3).count();
            let in_range = sout.iter().filter(|s| (0.5..=1.5).contains(*s)).count();
            assert!(sout.iter().all(|s| *s <= 1.5), "{sout:?}");
            assert!(in_range >= big, "seed {seed}: {in_range} in range < {big}: {sout:?}");
        }
    }

    #[test]
    fn batched_equals_per_matrix() {
        for (i, &(r, c)) in SHAPES.iter().enumerate() {
            // Very different scales per matrix: the norm must be per matrix, not per batch.
            let mats: Vec<Tensor> =
                (0..3).map(|j| (randn(&[r, c], 50 + 10 * i as u64 + j) * 10f64.powi(j as i32 - 1)).unwrap()).collect();
            let batch = newton_schulz_batched(&Tensor::stack(&mats, 0).unwrap(), 5).unwrap();
            assert_eq!(batch.dims(), &[3, r, c]);
            for (j, m) in mats.iter().enumerate() {
                let one = newton_schulz(m, 5).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
                let b = batch.get(j).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
                let err = one.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
                assert!(err < 1e-5, "({r},{c}) matrix {j}: {err}");
            }
        }
    }

    #[test]
    fn zero_matrix_stays_zero_and_bf16_works() {
        let z = Tensor::zeros((2, 4, 3), DType::F32, &candle_core::Device::Cpu).unwrap();
        let out = newton_schulz_batched(&z, 5).unwrap();
        assert_eq!(out.abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap(), 0.0);
        let g = randn(&[16, 32], 7);
        let lo = newton_schulz(&g.to_dtype(DType::BF16).unwrap(), 5).unwrap();
        assert_eq!(lo.dtype(), DType::BF16);
        let hi = newton_schulz(&g, 5).unwrap();
        let diff = (lo.to_dtype(DType::F32).unwrap() - hi).unwrap().abs().unwrap();
        let max = diff.flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
        assert!(max < 0.05, "bf16 vs f32 NS: {max}");
    }

    /// Timings of one batched Newton–Schulz chain (5 steps) per shape group of the 130m model
    /// (24 layers): `cargo test -p mamba-trainer --release --lib optim -- --ignored --nocapture`.
    #[test]
    #[ignore = "benchmark: prints timings"]
    fn bench_newton_schulz_130m_shapes() {
        let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        println!("newton_schulz_batched, 5 steps, f32, CPU ({threads} threads available)");
        let mut total = 0.0;
        for (k, r, c) in [(24, 3072, 768), (24, 80, 1536), (24, 768, 1536)] {
            let x = randn(&[k, r, c], 1);
            newton_schulz_batched(&x.narrow(0, 0, 1).unwrap(), 5).unwrap(); // warm up
            let reps = 2;
            let t0 = std::time::Instant::now();
            for _ in 0..reps {
                newton_schulz_batched(&x, 5).unwrap();
            }
            let ms = t0.elapsed().as_secs_f64() * 1e3 / reps as f64;
            total += ms;
            let (m, n) = (r.min(c) as f64, r.max(c) as f64);
            let gflop = k as f64 * 5.0 * (4.0 * m * m * n + 2.0 * m * m * m) / 1e9;
            println!("  {k}x({r}, {c}): {ms:9.1} ms  ({gflop:.0} GFLOP, {:.1} GFLOP/s)", gflop / ms * 1e3);
        }
        println!("  all Muon matrices of 130m: {total:.1} ms per optimizer step");
    }
}
