//! Fused softmax cross-entropy over the vocabulary for the CPU: the forward reads each row of
//! logits once (max, then Σexp) and the backward writes `softmax − onehot` in one pass, using the
//! saved per-row loss to recover log Σexp. candle_nn's composite (log_softmax + gather) builds
//! several (tokens × 50264) temporaries and spends ~10× longer in its backward. Other devices
//! use the composite until a kernel exists (GPU issue).

use candle_core::{CpuStorage, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Mean next-token loss: `logits (n, v)` (f32/f64), `targets (n,)` u32 → scalar.
pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let fused = logits.device().is_cpu() && matches!(logits.dtype(), DType::F32 | DType::F64) && targets.dtype() == DType::U32;
    if !fused {
        return candle_nn::loss::cross_entropy(logits, targets);
    }
    let (n, _) = logits.dims2()?;
    if targets.dims1()? != n {
        candle_core::bail!("cross_entropy: {n} rows of logits but {} targets", targets.dims1()?);
    }
    let per_row = logits.contiguous()?.apply_op2(&targets.contiguous()?, CrossEntropy)?; // (n,)
    per_row.mean_all() // ()
}

/// The per-row losses `lse(x_i) − x_i[t_i]`.
struct CrossEntropy;
/// `grad_i · (softmax(x_i) − onehot(t_i))` from logits, targets and `aux = [lse, grad]` per row.
struct CrossEntropyGrad;

/// The two float types the CPU kernels handle.
trait Float: candle_core::WithDType + Copy + Send + Sync + std::ops::SubAssign {
    fn exp_(self) -> Self;
    fn f64_(self) -> f64;
    fn of(x: f64) -> Self;
    fn slice(s: &CpuStorage) -> Option<&[Self]>;
    fn storage(v: Vec<Self>) -> CpuStorage;
}

macro_rules! float {
    ($t:ty, $variant:ident) => {
        impl Float for $t {
            fn exp_(self) -> Self {
                self.exp()
            }
            fn f64_(self) -> f64 {
                self as f64
            }
            fn of(x: f64) -> Self {
                x as $t
            }
            fn slice(s: &CpuStorage) -> Option<&[Self]> {
                match s {
                    CpuStorage::$variant(v) => Some(v),
                    _ => None,
                }
            }
            fn storage(v: Vec<Self>) -> CpuStorage {
                CpuStorage::$variant(v)
            }
        }
    };
}
float!(f32, F32);
float!(f64, F64);

fn contiguous<'a, T>(s: &'a [T], l: &Layout, what: &str) -> Result<&'a [T]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&s[a..b]),
        None => candle_core::bail!("cross_entropy: {what} must be contiguous"),
    }
}

fn targets_of<'a>(s: &'a CpuStorage, l: &Layout, v: usize) -> Result<&'a [u32]> {
    let CpuStorage::U32(t) = s else { candle_core::bail!("cross_entropy: targets must be u32") };
    let t = contiguous(t, l, "targets")?;
    if let Some(bad) = t.iter().find(|&&x| x as usize >= v) {
        candle_core::bail!("cross_entropy: target {bad} is outside the vocabulary of {v}");
    }
    Ok(t)
}

fn forward<T: Float>(x: &[T], t: &[u32], v: usize) -> Vec<T> {
    x.par_chunks(v)
        .zip(t.par_iter())
        .map(|(row, &target)| {
            let m = row.iter().fold(f64::NEG_INFINITY, |m, &a| m.max(a.f64_()));
            let mt = T::of(m);
            let s: f64 = row.iter().map(|&a| (a - mt).exp_().f64_()).sum();
            T::of(m + s.ln() - row[target as usize].f64_())
        })
        .collect()
}

fn backward<T: Float>(x: &[T], t: &[u32], aux: &[T], v: usize) -> Vec<T> {
    let mut out = vec![T::of(0.0); x.len()];
    out.par_chunks_mut(v).zip(x.par_chunks(v)).enumerate().for_each(|(i, (o, row))| {
        let (lse, g) = (aux[2 * i], aux[2 * i + 1]);
        for (o, &a) in o.iter_mut().zip(row) {
            *o = g * (a - lse).exp_();
        }
        o[t[i] as usize] -= g;
    });
    out
}

