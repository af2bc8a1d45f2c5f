//! `scale_in_place` and `add_in_place` against candle's `affine` and `+` (bit for bit: the same
//! f32 operation per element), the updates landing in the tensors given, and their checks.

mod common;

use candle_core::{DType, Device, Result, Tensor};
use common::{flat, rng, uniform};
use mamba_ops::{add_in_place, scale_in_place};

fn tensors(seed: u64) -> Result<Vec<Tensor>> {
    let mut r = rng(seed);
    [vec![5usize, 3], vec![1], vec![2, 3, 4]]
        .iter()
        .map(|dims| {
            let v: Vec<f32> = uniform(&mut r, dims.iter().product(), -2.0, 2.0).iter().map(|&x| x as f32).collect();
            Tensor::from_vec(v, dims.as_slice(), &Device::Cpu)
        })
        .collect()
}

#[test]
fn scale_equals_affine() -> Result<()> {
    let ts = tensors(1)?;
    let want: Vec<Vec<f64>> = ts.iter().map(|t| flat(&t.affine(0.37, 0.0)?)).collect::<Result<_>>()?;
    let handles: Vec<Tensor> = ts.to_vec(); // same storage: they see the update
    scale_in_place(&ts, 0.37)?;
    for (i, (h, w)) in handles.iter().zip(&want).enumerate() {
        assert_eq!(&flat(h)?, w, "tensor {i}");
    }
    Ok(())
}

#[test]
fn add_equals_candle_add() -> Result<()> {
    let (acc, x) = (tensors(2)?, tensors(3)?);
    let want: Vec<Vec<f64>> = acc.iter().zip(&x).map(|(a, b)| flat(&(a + b)?)).collect::<Result<_>>()?;
    add_in_place(&acc, &x)?;
    for (i, (a, w)) in acc.iter().zip(&want).enumerate() {
        assert_eq!(&flat(a)?, w, "tensor {i}");
    }
    Ok(())
}

#[test]
fn add_of_bf16_equals_candle_add_of_its_f32() -> Result<()> {
    // The LM head's gradient over row blocks: bf16 partials summed into an f32 accumulator.
    let (acc, x) = (tensors(5)?, tensors(6)?);
    let x: Vec<Tensor> = x.iter().map(|t| t.to_dtype(DType::BF16)).collect::<Result<_>>()?;
    let want: Vec<Vec<f64>> =
        acc.iter().zip(&x).map(|(a, b)| flat(&(a + b.to_dtype(DType::F32)?)?)).collect::<Result<_>>()?;
    add_in_place(&acc, &x)?;
    for (i, (a, w)) in acc.iter().zip(&want).enumerate() {
        assert_eq!(&flat(a)?, w, "tensor {i}");
    }
    // Mixed dtypes in `x` and non-f32 accumulators are refused.
    let mixed = [x[0].clone(), x[1].to_dtype(DType::F32)?, x[2].clone()];
    let e = add_in_place(&acc, &mixed).expect_err("mixed x").to_string();
    assert!(e.contains("`x` tensor 1 must be contiguous BF16"), "{e}");
    let e = add_in_place(&x, &x).expect_err("bf16 acc").to_string();
    assert!(e.contains("`acc` tensor 0 must be contiguous f32"), "{e}");
    Ok(())
}

#[test]
fn rejects_what_it_cannot_update_in_place() -> Result<()> {
    let ts = tensors(4)?;
    let err = |r: Result<()>| r.expect_err("must be refused").to_string();
    let e = err(add_in_place(&ts, &ts[..2]));
    assert!(e.contains("`x` has 2 tensors, expected 3"), "{e}");
    let e = err(add_in_place(&ts[..1], &ts[1..2]));
    assert!(e.contains("`x` tensor 0 has shape [1], expected [5, 3]"), "{e}");
    let e = err(scale_in_place(&[ts[0].t()?], 2.0));
    assert!(e.contains("`tensors` tensor 0 must be contiguous f32"), "{e}");
    let e = err(scale_in_place(&[ts[0].to_dtype(DType::BF16)?], 2.0));
    assert!(e.contains("BF16"), "{e}");
    scale_in_place(&[], 2.0)?;
    Ok(())
}
