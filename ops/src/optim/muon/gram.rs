//! Newton–Schulz's small-matrix ops: the polynomial `aI + bA + cA²` in the Gram matrix A, and
//! the normalization of the input folded into the first iteration.
//!
//! Newton–Schulz runs on X / ‖X‖_F. Since tr XᵀX = ‖X‖²_F, the first iteration can start from the
//! unnormalized X: with s = 1 / (‖X‖_F + eps) taken from its Gram matrix G's trace
//! ([`gram_scales`]), s²G is the normalized input's Gram matrix ([`gram_normalize`]) and
//! `X·s(aI + bA + cA²)` its first iterate ([`ns_poly`] with scales). No pass over the X-sized
//! stack is spent on the norm or the division.

use crate::util::cpu_storage::contiguous_slice;
use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor};

/// Added to the Frobenius norm before dividing, so a zero matrix stays zero.
pub(crate) const NORM_EPS: f32 = 1e-7;

/// The side r of a `(k, r, r)` stack of square matrices.
fn square_side(op: &str, what: &str, t: &Tensor) -> Result<usize> {
    match t.dims() {
        &[_, r, r2] if r == r2 => Ok(r),
        d => bail!("{op}: `{what}` must be a (k, r, r) stack of square matrices, got {d:?}"),
    }
}

/// See [`crate::muon_ns_poly`].
pub(crate) fn ns_poly(
    gram: &Tensor,
    gram_sq: &Tensor,
    a: f64,
    b: f64,
    c: f64,
    scales: Option<&Tensor>,
) -> Result<Tensor> {
    const NAME: &str = "muon_ns_poly";
    let r = square_side(NAME, "gram", gram)?;
    Axpby::run(NAME, ("gram", gram), ("gram_sq", gram_sq), [b, c, a], r, scales.map(|s| (s, 1)))
}

/// See [`crate::muon_gram_scales`].
pub(crate) fn gram_scales(gram: &Tensor) -> Result<Tensor> {
    const NAME: &str = "muon_gram_scales";
    let r = square_side(NAME, "gram", gram)?;
    if !matches!(gram.dtype(), DType::F32 | DType::BF16) {
        bail!("{NAME}: `gram` must be f32 or bf16, got {:?}", gram.dtype())
    }
    gram.contiguous()?.apply_op1_no_bwd(&GramScales { k: gram.dim(0)?, r })
}

/// See [`crate::muon_gram_normalize`].
pub(crate) fn gram_normalize(gram: &Tensor, scales: &Tensor) -> Result<Tensor> {
    const NAME: &str = "muon_gram_normalize";
    square_side(NAME, "gram", gram)?;
    Axpby::run(NAME, ("gram", gram), ("gram", gram), [1.0, 0.0, 0.0], 0, Some((scales, 2)))
}

/// `tr G_j` of each matrix of a `(k, r, r)` stack, as `1 / (sqrt(tr) + eps)`: f32 `(k,)`.
struct GramScales {
    k: usize,
    r: usize,
}

impl CustomOp1 for GramScales {
    fn name(&self) -> &'static str {
        "muon_gram_scales"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let g: Vec<f64> = match s {
            CpuStorage::BF16(_) => contiguous_slice::<half::bf16>(self.name(), "gram", s, l)?
                .iter()
                .map(|x| f64::from(x.to_f32()))
                .collect(),
            _ => contiguous_slice::<f32>(self.name(), "gram", s, l)?.iter().map(|&x| f64::from(x)).collect(),
        };
        let r = self.r;
        let scales = g
            .chunks_exact(r * r)
            .map(|m| {
                let trace: f64 = (0..r).map(|q| m[q * (r + 1)]).sum();
                1.0 / (trace.max(0.0).sqrt() as f32 + NORM_EPS)
            })
            .collect();
        Ok((CpuStorage::F32(scales), Shape::from(self.k)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s: &candle_core::CudaStorage, l: &Layout) -> Result<(candle_core::CudaStorage, Shape)> {
        Ok((super::cuda::gram_scales(self.name(), (s, l), self.k, self.r)?, Shape::from(self.k)))
    }
}

/// `s_j^power · (a·x + b·y + eye·I)`: the identity term on the trailing `r`×`r` matrices when
/// `r > 0`, the factor per matrix j of the stack when scales `s: (k,)` are given.
pub(crate) struct Axpby {
    /// The op's name, for errors.
    pub(super) op: &'static str,
    shape: Shape,
    /// The coefficients as f32, also for f64 data (Newton–Schulz's are given to 4 decimals).
    pub(super) a: f32,
    pub(super) b: f32,
    pub(super) eye: f32,
    pub(super) r: usize,
    /// The power of the scales (1 or 2); with scales, the elements per matrix.
    pub(super) power: i32,
    pub(super) per: usize,
}

impl Axpby {
    /// `s_j^power·(a·x + b·y + eye·I)` (`[a, b, eye]`, the identity on the trailing `r`×`r`
    /// matrices when `r > 0`, `(s, power)` the optional per-matrix scales: f32 `(k,)` for `x` of
    /// shape `(k, ..)`) for `x`, `y` of one shape and dtype (f32, bf16, or f64 on the CPU),
    /// checked and named `xn`, `yn` in `op`'s errors.
    pub(crate) fn run(
        op: &'static str,
        (xn, x): (&str, &Tensor),
        (yn, y): (&str, &Tensor),
        [a, b, eye]: [f64; 3],
        r: usize,
        scales: Option<(&Tensor, i32)>,
    ) -> Result<Tensor> {
        if x.dims() != y.dims() || x.dtype() != y.dtype() || !matches!(x.dtype(), DType::F32 | DType::BF16 | DType::F64)
        {
            bail!("{op}: `{xn}` and `{yn}` must be f32, bf16 or (on the CPU) f64 of one shape and dtype, got {:?} {:?} and {:?} {:?}", x.dtype(), x.dims(), y.dtype(), y.dims())
        }
        let mut f =
            Axpby { op, shape: x.shape().clone(), a: a as f32, b: b as f32, eye: eye as f32, r, power: 0, per: 0 };
        let (x, y) = (x.contiguous()?, y.contiguous()?);
        let Some((s, power)) = scales else { return x.apply_op2_no_bwd(&y, &f) };
        let k = x.dims().first().copied().unwrap_or(0);
        if s.dims() != [k] || s.dtype() != DType::F32 {
            bail!(
                "{op}: the scales must be f32 of shape ({k},), one per matrix of `{xn}`, got {:?} {:?}",
                s.dtype(),
                s.dims()
            )
        }
        (f.power, f.per) = (power, x.elem_count() / k.max(1));
        x.apply_op3_no_bwd(&y, &s.contiguous()?, &f)
    }

