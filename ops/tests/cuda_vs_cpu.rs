//! The CUDA kernels against the CPU ops (which are themselves tested against f64 references), on
//! fresh random inputs, forward and every gradient. Needs a GPU: built with `--features cuda`,
//! run on the GPU machine (see docs/gpu.md).
#![cfg(feature = "cuda")]
#![allow(clippy::unwrap_used)]

use candle_core::{DType, Device, Tensor, Var};
use mamba_ops::{mixer_conv, mixer_scan};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

mod common;
use common::gpu::{rand_t, rel_err};
use common::scan_tensors;

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
        let loss = (&out * probe.to_device(&dev).unwrap().to_dtype(out.dtype()).unwrap()).unwrap().sum_all().unwrap();
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

/// The mixer ops' inputs: xz, delta (in `io`), B, C (in `bc`), conv_w, conv_b, A_log, D,
/// delta_bias (f32).
fn mixer_inputs(
    rng: &mut ChaCha8Rng,
    (b, l, d, n, k): (usize, usize, usize, usize, usize),
    (io, bc): (DType, DType),
) -> Vec<Tensor> {
    vec![
        rand_t(rng, &[b, l, 2 * d], -2.0, 2.0).to_dtype(io).unwrap(),
        rand_t(rng, &[b, l, d], -3.0, 1.0).to_dtype(io).unwrap(),
        rand_t(rng, &[b, l, n], -1.0, 1.0).to_dtype(bc).unwrap(),
        rand_t(rng, &[b, l, n], -1.0, 1.0).to_dtype(bc).unwrap(),
        rand_t(rng, &[d, k], -1.0, 1.0),
        rand_t(rng, &[d], -1.0, 1.0),
        rand_t(rng, &[d, n], -1.0, 2.5),
        rand_t(rng, &[d], -1.0, 1.0),
        rand_t(rng, &[d], -4.0, -1.0),
    ]
}

/// (IO dtype, B and C's dtype, tolerance) of the mixer tests. f32 IO: 1e-5 like the other kernels.
/// bf16 IO: the GPU and the CPU op both read the same bf16 values and compute in f32; they differ
/// by the bf16 rounding of outputs and gradients. bf16 B and C are the model's case under mixed
/// precision (x_proj's output), packed into the scan's f32 small inputs.
const MIXER_DTYPES: [(DType, DType, f64); 3] =
    [(DType::F32, DType::F32, 1e-5), (DType::BF16, DType::F32, 1e-2), (DType::BF16, DType::BF16, 1e-2)];

#[test]
fn mixer_ops_cuda_match_cpu() {
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    let shapes = [
        (1, 1, 1, 1, 4),
        (2, 37, 5, 3, 4),
        (2, 100, 64, 16, 4),
        (3, 257, 130, 16, 4),
        (1, 300, 96, 32, 4),
        (2, 50, 40, 8, 2),
    ];
    for (io, bc, tol) in MIXER_DTYPES {
        for &dims in &shapes {
            let inputs = mixer_inputs(&mut rng, dims, (io, bc));
            let f = |t: &[Tensor]| mixer_scan(&scan_tensors(t, None)).unwrap();
            run_both(&inputs, f, &mut rng, tol, &format!("mixer_scan {io:?}, B and C {bc:?}, {dims:?}"));
            let conv_in = vec![inputs[0].clone(), inputs[4].clone(), inputs[5].clone()];
            let f = |t: &[Tensor]| mixer_conv(&t[0], None, &t[1], &t[2]).unwrap();
            run_both(&conv_in, f, &mut rng, tol, &format!("mixer_conv {io:?} {dims:?}"));
        }
    }
}

#[test]
fn rms_norm_cuda_matches_cpu() {
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    // Ragged widths, 130m's 768 over several dw strips, a single row.
    for &(rows, d) in &[(1, 16), (3, 33), (2048, 768), (513, 70)] {
        let inputs = vec![rand_t(&mut rng, &[rows, d], -2.0, 2.0), rand_t(&mut rng, &[d], 0.5, 1.5)];
        let f = |t: &[Tensor]| mamba_ops::rms_norm(&t[0], &t[1], 1e-5).unwrap();
        run_both(&inputs, f, &mut rng, 1e-5, &format!("rms_norm {rows}x{d}"));
        // bf16 output (the `_bf16` kernels: written and its gradient read in bf16).
        let f = |t: &[Tensor]| mamba_ops::rms_norm_to(&t[0], &t[1], 1e-5, DType::BF16).unwrap();
        run_both(&inputs, f, &mut rng, 1e-2, &format!("rms_norm_to bf16 {rows}x{d}"));
    }
}