impl CustomOp2 for CrossEntropy {
    fn name(&self) -> &'static str {
        "fused-cross-entropy"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, v) = l1.shape().dims2()?;
        let t = targets_of(s2, l2, v)?;
        let out = if let Some(x) = f32::slice(s1) {
            f32::storage(forward(contiguous(x, l1, "logits")?, t, v))
        } else if let Some(x) = f64::slice(s1) {
            f64::storage(forward(contiguous(x, l1, "logits")?, t, v))
        } else {
            candle_core::bail!("cross_entropy: logits must be f32 or f64")
        };
        Ok((out, Shape::from(n)))
    }

    fn bwd(&self, logits: &Tensor, targets: &Tensor, res: &Tensor, grad_res: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let picked = logits.gather(&targets.unsqueeze(1)?, 1)?.squeeze(1)?; // (n,)
        let lse = (res.detach() + picked.detach())?; // (n,)
        let aux = Tensor::stack(&[&lse, &grad_res.detach()], 1)?.contiguous()?; // (n, 2)
        let grad = logits.detach().apply_op3_no_bwd(&targets.detach(), &aux, &CrossEntropyGrad)?; // (n, v)
        Ok((Some(grad), None))
    }
}

impl CustomOp3 for CrossEntropyGrad {
    fn name(&self) -> &'static str {
        "fused-cross-entropy-grad"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, s3: &CpuStorage, l3: &Layout) -> Result<(CpuStorage, Shape)> {
        let (_, v) = l1.shape().dims2()?;
        let t = targets_of(s2, l2, v)?;
        let out = match (f32::slice(s1), f32::slice(s3), f64::slice(s1), f64::slice(s3)) {
            (Some(x), Some(a), _, _) => f32::storage(backward(contiguous(x, l1, "logits")?, t, contiguous(a, l3, "aux")?, v)),
            (_, _, Some(x), Some(a)) => f64::storage(backward(contiguous(x, l1, "logits")?, t, contiguous(a, l3, "aux")?, v)),
            _ => candle_core::bail!("cross_entropy grad: logits and aux must both be f32 or f64"),
        };
        Ok((out, l1.shape().clone()))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn matches_candle_nn_forward_and_gradient() {
        for dtype in [DType::F32, DType::F64] {
            let x = Var::from_tensor(&(Tensor::randn(0f32, 3.0, (7, 50), &Device::Cpu).unwrap().to_dtype(dtype).unwrap())).unwrap();
            let t = Tensor::new(&[0u32, 49, 3, 3, 17, 25, 8], &Device::Cpu).unwrap();
            let ours = cross_entropy(x.as_tensor(), &t).unwrap();
            let reference = candle_nn::loss::cross_entropy(x.as_tensor(), &t).unwrap();
            let (a, b) = (ours.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap(), reference.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap());
            let tol = if dtype == DType::F32 { 1e-6 } else { 1e-12 };
            assert!((a - b).abs() <= tol * b.abs(), "{dtype:?}: {a} vs {b}");
            let ga = ours.backward().unwrap().get(x.as_tensor()).unwrap().to_dtype(DType::F64).unwrap();
            let gb = reference.backward().unwrap().get(x.as_tensor()).unwrap().to_dtype(DType::F64).unwrap();
            let diff = (ga - &gb).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f64>().unwrap();
            let scale = gb.abs().unwrap().max_all().unwrap().to_scalar::<f64>().unwrap();
            assert!(diff <= tol * 10.0 * scale, "{dtype:?}: grad max |Δ| {diff} (scale {scale})");
        }
    }

    #[test]
    fn rejects_out_of_range_targets() {
        let x = Tensor::zeros((2, 5), DType::F32, &Device::Cpu).unwrap();
        let t = Tensor::new(&[1u32, 5], &Device::Cpu).unwrap();
        let err = cross_entropy(&x, &t).unwrap_err().to_string();
        assert!(err.contains("target 5"), "{err}");
    }
}
