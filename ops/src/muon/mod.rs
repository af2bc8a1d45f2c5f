//! Muon's elementwise work on stacked `(k, r, c)` f32 matrices as a few ops, so each big tensor is
//! read once or twice per step instead of once per candle op (`kernels/muon.cu`; the candle
//! composite cost ~10 of Muon's 16 ms per step for the 130m model on an H200). Optimizer ops:
//! no backward.
//!
//! - [`muon_ns_input`](crate::muon_ns_input): `u = v / (‖v‖_F + eps)` per matrix with
//!   `v = g + β·m` (Nesterov) or `m`, in the Newton–Schulz dtype;
//! - [`muon_apply`](crate::muon_apply): `w·decay − scale·o`, the decayed weights minus the
//!   scaled orthogonal update, in f32;
//! - [`muon_apply_in_place`](crate::muon_apply_in_place): the same on one parameter, in its own
//!   storage (no stacked copy of the weights and no copy back);
//! - [`axpby`](crate::axpby): `a·x + b·y`, the momentum;
//! - [`muon_ns_poly`](crate::muon_ns_poly): `aI + bA + cA²`, Newton–Schulz's polynomial in the
//!   Gram matrix (the same kernel with a diagonal term).
//!
//! The CPU paths are plain loops (f32 values, f64 sums for the norm) and the reference the CUDA
//! kernels are compared with.

#[cfg(feature = "cuda")]
mod cuda;

use crate::cpu_storage::contiguous_slice;
use crate::mixer::store;
use candle_core::{bail, CpuStorage, CustomOp2, DType, InplaceOp2, Layout, Result, Shape, Tensor};
use std::sync::Arc;

/// Added to the Frobenius norm before dividing, so a zero matrix stays zero (as in
/// `newton_schulz_batched`).
pub(crate) const NORM_EPS: f32 = 1e-7;

fn stack_dims(op: &str, what: &str, t: &Tensor) -> Result<(usize, usize, usize)> {
    match t.dims() {
        &[k, r, c] if t.dtype() == DType::F32 => Ok((k, r, c)),
        other => bail!("{op}: `{what}` must be a (k, r, c) f32 stack, got {:?} {other:?}", t.dtype()),
    }
}

/// See [`crate::muon_ns_input`].
pub(crate) fn muon_ns_input(g: &Tensor, m: &Tensor, beta: f64, nesterov: bool, dtype: DType) -> Result<Tensor> {
    const NAME: &str = "muon_ns_input";
    let (k, r, c) = stack_dims(NAME, "g", g)?;
    if stack_dims(NAME, "m", m)? != (k, r, c) {
        bail!("{NAME}: `m` has shape {:?}, `g` {:?}", m.dims(), g.dims())
    }
    if !matches!(dtype, DType::F32 | DType::BF16) {
        bail!("{NAME}: output dtype must be f32 or bf16, got {dtype:?}")
    }
    let op: Arc<Box<dyn CustomOp2 + Send + Sync>> =
        Arc::new(Box::new(NsInput { k, per: r * c, shape: (k, r, c).into(), beta: beta as f32, nesterov, dtype }));
    g.contiguous()?.apply_op2_arc(&m.contiguous()?, op)
}

struct NsInput {
    k: usize,
    per: usize,
    shape: Shape,
    beta: f32,
    nesterov: bool,
    dtype: DType,
}