#[test]
fn embedding_cuda_matches_cpu() {
    let mut rng = ChaCha8Rng::seed_from_u64(10);
    let dev = Device::new_cuda(0).unwrap();
    // Few rows (each with many positions), 130m's padded vocabulary and width, a width that is
    // not a multiple of the block, one wider than a block's pass; ids from a narrow range repeat.
    for &(v, d, n, hi) in &[(7, 5, 300, 7), (50280, 768, 4096, 50280), (1000, 300, 2000, 40), (50, 1100, 500, 50)] {
        let w = rand_t(&mut rng, &[v, d], -1.0, 1.0);
        let ids: Vec<u32> = (0..n).map(|_| rng.gen_range(0..hi as u32)).collect();
        let ids = Tensor::new(ids.as_slice(), &Device::Cpu).unwrap();
        let probe = rand_t(&mut rng, &[n, d], -1.0, 1.0);
        let run = |dev: &Device| {
            let wv = Var::from_tensor(&w.to_device(dev).unwrap()).unwrap();
            let out = mamba_ops::embedding(wv.as_tensor(), &ids.to_device(dev).unwrap()).unwrap();
            let loss = (&out * probe.to_device(dev).unwrap()).unwrap().sum_all().unwrap();
            let g = loss.backward().unwrap().get(wv.as_tensor()).unwrap().to_device(&Device::Cpu).unwrap();
            (out.to_device(&Device::Cpu).unwrap(), g)
        };
        let ((out_c, g_c), (out_g, g_g)) = (run(&Device::Cpu), run(&dev));
        // Same gathers, and each row's gradients summed in the same (position) order.
        let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(flat(&out_g), flat(&out_c), "embedding forward {v}x{d} n={n}");
        assert_eq!(flat(&g_g), flat(&g_c), "embedding dW {v}x{d} n={n}");
        // embedding_rows (the trainer's tied-embedding gradient) with a bf16 head gradient.
        let head = rand_t(&mut rng, &[v, d], -1.0, 1.0).to_dtype(DType::BF16).unwrap();
        for gd in [DType::F32, DType::BF16] {
            let rows = |dev: &Device| {
                let index = mamba_ops::TokenIndex::new(&ids.to_device(dev).unwrap(), v).unwrap();
                let (g, h) = (probe.to_dtype(gd).unwrap().to_device(dev).unwrap(), head.to_device(dev).unwrap());
                mamba_ops::backward::embedding_rows(&index, &g, Some(&h), DType::F32)
                    .unwrap()
                    .to_device(&Device::Cpu)
                    .unwrap()
            };
            assert_eq!(
                flat(&rows(&dev)),
                flat(&rows(&Device::Cpu)),
                "embedding_rows {v}x{d} n={n} grad {gd:?}, bf16 head"
            );
        }
        println!("embedding F32 ({v}, {d}, {n}): forward and dW equal bit for bit");
    }
}

#[test]
fn concat_columns_cuda_matches_cpu() {
    // x_proj's gradient as the model assembles it: a contiguous part and two column views of one
    // wider tensor, mixed dtypes, into bf16 or f32; a copy and a cast: equal bit for bit.
    let mut rng = ChaCha8Rng::seed_from_u64(17);
    let (rows, r, n) = (1000, 48, 16);
    let a = rand_t(&mut rng, &[rows, r], -1.0, 1.0).to_dtype(DType::BF16).unwrap();
    let wide = rand_t(&mut rng, &[rows, 2 * n + 5], -1.0, 1.0);
    let dev = Device::new_cuda(0).unwrap();
    for out in [DType::BF16, DType::F32] {
        let run = |d: &Device| {
            let (a, wide) = (a.to_device(d).unwrap(), wide.to_device(d).unwrap());
            let (b, c) = (wide.narrow(1, 5, n).unwrap(), wide.narrow(1, 5 + n, n).unwrap());
            mamba_ops::concat_columns(&[&a, &b, &c], out).unwrap()
        };
        let (cpu, gpu) = (run(&Device::Cpu), run(&dev));
        assert_eq!((gpu.dims(), gpu.dtype()), (&[rows, r + 2 * n][..], out));
        assert_eq!(rel_err(&gpu, &cpu), 0.0, "concat_columns into {out:?}");
    }
    println!("concat_columns: GPU equals CPU bit for bit");
}

