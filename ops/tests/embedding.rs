//! `embedding` against candle's `index_select` (forward) and its autograd (`index_add`)
//! backward: equal bit for bit in f32 and f64, since both sum each row's gradients in position
//! order; in bf16 the op is the more accurate of the two (it rounds once). `TokenIndex` and
//! `backward::embedding_rows` (the tied embedding's whole gradient) against plain loops.

mod common;

use candle_core::{DType, Device, Result, Tensor, Var};
use common::{flat, rel_err, rng, uniform, weighted_sum};
use mamba_ops::{backward, embedding, TokenIndex};
use rand::Rng;

/// `(output, dW)` of `sum(f(w, ids) * probe)`.
fn out_and_grad(
    f: fn(&Tensor, &Tensor) -> Result<Tensor>,
    w: &[f64],
    (v, d): (usize, usize),
    ids: &[u32],
    dtype: DType,
) -> Result<(Vec<f64>, Vec<f64>)> {
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
                assert!(
                    err(&got.1) <= err(&want.1) && err(&got.1) < 4e-3,
                    "dW {v}x{d} n={n} bf16: {} vs index_add {}",
                    err(&got.1),
                    err(&want.1)
                );
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

/// `dW` of `embedding_rows` by plain loops over the ids: the head's row (or 0), then the
/// gradient rows in position order, summed in `f64` (the reference) and in `f32` in the
/// documented order (which the op must match bit for bit).
fn rows_reference(ids: &[u32], g: &[f64], head: Option<&[f64]>, (v, d): (usize, usize)) -> (Vec<f64>, Vec<f64>) {
    let mut r64 = head.map_or_else(|| vec![0.0; v * d], <[f64]>::to_vec);
    let mut r32: Vec<f32> = r64.iter().map(|&x| x as f32).collect();
    for (p, &id) in ids.iter().enumerate() {
        for c in 0..d {
            r64[id as usize * d + c] += g[p * d + c];
            r32[id as usize * d + c] += g[p * d + c] as f32;
        }
    }
    (r64, r32.into_iter().map(f64::from).collect())
}

#[test]
fn embedding_rows_matches_reference() -> Result<()> {
    let mut r = rng(5);
    let cpu = Device::Cpu;
    // Repeated ids (hi ≪ n), ids never used (hi < v), a single position, a wide row.
    for (v, d, n, hi) in [(5, 3, 40, 5), (300, 17, 50, 40), (64, 8, 1, 64), (20, 300, 30, 3)] {
        let ids: Vec<u32> = (0..n).map(|_| r.gen_range(0..hi as u32)).collect();
        let index = TokenIndex::new(&Tensor::new(ids.as_slice(), &cpu)?, v)?;
        for g_dtype in [DType::F32, DType::BF16] {
            let g = flat(&Tensor::from_vec(uniform(&mut r, n * d, -1.0, 1.0), (n, d), &cpu)?.to_dtype(g_dtype)?)?;
            let gt = Tensor::from_slice(&g, (n, d), &cpu)?.to_dtype(g_dtype)?; // exact: g holds g_dtype values
            for head_dtype in [None, Some(DType::F32), Some(DType::BF16)] {
                let head = match head_dtype {
                    Some(hd) => {
                        Some(flat(&Tensor::from_vec(uniform(&mut r, v * d, -1.0, 1.0), (v, d), &cpu)?.to_dtype(hd)?)?)
                    }
                    None => None,
                };
                let ht = match (&head, head_dtype) {
                    (Some(h), Some(hd)) => Some(Tensor::from_slice(h, (v, d), &cpu)?.to_dtype(hd)?),
                    _ => None,
                };
                let (r64, r32) = rows_reference(&ids, &g, head.as_deref(), (v, d));
                let what = format!("({v}, {d}) n={n} grad {g_dtype:?} head {head_dtype:?}");
                let dw = backward::embedding_rows(&index, &gt, ht.as_ref(), DType::F32)?;
                assert_eq!((dw.dims(), dw.dtype()), (&[v, d][..], DType::F32), "{what}");
                assert_eq!(flat(&dw)?, r32, "{what}: f32, head first, then positions in order");
                assert!(rel_err(&flat(&dw)?, &r64) < 1e-6, "{what}: f32 against f64");
                let dw = backward::embedding_rows(&index, &gt, ht.as_ref(), DType::F64)?;
                assert_eq!(flat(&dw)?, r64, "{what}: f64, same order");
                let dw = backward::embedding_rows(&index, &gt, ht.as_ref(), DType::BF16)?;
                let r32_f32: Vec<f32> = r32.iter().map(|&x| x as f32).collect(); // exact
                let want = flat(&Tensor::from_vec(r32_f32, (v, d), &cpu)?.to_dtype(DType::BF16)?)?;
                assert_eq!((dw.dtype(), flat(&dw)?), (DType::BF16, want), "{what}: bf16 is the f32 sum rounded once");
            }
        }
    }
    Ok(())
}

#[test]
fn token_index_groups_positions_and_names_bad_input() -> Result<()> {
    let cpu = Device::Cpu;
    let index = TokenIndex::new(&Tensor::new(&[2u32, 0, 2, 3, 0, 2], &cpu)?, 5)?;
    assert_eq!((index.tokens(), index.vocab()), (6, 5));
    assert_eq!(index.offsets().to_vec1::<u32>()?, [0, 2, 2, 5, 6, 6]);
    assert_eq!(index.positions().to_vec1::<u32>()?, [1, 4, 0, 2, 5, 3]);
    let err = |r: Result<TokenIndex>| r.expect_err("must fail").to_string();
    let e = err(TokenIndex::new(&Tensor::new(&[1u32, 2, 10, 3], &cpu)?, 10));
    assert!(e.contains("id 10 at position 2") && e.contains("vocabulary of 10"), "{e}");
    let e = err(TokenIndex::new(&Tensor::new(&[[1u32, 2]], &cpu)?, 10));
    assert!(e.contains("`ids` must be 1-D"), "{e}");
    let e = err(TokenIndex::new(&Tensor::new(&[1f32, 2.0], &cpu)?, 10));
    assert!(e.contains("`ids` must be u32"), "{e}");
    // embedding_rows checks its gradients' shapes against the index.
    let g = Tensor::zeros((6, 4), DType::F32, &cpu)?;
    let e = backward::embedding_rows(&index, &g.narrow(0, 0, 5)?, None, DType::F32).expect_err("rows").to_string();
    assert!(e.contains("`grad` must be (positions, dim) with 6 positions"), "{e}");
    let e = backward::embedding_rows(&index, &g, Some(&Tensor::zeros((4, 4), DType::F32, &cpu)?), DType::F32)
        .expect_err("head")
        .to_string();
    assert!(e.contains("`head_grad` must be (vocab, dim) = [5, 4]"), "{e}");
    Ok(())
}
