//! Muon's and Newton–Schulz's small ops on the GPU against the CPU ops (which `muon_ops.rs`
//! tests against candle composites), on fresh random inputs. Needs a GPU: built with
//! `--features cuda`, run on the GPU machine (see docs/gpu.md). The multi-tensor Muon ops
//! (`muon_momentum`, `muon_apply_many`) are in `cuda_multi_tensor.rs`.
#![cfg(feature = "cuda")]
#![allow(clippy::unwrap_used)]

use candle_core::{DType, Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

mod common;
use common::gpu::{rand_t, rel_err};

#[test]
fn muon_ops_cuda_match_cpu() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let dev = Device::new_cuda(0).unwrap();
    // 130m's in_proj stack, an odd small one, a single element.
    for &dims in &[(24usize, 3072usize, 768usize), (3, 17, 9), (1, 1, 1)] {
        let shape = [dims.0, dims.1, dims.2];
        let (g, m, w) = (
            rand_t(&mut rng, &shape, -1.0, 1.0),
            rand_t(&mut rng, &shape, -1.0, 1.0),
            rand_t(&mut rng, &shape, -1.0, 1.0),
        );
        let on = |t: &Tensor| t.to_device(&dev).unwrap();
        for dtype in [DType::BF16, DType::F32] {
            // The orthogonalized update, in the NS dtype.
            let o_cpu = m.to_dtype(dtype).unwrap();
            let o_gpu = on(&o_cpu);
            let a_cpu = mamba_ops::muon_apply(&w, &o_cpu, 0.99, 0.02).unwrap();
            let a_gpu = mamba_ops::muon_apply(&on(&w), &o_gpu, 0.99, 0.02).unwrap();
            let e = rel_err(&a_gpu, &a_cpu);
            println!("muon_apply {dims:?} {dtype:?}: rel err {e:.2e}");
            assert!(e < 1e-5, "muon_apply {dims:?}: {e}");
            // In place, one matrix at a time, on copies of w.
            let (wc, wg) = (w.copy().unwrap(), on(&w));
            for j in 0..dims.0 {
                mamba_ops::muon_apply_in_place(&wc.get(j).unwrap(), &o_cpu.get(j).unwrap(), 0.99, 0.02).unwrap();
                mamba_ops::muon_apply_in_place(&wg.get(j).unwrap(), &o_gpu.get(j).unwrap(), 0.99, 0.02).unwrap();
            }
            let (e_in, e_same) = (rel_err(&wg, &wc), rel_err(&wg, &a_gpu));
            println!(
                "muon_apply_in_place {dims:?} {dtype:?}: rel err {e_in:.2e} (vs muon_apply on the GPU {e_same:.2e})"
            );
            assert!(e_in < 1e-5 && e_same == 0.0, "muon_apply_in_place {dims:?}: {e_in} {e_same}");
            let x = g.to_dtype(dtype).unwrap();
            let y = w.to_dtype(dtype).unwrap();
            let (c, gg) = (
                mamba_ops::axpby(&x, &y, 3.4445, -4.775).unwrap(),
                mamba_ops::axpby(&on(&x), &on(&y), 3.4445, -4.775).unwrap(),
            );
            // Both compute in f32 from the same inputs; the GPU contracts a·x + b·y into an FMA, so
            // a few results round to the neighbouring value (one bf16 ulp: 8.9e-6 norm-wise).
            let e = rel_err(&gg, &c);
            println!("axpby {dims:?} {dtype:?}: rel err {e:.2e}");
            assert!(e < if dtype == DType::BF16 { 1e-4 } else { 1e-6 }, "axpby {dims:?} {dtype:?}: {e}");
            // Newton–Schulz's polynomial on square stacks (k, c, c), the identity on each matrix.
            let sq = |t: &Tensor| {
                t.narrow(1, 0, dims.2.min(dims.1))
                    .unwrap()
                    .narrow(2, 0, dims.2.min(dims.1))
                    .unwrap()
                    .contiguous()
                    .unwrap()
            };
            let (p, q) = (sq(&x), sq(&y));
            // Newton–Schulz's first iteration on Gram matrices (p p^T: positive traces), scaled.
            let gram = p.matmul(&p.t().unwrap()).unwrap();
            let (s, sg) =
                (mamba_ops::muon_gram_scales(&gram).unwrap(), mamba_ops::muon_gram_scales(&on(&gram)).unwrap());
            let e_s = rel_err(&sg, &s);
            let (n, ng) = (
                mamba_ops::muon_gram_normalize(&gram, &s).unwrap(),
                mamba_ops::muon_gram_normalize(&on(&gram), &sg).unwrap(),
            );
            let e_n = rel_err(&ng, &n);
            println!("muon_gram_scales, _normalize {:?} {dtype:?}: rel err {e_s:.2e}, {e_n:.2e}", p.dims());
            assert!(
                e_s < 1e-6 && e_n < if dtype == DType::BF16 { 1e-2 } else { 1e-6 },
                "muon_gram_* {dims:?} {dtype:?}: {e_s} {e_n}"
            );
            for scales in [None, Some(&s)] {
                let c = mamba_ops::muon_ns_poly(&p, &q, 3.4445, -4.775, 2.0315, scales).unwrap();
                let gg =
                    mamba_ops::muon_ns_poly(&on(&p), &on(&q), 3.4445, -4.775, 2.0315, scales.map(on).as_ref()).unwrap();
                let e = rel_err(&gg, &c);
                println!("muon_ns_poly {:?} {dtype:?} scaled {}: rel err {e:.2e}", p.dims(), scales.is_some());
                assert!(e < if dtype == DType::BF16 { 1e-4 } else { 1e-6 }, "muon_ns_poly {dims:?} {dtype:?}: {e}");
            }
        }
    }
}
