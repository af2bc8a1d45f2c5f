//! `embedding` against candle's `index_select` (forward) and its autograd (`index_add`)
//! backward: equal bit for bit in f32 and f64, since both sum each row's gradients in position
//! order; in bf16 the op is the more accurate of the two (it rounds once).

mod common;

use candle_core::{DType, Device, Result, Tensor, Var};
use common::{flat, rel_err, rng, uniform, weighted_sum};
use mamba_ops::embedding;
use rand::Rng;

/// `(output, dW)` of `sum(f(w, ids) * probe)`.
fn out_and_grad(f: fn(&Tensor, &Tensor) -> Result<Tensor>, w: &[f64], (v, d): (usize, usize), ids: &[u32], dtype: DType) -> Result<(Vec<f64>, Vec<f64>)> {
    let wv = Var::from_tensor(&Tensor::from_slice(w, (v, d), &Device::Cpu)?.to_dtype(dtype)?)?;
    let ids = Tensor::from_slice(ids, ids.len(), &Device::Cpu)?;
    let out = f(wv.as_tensor(), &ids)?;
    assert_eq!(out.dims(), &[ids.elem_count(), d]);
    assert_eq!(out.dtype(), dtype);
    let probe = uniform(&mut rng(7), out.elem_count(), -1.0, 1.0);
    let grads = weighted_sum(&out, &probe)?.backward()?;
    let g = grads.get(wv.as_tensor()).expect("the weight gets a gradient");
    Ok((flat(&out)?, flat(g)?))
}

fn index_select(w: &Tensor, ids: &Tensor) -> Result<Tensor> {
    w.index_select(ids, 0)
}

#[test]
fn equals_index_select_forward_and_backward() -> Result<()> {
    let mut r = rng(3);
    // Repeated ids (a small vocabulary), a single position, every row used.
    for (v, d, n) in [(5, 3, 40), (300, 17, 1), (64, 8, 64)] {
        let w = uniform(&mut r, v * d, -1.0, 1.0);
        let ids: Vec<u32> = (0..n).map(|_| r.gen_range(0..v as u32)).collect();
        for dtype in [DType::F64, DType::F32, DType::BF16] {
            let want = out_and_grad(index_select, &w, (v, d), &ids, dtype)?;
            let got = out_and_grad(embedding, &w, (v, d), &ids, dtype)?;
            assert_eq!(got.0, want.0, "forward {v}x{d} n={n} {dtype:?}");
            if dtype == DType::BF16 {
                // The op sums a row's gradients in f32 and rounds once; index_add rounds every
                // partial sum to bf16. Compare both with the f32 sums.
                let exact = out_and_grad(embedding, &w, (v, d), &ids, DType::F32)?.1;
                let err = |x: &[f64]| rel_err(x, &exact);
                assert!(err(&got.1) <= err(&want.1) && err(&got.1) < 4e-3, "dW {v}x{d} n={n} bf16: {} vs index_add {}", err(&got.1), err(&want.1));
            } else {
                assert_eq!(got.1, want.1, "dW {v}x{d} n={n} {dtype:?}");
            }
        }
    }
    Ok(())
}

#[test]
fn bad_ids_are_named() -> Result<()> {
    let w = Tensor::zeros((10, 4), DType::F32, &Device::Cpu)?;
    let err = |r: Result<Tensor>| r.expect_err("must fail").to_string();
    let e = err(embedding(&w, &Tensor::new(&[1u32, 2, 10, 3], &Device::Cpu)?));
    assert!(e.contains("embedding") && e.contains("id 10 at position 2") && e.contains("vocabulary of 10"), "{e}");
    let e = err(embedding(&w, &Tensor::new(&[[1u32, 2]], &Device::Cpu)?));
    assert!(e.contains("`ids` must be 1-D"), "{e}");
    let e = err(embedding(&w, &Tensor::new(&[1f32, 2.0], &Device::Cpu)?));
    assert!(e.contains("`ids` must be u32"), "{e}");
    let e = err(embedding(&w.flatten_all()?, &Tensor::new(&[1u32], &Device::Cpu)?));
    assert!(e.contains("`weight` must be (vocab, dim)"), "{e}");
    Ok(())
}
