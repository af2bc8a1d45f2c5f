//! Gradient clipping by the global L2 norm over ALL parameters (both optimizer groups), as
//! `torch.nn.utils.clip_grad_norm_`: every gradient is scaled by `min(1, max_norm / (norm + 1e-6))`.

use candle_core::{DType, Tensor};

/// Added to the norm before dividing, as in PyTorch, so a zero gradient does not divide by zero.
const CLIP_EPS: f64 = 1e-6;

/// The global L2 norm of `grads`, accumulated in a fixed order (deterministic): per-block sums of
/// squares in f32, then in f64 over blocks and tensors (`mamba_ops::sum_squares`: one kernel for
/// every gradient on the GPU, where per-tensor candle ops cost ~1,300 launches per step).
pub fn global_grad_norm(grads: &[(String, Tensor)]) -> candle_core::Result<f64> {
    let g: Vec<Tensor> = grads.iter().map(|(_, g)| g.to_dtype(DType::F32)).collect::<candle_core::Result<_>>()?;
    Ok(mamba_ops::sum_squares(&g)?.iter().sum::<f64>().sqrt())
}

/// Scales `grads` in place so their global L2 norm is at most `max_norm`, and returns the norm
/// BEFORE clipping (what the metrics log).
///
/// - `max_norm <= 0` or infinite disables clipping (the norm is still computed and returned).
/// - A NaN/Inf norm leaves the gradients untouched and is returned as is: the training loop
///   checks it and stops, rather than this function silently zeroing or scaling garbage.
/// - Gradients keep their dtype. f32 contiguous ones are scaled in their own storage, all in one
///   op (`mamba_ops::scale_in_place`: one launch on the GPU instead of one per gradient), so
///   other handles to those tensors see the scaling too; the others are replaced.
pub fn clip_grad_norm(grads: &mut [(String, Tensor)], max_norm: f64) -> candle_core::Result<f64> {
    let norm = global_grad_norm(grads)?;
    if !(max_norm > 0.0 && max_norm.is_finite() && norm.is_finite()) {
        return Ok(norm);
    }
    let scale = max_norm / (norm + CLIP_EPS);
    if scale < 1.0 {
        let (f32s, others): (Vec<_>, Vec<_>) =
            grads.iter_mut().partition(|(_, g)| g.dtype() == DType::F32 && g.is_contiguous());
        mamba_ops::scale_in_place(&f32s.iter().map(|(_, g)| g.clone()).collect::<Vec<_>>(), scale)?;
        for (_, g) in others {
            *g = g.affine(scale, 0.0)?;
        }
    }
    Ok(norm)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn grads() -> Vec<(String, Tensor)> {
        let dev = Device::Cpu;
        vec![
            // 3-4-0 and 12: squares 9 + 16 + 144 = 169, norm 13.
            ("a".into(), Tensor::new(&[[3f32, 4.0], [0.0, 0.0]], &dev).unwrap()),
            ("b".into(), Tensor::new(&[12f32], &dev).unwrap()),
        ]
    }

    fn values(g: &[(String, Tensor)]) -> Vec<f32> {
        g.iter().flat_map(|(_, t)| t.flatten_all().unwrap().to_vec1::<f32>().unwrap()).collect()
    }

    #[test]
    fn clips_to_max_norm_and_reports_pre_clip_norm() {
        let mut g = grads();
        let norm = clip_grad_norm(&mut g, 1.0).unwrap();
        assert!((norm - 13.0).abs() < 1e-9, "{norm}");
        let s = 1.0 / (13.0 + 1e-6);
        let want = [3.0 * s, 4.0 * s, 0.0, 0.0, 12.0 * s];
        for (got, want) in values(&g).iter().zip(want) {
            assert!((*got as f64 - want).abs() < 1e-6, "{got} vs {want}");
        }
        let after = global_grad_norm(&g).unwrap();
        assert!((after - 1.0).abs() < 1e-5, "{after}");
    }

    #[test]
    fn small_norm_is_untouched() {
        let mut g = grads();
        let norm = clip_grad_norm(&mut g, 20.0).unwrap();
        assert!((norm - 13.0).abs() < 1e-9);
        assert_eq!(values(&g), values(&grads()));
    }

    #[test]
    fn disabled_and_non_finite() {
        let mut g = grads();
        assert!((clip_grad_norm(&mut g, 0.0).unwrap() - 13.0).abs() < 1e-9);
        assert_eq!(values(&g), values(&grads()));
        let mut bad = vec![("x".to_string(), Tensor::new(&[f32::NAN, 1.0], &Device::Cpu).unwrap())];
        assert!(clip_grad_norm(&mut bad, 1.0).unwrap().is_nan());
        assert_eq!(clip_grad_norm(&mut [], 1.0).unwrap(), 0.0);
    }

    #[test]
    fn bf16_grads_keep_dtype() {
        let mut g = vec![("a".to_string(), grads()[0].1.to_dtype(DType::BF16).unwrap())];
        let norm = clip_grad_norm(&mut g, 1.0).unwrap();
        assert!((norm - 5.0).abs() < 1e-6);
        assert_eq!(g[0].1.dtype(), DType::BF16);
        assert!((global_grad_norm(&g).unwrap() - 1.0).abs() < 1e-2);
    }
}