    /// The identity's term at flat index `i`.
    fn eye_at(&self, i: usize) -> f32 {
        if self.r == 0 {
            return 0.0;
        }
        let q = i % (self.r * self.r);
        if q / self.r == q % self.r {
            self.eye
        } else {
            0.0
        }
    }

    /// The kernel, with the scales when given.
    #[cfg(feature = "cuda")]
    fn cuda(
        &self,
        x: (&candle_core::CudaStorage, &Layout),
        y: (&candle_core::CudaStorage, &Layout),
        scales: Option<(&candle_core::CudaStorage, &Layout)>,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        Ok((super::cuda::axpby(self, x, y, scales)?, self.shape.clone()))
    }

    /// The CPU loops, with the scales `s` when given.
    fn cpu(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ys: &CpuStorage,
        yl: &Layout,
        s: Option<&[f32]>,
    ) -> Result<(CpuStorage, Shape)> {
        let factor = |i: usize| s.map_or(1.0, |s| s[i / self.per].powi(self.power));
        let f = |i: usize, x: f32, y: f32| (self.a * x + self.b * y + self.eye_at(i)) * factor(i);
        let out = match xs {
            CpuStorage::BF16(_) => {
                let (x, y) = (
                    contiguous_slice::<half::bf16>(self.op, "x", xs, xl)?,
                    contiguous_slice::<half::bf16>(self.op, "y", ys, yl)?,
                );
                CpuStorage::BF16(
                    x.iter()
                        .zip(y)
                        .enumerate()
                        .map(|(i, (x, y))| half::bf16::from_f32(f(i, x.to_f32(), y.to_f32())))
                        .collect(),
                )
            }
            CpuStorage::F64(_) => {
                let (x, y) =
                    (contiguous_slice::<f64>(self.op, "x", xs, xl)?, contiguous_slice::<f64>(self.op, "y", ys, yl)?);
                let (a, b) = (f64::from(self.a), f64::from(self.b));
                CpuStorage::F64(
                    x.iter()
                        .zip(y)
                        .enumerate()
                        .map(|(i, (&x, &y))| (a * x + b * y + f64::from(self.eye_at(i))) * f64::from(factor(i)))
                        .collect(),
                )
            }
            _ => {
                let (x, y) =
                    (contiguous_slice::<f32>(self.op, "x", xs, xl)?, contiguous_slice::<f32>(self.op, "y", ys, yl)?);
                CpuStorage::F32(x.iter().zip(y).enumerate().map(|(i, (&x, &y))| f(i, x, y)).collect())
            }
        };
        Ok((out, self.shape.clone()))
    }
}

impl CustomOp2 for Axpby {
    fn name(&self) -> &'static str {
        self.op
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout, ys: &CpuStorage, yl: &Layout) -> Result<(CpuStorage, Shape)> {
        self.cpu(xs, xl, ys, yl, None)
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        xs: &candle_core::CudaStorage,
        xl: &Layout,
        ys: &candle_core::CudaStorage,
        yl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        self.cuda((xs, xl), (ys, yl), None)
    }
}

impl CustomOp3 for Axpby {
    fn name(&self) -> &'static str {
        self.op
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ys: &CpuStorage,
        yl: &Layout,
        ss: &CpuStorage,
        sl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.cpu(xs, xl, ys, yl, Some(contiguous_slice::<f32>(self.op, "scales", ss, sl)?))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        xs: &candle_core::CudaStorage,
        xl: &Layout,
        ys: &candle_core::CudaStorage,
        yl: &Layout,
        ss: &candle_core::CudaStorage,
        sl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        self.cuda((xs, xl), (ys, yl), Some((ss, sl)))
    }
}
