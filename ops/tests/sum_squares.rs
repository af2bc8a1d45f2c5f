//! `sum_squares` (the gradients' global norm) against a plain f64 loop; argument errors.

use candle_core::{DType, Device, Result, Tensor};

#[test]
fn sums_each_tensors_squares() -> Result<()> {
    let a = Tensor::new(&[[3f32, 4.0], [0.0, -1.0]], &Device::Cpu)?;
    let b = Tensor::new(&[12f32], &Device::Cpu)?;
    let c = Tensor::arange(0f32, 1000.0, &Device::Cpu)?.affine(1e-3, 0.0)?;
    let want_c: f64 = (0..1000).map(|i| (f64::from(i as f32 * 1e-3f32)).powi(2)).sum();
    let got = mamba_ops::sum_squares(&[a, b, c])?;
    assert_eq!(got.len(), 3);
    assert_eq!((got[0], got[1]), (26.0, 144.0));
    assert!((got[2] - want_c).abs() < 1e-9 * want_c, "{} vs {want_c}", got[2]);
    assert!(mamba_ops::sum_squares(&[])?.is_empty());
    assert!(mamba_ops::sum_squares(&[Tensor::zeros(2, DType::F64, &Device::Cpu)?]).is_err(), "f64 is refused");
    Ok(())
}