/// Allocates and frees `elems` NaNs of `dtype` on `dev`, so that the next allocation of that size
/// (cudarc's stream-ordered pool usually hands the same memory back) starts out poisoned: an
/// element a kernel forgets to write then shows up as NaN. Best effort.
fn poison(dev: &Device, elems: usize, dtype: DType) {
    let t = match dtype {
        DType::BF16 => Tensor::full(half::bf16::NAN, elems, dev),
        _ => Tensor::full(f32::NAN, elems, dev),
    };
    drop(t.unwrap());
}

/// `mamba_ops::cross_entropy` of `rows` rows of `x` (a `(rows + skip, v)` f32 CPU tensor, its first
/// `skip` rows dropped by a contiguous view so the rows start at odd offsets) against `t`, in
/// `dtype` on `dev`: the loss and the gradient of the whole `x`, loss dtype checked.
fn cross_entropy_on(dev: &Device, x: &Tensor, skip: usize, t: &Tensor, dtype: DType) -> (Tensor, Tensor) {
    let (rows, v) = (x.dim(0).unwrap() - skip, x.dim(1).unwrap());
    let xv = Var::from_tensor(&x.to_device(dev).unwrap().to_dtype(dtype).unwrap()).unwrap();
    let logits = xv.as_tensor().narrow(0, skip, rows).unwrap();
    let t = t.to_device(dev).unwrap();
    if dev.is_cuda() {
        poison(dev, 2 * rows, DType::F32); // the forward's [loss, lse] rows
        poison(dev, rows * v, dtype); // the backward's gradient
    }
    let loss = mamba_ops::cross_entropy(&logits, &t).unwrap();
    assert_eq!(loss.dtype(), DType::F32, "loss dtype for {dtype:?} logits");
    let grads = loss.backward().unwrap();
    let g = grads.get(xv.as_tensor()).unwrap().clone();
    assert_eq!(g.dtype(), dtype, "gradient dtype");
    (loss, g)
}

fn rand_targets(rng: &mut ChaCha8Rng, n: usize, v: usize) -> Tensor {
    let t: Vec<u32> = (0..n).map(|_| rng.gen_range(0..v as u32)).collect();
    Tensor::from_vec(t, n, &Device::Cpu).unwrap()
}

#[test]
fn cross_entropy_cuda_matches_cpu() {
    let mut rng = ChaCha8Rng::seed_from_u64(10);
    let gpu = Device::new_cuda(0).unwrap();
    // (rows, vocab, rows skipped): the LM head, small, tiny, odd widths (rows of every alignment:
    // scalar head, vector body, scalar tail), GPT-2's odd vocab at odd row offsets (the backward
    // then writes rows whose alignment differs from the logits': its scalar path).
    for &(n, v, skip) in &[(300, 50264, 0), (7, 1000, 0), (5, 3, 0), (33, 1001, 0), (9, 1001, 1), (4, 50257, 1)] {
        let x = rand_t(&mut rng, &[n + skip, v], -10.0, 10.0);
        let t = rand_targets(&mut rng, n, v);
        for (dtype, tol) in [(DType::F32, 1e-5), (DType::BF16, 1e-2)] {
            let (loss_cpu, g_cpu) = cross_entropy_on(&Device::Cpu, &x, skip, &t, dtype);
            let (loss_gpu, g_gpu) = cross_entropy_on(&gpu, &x, skip, &t, dtype);
            let what = format!("cross_entropy {dtype:?} ({n}, {v}) skip {skip}");
            let e = rel_err(&loss_gpu, &loss_cpu);
            println!("{what}: loss rel err {e:.2e}");
            assert!(e < tol, "{what}: loss rel err {e:e} >= {tol:e}");
            let e = rel_err(&g_gpu, &g_cpu);
            println!("{what}: grad rel err {e:.2e}");
            assert!(e < tol, "{what}: grad rel err {e:e} >= {tol:e}");
        }
    }
}

#[test]
fn cross_entropy_cuda_out_of_range_target_gives_nan_row() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let gpu = Device::new_cuda(0).unwrap();
    let (n, v) = (4, 1000);
    let x = Var::from_tensor(&rand_t(&mut rng, &[n, v], -3.0, 3.0).to_device(&gpu).unwrap()).unwrap();
    let t = Tensor::new(&[1u32, v as u32, 5, u32::MAX], &gpu).unwrap();
    let loss = mamba_ops::cross_entropy(x.as_tensor(), &t).unwrap();
    assert!(loss.to_scalar::<f32>().unwrap().is_nan(), "loss with a bad target must be NaN");
    let g = loss.backward().unwrap().get(x.as_tensor()).unwrap().to_device(&Device::Cpu).unwrap();
    let rows: Vec<Vec<f32>> = g.to_vec2().unwrap();
    for (i, row) in rows.iter().enumerate() {
        let bad = i == 1 || i == 3;
        assert!(
            row.iter().all(|a| a.is_nan() == bad),
            "row {i}: expected {} gradient",
            if bad { "an all-NaN" } else { "a finite" }
        );
    }
}

