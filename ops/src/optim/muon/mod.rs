//! Muon's elementwise work on stacked `(k, r, c)` matrices as a few ops, so each big tensor is
//! read once or twice per step instead of once per candle op (`kernels/muon.cu`; the candle
//! composite cost ~10 of Muon's 16 ms per step for the 130m model on an H200). Optimizer ops:
//! no backward.
//!
//! - [`muon_momentum`](crate::muon_momentum): `m ← β·m + g` and the look-ahead, in place;
//! - [`muon_apply`](crate::muon_apply): `w·decay − scale·o`, the decayed weights minus the
//!   scaled orthogonal update, in f32;
//! - [`muon_apply_in_place`](crate::muon_apply_in_place): the same on one parameter, in its own
//!   storage (no stacked copy of the weights and no copy back);
//! - [`axpby`](crate::axpby): `a·x + b·y`;
//! - [`muon_gram_scales`](crate::muon_gram_scales) and
//!   [`muon_gram_normalize`](crate::muon_gram_normalize): Newton–Schulz's `1/‖X‖_F` from the trace
//!   of its first Gram matrix, and that matrix normalized;
//! - [`muon_ns_poly`](crate::muon_ns_poly): `aI + bA + cA²`, Newton–Schulz's polynomial in the
//!   Gram matrix (the axpby kernel with a diagonal term), optionally scaled per matrix.
//!
//! The CPU paths are plain loops (f32 values, f64 sums for the traces) and the reference the CUDA
//! kernels are compared with.

#[cfg(feature = "cuda")]
mod cuda;

mod gram;

pub(crate) use gram::{gram_normalize, gram_scales, ns_poly};

use crate::util::cpu_storage::contiguous_slice;
use candle_core::{bail, CpuStorage, CustomOp2, DType, InplaceOp2, Layout, Result, Shape, Tensor};
use std::sync::Arc;

fn stack_dims(op: &str, what: &str, t: &Tensor) -> Result<(usize, usize, usize)> {
    match t.dims() {
        &[k, r, c] if t.dtype() == DType::F32 => Ok((k, r, c)),
        other => bail!("{op}: `{what}` must be a (k, r, c) f32 stack, got {:?} {other:?}", t.dtype()),
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
            CpuStorage::BF16(_) => {
                contiguous_slice::<half::bf16>(self.name(), "o", os, ol)?.iter().map(|x| x.to_f32()).collect()
            }
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
        bail!(
            "{NAME}: `o` must be f32 or bf16 with w's {} elements, got {:?} {:?}",
            w.elem_count(),
            o.dtype(),
            o.dims()
        )
    }
    w.inplace_op2(&o.contiguous()?, &ApplyInPlace { decay: decay as f32, scale: scale as f32 })
}

/// See [`crate::muon_momentum`].
pub(crate) fn muon_momentum(m: &Tensor, v: &Tensor, grads: &[Tensor], beta: f64, nesterov: bool) -> Result<()> {
    const NAME: &str = "muon_momentum";
    if m.dims() != v.dims() || m.dim(0)? != grads.len() {
        bail!(
            "{NAME}: `m` and `v` must be stacks of the {} gradients, got {:?} and {:?}",
            grads.len(),
            m.dims(),
            v.dims()
        )
    }
    let ms: Vec<Tensor> = (0..grads.len()).map(|j| m.get(j)).collect::<Result<_>>()?;
    crate::optim::multi_tensor::check(NAME, &[("m", &ms), ("grads", grads)])?;
    if !matches!(v.dtype(), DType::F32 | DType::BF16) || !v.is_contiguous() || !v.device().same_device(m.device()) {
        bail!(
            "{NAME}: `v` must be a contiguous f32 or bf16 stack on {:?}, got {:?} (contiguous: {}) on {:?}",
            m.device(),
            v.dtype(),
            v.is_contiguous(),
            v.device()
        )
    }
    #[cfg(feature = "cuda")]
    if let candle_core::Device::Cuda(dev) = m.device() {
        let vs: Vec<Tensor> = (0..grads.len()).map(|j| v.get(j)).collect::<Result<_>>()?;
        let name = if v.dtype() == DType::BF16 { "muon_momentum_many_bf16" } else { "muon_momentum_many_f32" };
        let h = MomentumScalars { beta: beta as f32, nesterov: i32::from(nesterov) };
        return crate::optim::multi_tensor::cuda::launch(
            NAME,
            dev,
            (name, "mamba_muon", crate::util::cuda_util::ptx::MUON),
            &[&ms, &vs, grads],
            2,
            &[],
            Some(&h),
        );
    }
    // Elsewhere: axpby per matrix (the same f32 arithmetic), copied into the stacks' slots.
    for (j, g) in grads.iter().enumerate() {
        let mj = axpby(&ms[j], g, beta, 1.0)?; // βm + g
        let vj = if nesterov { axpby(g, &mj, 1.0, beta)? } else { mj.clone() }; // g + βm
        m.slice_set(&mj.unsqueeze(0)?, 0, j)?;
        v.slice_set(&vj.to_dtype(v.dtype())?.unsqueeze(0)?, 0, j)?;
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
    crate::optim::multi_tensor::check(NAME, &[("w", ws)])?;
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
        let kernel = (
            if o.dtype() == DType::BF16 { "muon_apply_many_bf16" } else { "muon_apply_many_f32" },
            "mamba_muon",
            crate::util::cuda_util::ptx::MUON,
        );
        return crate::optim::multi_tensor::cuda::launch(
            NAME,
            dev,
            kernel,
            &[ws, &os],
            1,
            &[],
            Some(&ApplyScalars([decay as f32, scale as f32])),
        );
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
            CpuStorage::BF16(_) => {
                contiguous_slice::<half::bf16>(self.name(), "o", os, ol)?.iter().map(|x| x.to_f32()).collect()
            }
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
    fn cuda_fwd(
        &self,
        ws: &mut candle_core::CudaStorage,
        wl: &Layout,
        os: &candle_core::CudaStorage,
        ol: &Layout,
    ) -> Result<()> {
        cuda::apply_in_place(self.name(), (ws, wl), (os, ol), self.decay, self.scale)
    }
}

/// See [`crate::axpby`].
pub(crate) fn axpby(x: &Tensor, y: &Tensor, a: f64, b: f64) -> Result<Tensor> {
    gram::Axpby::run("axpby", ("x", x), ("y", y), [a, b, 0.0], 0, None)
}