impl CustomOp2 for NsInput {
    fn name(&self) -> &'static str {
        "muon_ns_input"
    }

    fn cpu_fwd(&self, gs: &CpuStorage, gl: &Layout, ms: &CpuStorage, ml: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = contiguous_slice::<f32>(self.name(), "g", gs, gl)?;
        let m = contiguous_slice::<f32>(self.name(), "m", ms, ml)?;
        let mut u = Vec::with_capacity(self.k * self.per);
        for (gm, mm) in g.chunks_exact(self.per).zip(m.chunks_exact(self.per)) {
            let v: Vec<f32> = gm.iter().zip(mm).map(|(&g, &m)| if self.nesterov { g + self.beta * m } else { m }).collect();
            let norm = v.iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>().sqrt() as f32;
            let inv = 1.0 / (norm + NORM_EPS);
            u.extend(v.iter().map(|&x| x * inv));
        }
        Ok((store(self.name(), &u, self.dtype)?, self.shape.clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        gs: &candle_core::CudaStorage,
        gl: &Layout,
        ms: &candle_core::CudaStorage,
        ml: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let u = cuda::ns_input(self.name(), (gs, gl), (ms, ml), self.k, self.per, self.beta, self.nesterov, self.dtype)?;
        Ok((u, self.shape.clone()))
    }
}

/// See [`crate::muon_apply`].
pub(crate) fn muon_apply(w: &Tensor, o: &Tensor, decay: f64, scale: f64) -> Result<Tensor> {
    const NAME: &str = "muon_apply";
    let dims = stack_dims(NAME, "w", w)?;
    if o.dims() != w.dims() || !matches!(o.dtype(), DType::F32 | DType::BF16) {
        bail!("{NAME}: `o` must be f32 or bf16 of w's shape {:?}, got {:?} {:?}", w.dims(), o.dtype(), o.dims())
    }
    let op: Arc<Box<dyn CustomOp2 + Send + Sync>> =
        Arc::new(Box::new(Apply { shape: dims.into(), decay: decay as f32, scale: scale as f32 }));
    w.contiguous()?.apply_op2_arc(&o.contiguous()?, op)
}

struct Apply {
    shape: Shape,
    decay: f32,
    scale: f32,
}

impl CustomOp2 for Apply {
    fn name(&self) -> &'static str {
        "muon_apply"
    }

    fn cpu_fwd(&self, ws: &CpuStorage, wl: &Layout, os: &CpuStorage, ol: &Layout) -> Result<(CpuStorage, Shape)> {
        let w = contiguous_slice::<f32>(self.name(), "w", ws, wl)?;
        let o: Vec<f32> = match os {
            CpuStorage::BF16(_) => contiguous_slice::<half::bf16>(self.name(), "o", os, ol)?.iter().map(|x| x.to_f32()).collect(),
            _ => contiguous_slice::<f32>(self.name(), "o", os, ol)?.to_vec(),
        };
        let out = w.iter().zip(&o).map(|(&w, &o)| w * self.decay - self.scale * o).collect();
        Ok((CpuStorage::F32(out), self.shape.clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        ws: &candle_core::CudaStorage,
        wl: &Layout,
        os: &candle_core::CudaStorage,
        ol: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        Ok((cuda::apply(self.name(), (ws, wl), (os, ol), self.decay, self.scale)?, self.shape.clone()))
    }
}

/// See [`crate::muon_apply_in_place`].
pub(crate) fn muon_apply_in_place(w: &Tensor, o: &Tensor, decay: f64, scale: f64) -> Result<()> {
    const NAME: &str = "muon_apply_in_place";
    if w.dtype() != DType::F32 || !w.is_contiguous() {
        bail!("{NAME}: `w` must be a contiguous f32 tensor, got {:?} (contiguous: {})", w.dtype(), w.is_contiguous())
    }
    if o.elem_count() != w.elem_count() || !matches!(o.dtype(), DType::F32 | DType::BF16) {
        bail!("{NAME}: `o` must be f32 or bf16 with w's {} elements, got {:?} {:?}", w.elem_count(), o.dtype(), o.dims())
    }
    w.inplace_op2(&o.contiguous()?, &ApplyInPlace { decay: decay as f32, scale: scale as f32 })
}

/// See [`crate::muon_momentum`].
pub(crate) fn muon_momentum(m: &Tensor, v: &Tensor, grads: &[Tensor], beta: f64, nesterov: bool) -> Result<()> {
    const NAME: &str = "muon_momentum";
    if m.dims() != v.dims() || m.dim(0)? != grads.len() {
        bail!("{NAME}: `m` and `v` must be stacks of the {} gradients, got {:?} and {:?}", grads.len(), m.dims(), v.dims())
    }
    let (ms, vs): (Vec<Tensor>, Vec<Tensor>) = (0..grads.len()).map(|j| Ok((m.get(j)?, v.get(j)?))).collect::<Result<Vec<_>>>()?.into_iter().unzip();
    crate::multi_tensor::check(NAME, &[("m", &ms), ("v", &vs), ("grads", grads)])?;
    #[cfg(feature = "cuda")]
    if let candle_core::Device::Cuda(dev) = m.device() {
        let kernel = ("muon_momentum_many_f32", "mamba_muon", crate::cuda_util::ptx::MUON);
        let h = MomentumScalars { beta: beta as f32, nesterov: i32::from(nesterov) };
        return crate::multi_tensor::cuda::launch(NAME, dev, kernel, &[&ms, &vs, grads], 2, &[], Some(&h));
    }
    // Elsewhere: axpby per matrix (the same f32 arithmetic), copied into the stacks' slots.
    for (j, g) in grads.iter().enumerate() {
        let mj = axpby(&ms[j], g, beta, 1.0)?; // βm + g
        let vj = if nesterov { axpby(g, &mj, 1.0, beta)? } else { mj.clone() }; // g + βm
        m.slice_set(&mj.unsqueeze(0)?, 0, j)?;
        v.slice_set(&vj.unsqueeze(0)?, 0, j)?;
    }
    Ok(())
}

/// `beta, nesterov` as the kernel takes them (`MuonMomentumScalars` in `kernels/muon.cu`).
#[cfg(feature = "cuda")]
#[derive(Clone, Copy)]
#[repr(C)]
struct MomentumScalars {
    beta: f32,
    nesterov: i32,
}

// SAFETY: an f32 and an i32, laid out as the kernel's struct of a float and an int.
#[cfg(feature = "cuda")]
unsafe impl candle_core::cuda_backend::cudarc::driver::DeviceRepr for MomentumScalars {}

/// See [`crate::muon_apply_many`].
pub(crate) fn muon_apply_many(ws: &[Tensor], o: &Tensor, decay: f64, scale: f64) -> Result<()> {
    const NAME: &str = "muon_apply_many";
    crate::multi_tensor::check(NAME, &[("w", ws)])?;
    if o.dim(0)? != ws.len() || !matches!(o.dtype(), DType::F32 | DType::BF16) {
        bail!("{NAME}: `o` must be an f32 or bf16 stack of {} matrices, got {:?} {:?}", ws.len(), o.dtype(), o.dims())
    }
    let o = o.contiguous()?;
    let os: Vec<Tensor> = (0..ws.len()).map(|j| o.get(j)).collect::<Result<_>>()?;
    if let Some((j, w)) = ws.iter().enumerate().find(|(j, w)| w.elem_count() != os[*j].elem_count()) {
        bail!("{NAME}: matrix {j} of `o` has {} elements, `w` {j} has {}", os[j].elem_count(), w.elem_count())
    }
    #[cfg(feature = "cuda")]
    if let candle_core::Device::Cuda(dev) = o.device() {
        let kernel = (if o.dtype() == DType::BF16 { "muon_apply_many_bf16" } else { "muon_apply_many_f32" }, "mamba_muon", crate::cuda_util::ptx::MUON);
        return crate::multi_tensor::cuda::launch(NAME, dev, kernel, &[ws, &os], 1, &[], Some(&ApplyScalars([decay as f32, scale as f32])));
    }
    ws.iter().zip(&os).try_for_each(|(w, o)| muon_apply_in_place(w, o, decay, scale))
}

/// `decay, scale` as the kernels take them (`MuonApplyScalars` in `kernels/muon.cu`).
#[cfg(feature = "cuda")]
#[derive(Clone, Copy)]
#[repr(C)]
struct ApplyScalars([f32; 2]);

// SAFETY: two f32s, laid out as the kernels' struct of two floats.
#[cfg(feature = "cuda")]
unsafe impl candle_core::cuda_backend::cudarc::driver::DeviceRepr for ApplyScalars {}

struct ApplyInPlace {
    decay: f32,
    scale: f32,
}

impl InplaceOp2 for ApplyInPlace {
    fn name(&self) -> &'static str {
        "muon_apply_in_place"
    }

    fn cpu_fwd(&self, ws: &mut CpuStorage, wl: &Layout, os: &CpuStorage, ol: &Layout) -> Result<()> {
        let o: Vec<f32> = match os {
            CpuStorage::BF16(_) => contiguous_slice::<half::bf16>(self.name(), "o", os, ol)?.iter().map(|x| x.to_f32()).collect(),
            _ => contiguous_slice::<f32>(self.name(), "o", os, ol)?.to_vec(),
        };
        let (CpuStorage::F32(w), Some((start, end))) = (ws, wl.contiguous_offsets()) else {
            bail!("{}: internal error: `w` is not contiguous f32", self.name())
        };
        for (w, o) in w[start..end].iter_mut().zip(&o) {
            *w = *w * self.decay - self.scale * o;
        }
        Ok(())
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, ws: &mut candle_core::CudaStorage, wl: &Layout, os: &candle_core::CudaStorage, ol: &Layout) -> Result<()> {
        cuda::apply_in_place(self.name(), (ws, wl), (os, ol), self.decay, self.scale)
    }
}

/// See [`crate::axpby`].
pub(crate) fn axpby(x: &Tensor, y: &Tensor, a: f64, b: f64) -> Result<Tensor> {
    Axpby::run("axpby", ("x", x), ("y", y), [a, b, 0.0], 0)
}

/// See [`crate::muon_ns_poly`].
pub(crate) fn ns_poly(gram: &Tensor, gram_sq: &Tensor, a: f64, b: f64, c: f64) -> Result<Tensor> {
    const NAME: &str = "muon_ns_poly";
    let r = match gram.dims() {
        &[_, r, r2] if r == r2 => r,
        d => bail!("{NAME}: `gram` must be a (k, r, r) stack of square matrices, got {d:?}"),
    };
    Axpby::run(NAME, ("gram", gram), ("gram_sq", gram_sq), [b, c, a], r)
}

/// `a·x + b·y + eye·I`, the identity term on the trailing `r`×`r` matrices when `r > 0`.
struct Axpby {
    shape: Shape,
    /// The coefficients as f32, also for f64 data (Newton–Schulz's are given to 4 decimals).
    a: f32,
    b: f32,
    eye: f32,
    r: usize,
}

impl Axpby {
    /// `a·x + b·y + eye·I` (`[a, b, eye]`, the identity on the trailing `r`×`r` matrices when
    /// `r > 0`) for `x`, `y` of one shape and dtype (f32, bf16, or f64 on the CPU), checked and
    /// named `xn`, `yn` in `op`'s errors.
    fn run(op: &str, (xn, x): (&str, &Tensor), (yn, y): (&str, &Tensor), [a, b, eye]: [f64; 3], r: usize) -> Result<Tensor> {
        if x.dims() != y.dims() || x.dtype() != y.dtype() || !matches!(x.dtype(), DType::F32 | DType::BF16 | DType::F64) {
            bail!("{op}: `{xn}` and `{yn}` must be f32, bf16 or (on the CPU) f64 of one shape and dtype, got {:?} {:?} and {:?} {:?}", x.dtype(), x.dims(), y.dtype(), y.dims())
        }
        let op: Arc<Box<dyn CustomOp2 + Send + Sync>> = Arc::new(Box::new(Axpby { shape: x.shape().clone(), a: a as f32, b: b as f32, eye: eye as f32, r }));
        x.contiguous()?.apply_op2_arc(&y.contiguous()?, op)
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
}

impl CustomOp2 for Axpby {
    fn name(&self) -> &'static str {
        "axpby"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout, ys: &CpuStorage, yl: &Layout) -> Result<(CpuStorage, Shape)> {
        let f = |i: usize, x: f32, y: f32| self.a * x + self.b * y + self.eye_at(i);
        let out = match xs {
            CpuStorage::BF16(_) => {
                let (x, y) = (contiguous_slice::<half::bf16>(self.name(), "x", xs, xl)?, contiguous_slice::<half::bf16>(self.name(), "y", ys, yl)?);
                CpuStorage::BF16(x.iter().zip(y).enumerate().map(|(i, (x, y))| half::bf16::from_f32(f(i, x.to_f32(), y.to_f32()))).collect())
            }
            CpuStorage::F64(_) => {
                let (x, y) = (contiguous_slice::<f64>(self.name(), "x", xs, xl)?, contiguous_slice::<f64>(self.name(), "y", ys, yl)?);
                let (a, b) = (f64::from(self.a), f64::from(self.b));
                CpuStorage::F64(x.iter().zip(y).enumerate().map(|(i, (&x, &y))| a * x + b * y + f64::from(self.eye_at(i))).collect())
            }
            _ => {
                let (x, y) = (contiguous_slice::<f32>(self.name(), "x", xs, xl)?, contiguous_slice::<f32>(self.name(), "y", ys, yl)?);
                CpuStorage::F32(x.iter().zip(y).enumerate().map(|(i, (&x, &y))| f(i, x, y)).collect())
            }
        };
        Ok((out, self.shape.clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        xs: &candle_core::CudaStorage,
        xl: &Layout,
        ys: &candle_core::CudaStorage,
        yl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        Ok((cuda::axpby(self.name(), (xs, xl), (ys, yl), self.a, self.b, self.eye, self.r)?, self.shape.clone()))
    }
}