/// The hand-written model's mixer path: `mixer_scan_saving` (u read from the conv's output) and
/// the split backward of `mamba_ops::backward` (the scan's, then the conv's for both uses of its
/// output, the conv backward kernel adding the scan's dL/du): GPU against CPU. Output 0 is the forward.
/// Both scan layouts (2 and 4 states per thread) are forced in turn, for this path and the
/// `mixer_scan` op's, the other one forced during the model path's backward (which must follow
/// the forward's); no other test sets the layout (they run with whichever is set: every
/// layout must be right).
#[test]
fn mixer_backward_functions_cuda_match_cpu() {
    use mamba_ops::backward;
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    for spt in [2, 4] {
        mamba_ops::set_scan_states_per_thread(Some(spt)).unwrap();
        for (io, bc, tol) in MIXER_DTYPES {
            for dims @ (b, l, d, n, _) in
                [(2, 37, 5, 3, 4), (2, 100, 64, 16, 4), (3, 257, 130, 16, 4), (1, 90, 40, 32, 4)]
            {
                let mut t = mixer_inputs(&mut rng, dims, (io, bc));
                let what = format!("{spt} states per thread, {io:?}, B and C {bc:?}, {dims:?}");
                let f = |t: &[Tensor]| mixer_scan(&scan_tensors(t, None)).unwrap();
                run_both(&t, f, &mut rng, tol, &format!("mixer_scan, {what}"));
                for (i, w) in [(0, 2 * d), (1, d), (2, n), (3, n)] {
                    t[i] = t[i].reshape((b * l, w)).unwrap(); // rows, as the model keeps them
                }
                let gy = rand_t(&mut rng, &[b * l, d], -1.0, 1.0).to_dtype(io).unwrap();
                let gxs = rand_t(&mut rng, &[b * l, d], -1.0, 1.0).to_dtype(io).unwrap();
                let run = |dev: &Device| -> Vec<Tensor> {
                    let t: Vec<Tensor> = t.iter().map(|x| x.to_device(dev).unwrap()).collect();
                    let (gy, gxs) = (gy.to_device(dev).unwrap(), gxs.to_device(dev).unwrap());
                    // The conv's output on this device, which the scan reads as u.
                    let xs = mamba_ops::mixer_conv(&t[0], Some(l), &t[4], &t[5]).unwrap();
                    let st = scan_tensors(&t, Some(l));
                    let (y, saved) = mamba_ops::mixer_scan_saving(&st, &xs).unwrap();
                    // The backward follows the forward's layout (its states say which), whatever is set now.
                    mamba_ops::set_scan_states_per_thread(Some(6 - spt)).unwrap();
                    let s = backward::mixer_scan(&st, &xs, &gy, &saved).unwrap();
                    mamba_ops::set_scan_states_per_thread(Some(spt)).unwrap();
                    let [dxz, dw, db] = backward::mixer_conv(&t[0], Some(l), &t[4], &t[5], &gxs, s.conv).unwrap();
                    vec![y, dxz, s.delta, s.b, s.c, dw, db, s.a_log, s.d_skip, s.delta_bias]
                };
                let (cpu, gpu) = (run(&Device::Cpu), run(&Device::new_cuda(0).unwrap()));
                for (k, (g, c)) in gpu.iter().zip(&cpu).enumerate() {
                    let e = rel_err(g, c);
                    println!("mixer backward, {what}: gradient {k} rel err {e:.2e}");
                    assert!(e < tol, "mixer backward, {what}: gradient {k} rel err {e:e} >= {tol:e}");
                }
            }
        }
    }
    mamba_ops::set_scan_states_per_thread(None).unwrap();
}

/// `residual_add` and the RMSNorm backward with the stream's gradient added (the hand-written
/// model backward's block step): GPU against CPU.
#[test]
fn residual_ops_cuda_match_cpu() {
    let mut rng = ChaCha8Rng::seed_from_u64(31);
    let gpu = Device::new_cuda(0).unwrap();
    let on = |t: &Tensor| t.to_device(&gpu).unwrap();
    for (rows, d) in [(1, 1), (37, 24), (4096, 768)] {
        let (res, w, add) = (
            rand_t(&mut rng, &[rows, d], -2.0, 2.0),
            rand_t(&mut rng, &[d], 0.5, 1.5),
            rand_t(&mut rng, &[rows, d], -1.0, 1.0),
        );
        for io in [DType::F32, DType::BF16] {
            let x = rand_t(&mut rng, &[rows, d], -2.0, 2.0).to_dtype(io).unwrap();
            let (c, g) =
                (mamba_ops::residual_add(&res, &x).unwrap(), mamba_ops::residual_add(&on(&res), &on(&x)).unwrap());
            assert_eq!(rel_err(&g, &c), 0.0, "residual_add {io:?} ({rows}, {d})");
            let out = if io == DType::BF16 { Some(DType::BF16) } else { None };
            let gy = rand_t(&mut rng, &[rows, d], -1.0, 1.0).to_dtype(io).unwrap();
            let (dx_c, dw_c) = mamba_ops::backward::rms_norm(&res, &w, 1e-5, out, &gy, Some(&add)).unwrap();
            let (dx_g, dw_g, lo_g) =
                mamba_ops::backward::rms_norm_and_copy(&on(&res), &on(&w), 1e-5, out, &on(&gy), Some(&on(&add)))
                    .unwrap();
            // The copy the kernel writes in the output's dtype is dx rounded once.
            assert_eq!(rel_err(&lo_g, &dx_g.to_dtype(io).unwrap()), 0.0, "rms_norm_and_copy {io:?} ({rows}, {d})");
            let (e_dx, e_dw) = (rel_err(&dx_g, &dx_c), rel_err(&dw_g, &dw_c));
            println!("rms_norm backward + add {io:?} ({rows}, {d}): dx {e_dx:.2e}, dw {e_dw:.2e}");
            assert!(e_dx < 1e-5 && e_dw < 1e-5, "rms_norm backward + add {io:?} ({rows}, {d}): {e_dx}, {e_dw}");
        }
    }
}

/// `sum_squares` over tensors of many sizes (one kernel for all on the GPU) against the CPU's f64
/// loop: equal up to f32 partial sums.
#[test]
fn sum_squares_cuda_matches_cpu() {
    let mut rng = ChaCha8Rng::seed_from_u64(41);
    let gpu = Device::new_cuda(0).unwrap();
    let ts: Vec<Tensor> =
        [1usize, 7, 768, 50264 * 768, 3072 * 768, 33].iter().map(|&n| rand_t(&mut rng, &[n], -1.0, 1.0)).collect();
    let on: Vec<Tensor> = ts.iter().map(|t| t.to_device(&gpu).unwrap()).collect();
    let (c, g) = (mamba_ops::sum_squares(&ts).unwrap(), mamba_ops::sum_squares(&on).unwrap());
    for (i, (g, c)) in g.iter().zip(&c).enumerate() {
        let e = (g - c).abs() / c.abs().max(1e-30);
        println!("sum_squares tensor {i}: rel err {e:.2e}");
        assert!(e < 1e-5, "sum_squares tensor {i}: {g} vs {c}");
    }
}

/// `adamw_step` (the fused AdamW update) on the GPU against the CPU loop.
#[test]
fn adamw_step_cuda_matches_cpu() {
    let mut rng = ChaCha8Rng::seed_from_u64(51);
    let gpu = Device::new_cuda(0).unwrap();
    for dims in [vec![1usize], vec![24, 1536, 16], vec![1, 50264, 768]] {
        let (w, g, m) = (
            rand_t(&mut rng, &dims, -1.0, 1.0),
            rand_t(&mut rng, &dims, -1.0, 1.0),
            rand_t(&mut rng, &dims, -0.1, 0.1),
        );
        let v = rand_t(&mut rng, &dims, 0.0, 0.01);
        let mv = Tensor::stack(&[&m, &v], 0).unwrap();
        let step = mamba_ops::AdamWStep {
            lr: 3e-3,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            bias1: 0.19,
            bias2: 0.0975,
            decay: 0.9997,
        };
        let c = mamba_ops::adamw_step(&w, &g, &mv, step).unwrap();
        let on = |t: &Tensor| t.to_device(&gpu).unwrap();
        let gg = mamba_ops::adamw_step(&on(&w), &on(&g), &on(&mv), step).unwrap();
        let e = rel_err(&gg, &c);
        println!("adamw_step {dims:?}: rel err {e:.2e}");
        assert!(e < 1e-6, "adamw_step {dims:?}: {e}");
    }
}
