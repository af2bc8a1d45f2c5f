//! Updates of many tensors, one kernel launch for all of them on the GPU (PyTorch's
//! "multi-tensor apply"): the gradients' clipping scale ([`scale_in_place`]), gradient
//! accumulation over micro-batches ([`add_in_place`]), the bf16 gradients' conversion
//! ([`cast_many`]) and, in `adamw.rs`, the AdamW update of every parameter. Done per tensor with
//! candle ops, each of these cost the 130m model's ~220 gradients a launch and an allocation
//! apiece: 2.5–4.4 ms of host time per step for AdamW alone on an H200 around a 0.3 ms kernel.
//!
//! On the GPU the host cuts every tensor into chunks of at most [`CHUNK`] elements and uploads a
//! table with one entry per chunk: K device pointers, offset to the chunk's start, and a meta word
//! (length, flag) (`kernels/multi_tensor.cuh`); each block takes one entry. The kernels write
//! through pointers taken under candle's storage read locks: the one stream orders every later
//! use, and the tensors of one call must not overlap in memory (checked). On the CPU each tensor
//! is updated in place by a plain loop. The arithmetic per element is the candle op's.

use crate::util::cpu_storage::contiguous_slice;
use candle_core::{bail, CpuStorage, DType, InplaceOp1, InplaceOp2, Layout, Result, Tensor};

/// Elements per table entry (one block's work).
#[cfg(feature = "cuda")]
pub(crate) const CHUNK: usize = 32 * 1024;

#[cfg(feature = "cuda")]
const SCALE: cuda::Kernel = ("scale_many_f32", "mamba_multi_tensor", crate::util::cuda_util::ptx::MULTI_TENSOR);
#[cfg(feature = "cuda")]
const CAST_BF16_F32: cuda::Kernel =
    ("cast_many_bf16_f32", "mamba_multi_tensor", crate::util::cuda_util::ptx::MULTI_TENSOR);
#[cfg(feature = "cuda")]
const ADD: cuda::Kernel = ("add_many_f32", "mamba_multi_tensor", crate::util::cuda_util::ptx::MULTI_TENSOR);
#[cfg(feature = "cuda")]
const ADD_BF16: cuda::Kernel = ("add_many_bf16_f32", "mamba_multi_tensor", crate::util::cuda_util::ptx::MULTI_TENSOR);

/// `x ← s·x` for every tensor of `tensors` (contiguous f32, one device), in place.
pub fn scale_in_place(tensors: &[Tensor], s: f64) -> Result<()> {
    const NAME: &str = "scale_in_place";
    check(NAME, &[("tensors", tensors)])?;
    #[cfg(feature = "cuda")]
    if let Some(candle_core::Device::Cuda(dev)) = tensors.first().map(Tensor::device) {
        return cuda::launch(NAME, dev, SCALE, &[tensors], 1, &[], Some(&(s as f32)));
    }
    tensors.iter().try_for_each(|t| t.inplace_op1(&Scale(s as f32)))
}

/// `acc[i] ← acc[i] + x[i]` for every pair (contiguous, of one shape, one device), in place:
/// `acc` f32, `x` all f32 or all bf16 (added as f32).
pub fn add_in_place(acc: &[Tensor], x: &[Tensor]) -> Result<()> {
    const NAME: &str = "add_in_place";
    check(NAME, &[("acc", acc)])?;
    let x_dtype = x.first().map_or(DType::F32, Tensor::dtype);
    if !matches!(x_dtype, DType::F32 | DType::BF16) {
        bail!("{NAME}: `x` must be f32 or bf16, got {x_dtype:?}")
    }
    if x.len() != acc.len() {
        bail!("{NAME}: `x` has {} tensors, expected {}", x.len(), acc.len())
    }
    for (i, (a, t)) in acc.iter().zip(x).enumerate() {
        if t.dtype() != x_dtype || !t.is_contiguous() || !t.device().same_device(a.device()) {
            bail!(
                "{NAME}: `x` tensor {i} must be contiguous {x_dtype:?} on {:?}, got {:?} (contiguous: {}) on {:?}",
                a.device(),
                t.dtype(),
                t.is_contiguous(),
                t.device()
            )
        }
        if t.dims() != a.dims() {
            bail!("{NAME}: `x` tensor {i} has shape {:?}, expected {:?}", t.dims(), a.dims())
        }
    }
    #[cfg(feature = "cuda")]
    if let Some(candle_core::Device::Cuda(dev)) = acc.first().map(Tensor::device) {
        let kernel = if x_dtype == DType::BF16 { ADD_BF16 } else { ADD };
        return cuda::launch::<f32>(NAME, dev, kernel, &[acc, x], 1, &[], None);
    }
    acc.iter().zip(x).try_for_each(|(a, x)| a.inplace_op2(x, &Add))
}

/// Every tensor of `ts` converted to `dtype`, as new contiguous tensors. On the GPU, bf16 tensors
/// into f32 take one launch and one allocation for all of them (the results are views of one
/// buffer): the model's backward converts its bf16 matmul weights' gradients this way (four
/// candle casts per layer and micro-batch before, 1.3 ms per micro-batch of 8 for the 130m
/// model). Otherwise, and on the CPU, candle's `to_dtype` per tensor.
pub fn cast_many(ts: &[Tensor], dtype: candle_core::DType) -> Result<Vec<Tensor>> {
    #[cfg(feature = "cuda")]
    if let Some(candle_core::Device::Cuda(dev)) = ts.first().map(Tensor::device) {
        let batched = dtype == candle_core::DType::F32
            && ts.iter().all(|t| {
                t.dtype() == candle_core::DType::BF16 && t.is_contiguous() && t.device().same_device(ts[0].device())
            });
        if batched {
            let total: usize = ts.iter().map(Tensor::elem_count).sum();
            // SAFETY: the launch below writes every element (the views cover the buffer).
            let buf = crate::util::cuda_util::tensor(unsafe { dev.alloc::<f32>(total.max(1))? }, dev, total.max(1));
            let mut start = 0;
            let outs = ts
                .iter()
                .map(|t| {
                    let view = buf.narrow(0, start, t.elem_count())?.reshape(t.shape())?;
                    start += t.elem_count();
                    Ok(view)
                })
                .collect::<Result<Vec<_>>>()?;
            cuda::launch::<f32>("cast_many", dev, CAST_BF16_F32, &[&outs, ts], 1, &[], None)?;
            return Ok(outs);
        }
    }
    ts.iter().map(|t| t.to_dtype(dtype)?.contiguous()).collect()
}

/// Checks that the lists have one length and their i-th tensors one shape, and that every tensor
/// is contiguous f32 on the first one's device.
pub(crate) fn check(op: &str, lists: &[(&str, &[Tensor])]) -> Result<()> {
    let Some(((_, first), rest)) = lists.split_first() else { return Ok(()) };
    let Some(t0) = first.first() else { return Ok(()) };
    for (what, list) in lists {
        if list.len() != first.len() {
            bail!("{op}: `{what}` has {} tensors, expected {}", list.len(), first.len())
        }
        for (i, t) in list.iter().enumerate() {
            if t.dtype() != candle_core::DType::F32 || !t.is_contiguous() || !t.device().same_device(t0.device()) {
                bail!(
                    "{op}: `{what}` tensor {i} must be contiguous f32 on {:?}, got {:?} (contiguous: {}) on {:?}",
                    t0.device(),
                    t.dtype(),
                    t.is_contiguous(),
                    t.device()
                )
            }
        }
    }
    for (what, list) in rest {
        for (i, (t, f)) in list.iter().zip(first.iter()).enumerate() {
            if t.dims() != f.dims() {
                bail!("{op}: `{what}` tensor {i} has shape {:?}, expected {:?}", t.dims(), f.dims())
            }
        }
    }
    Ok(())
}

/// The f32 elements of a contiguous tensor's storage, for writing.
fn slice_mut<'a>(op: &str, s: &'a mut CpuStorage, l: &Layout) -> Result<&'a mut [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((start, end))) => Ok(&mut v[start..end]),
        _ => bail!("{op}: internal error: the tensor written is not contiguous f32"),
    }
}

struct Scale(f32);

impl InplaceOp1 for Scale {
    fn name(&self) -> &'static str {
        "scale_in_place"
    }

    fn cpu_fwd(&self, s: &mut CpuStorage, l: &Layout) -> Result<()> {
        slice_mut(self.name(), s, l)?.iter_mut().for_each(|x| *x *= self.0);
        Ok(())
    }
}

struct Add;

impl InplaceOp2 for Add {
    fn name(&self) -> &'static str {
        "add_in_place"
    }

    fn cpu_fwd(&self, acc: &mut CpuStorage, al: &Layout, x: &CpuStorage, xl: &Layout) -> Result<()> {
        let acc = slice_mut(self.name(), acc, al)?;
        match x {
            CpuStorage::BF16(_) => {
                let x = contiguous_slice::<half::bf16>(self.name(), "x", x, xl)?;
                acc.iter_mut().zip(x).for_each(|(a, x)| *a += x.to_f32());
            }
            _ => {
                let x = contiguous_slice::<f32>(self.name(), "x", x, xl)?;
                acc.iter_mut().zip(x).for_each(|(a, x)| *a += x);
            }
        }
        Ok(())
    }
}

#[cfg(feature = "cuda")]
pub(crate) mod cuda {
    use super::CHUNK;
    use crate::util::cuda_util::{cuda_storage, view_of};
    use candle_core::cuda_backend::cudarc::driver::{CudaView, DevicePtr, DeviceRepr, LaunchConfig, PushKernelArg};
    use candle_core::cuda_backend::{CudaDevice, CudaStorage, WrapErr};
    use candle_core::{bail, DType, Result, Tensor};

    /// A tensor's device memory, in one of the element types the tables take.
    enum View<'a> {
        F32(CudaView<'a, f32>),
        Bf16(CudaView<'a, half::bf16>),
    }

    impl<'a> View<'a> {
        fn new(op: &str, dtype: DType, s: &'a CudaStorage, l: &candle_core::Layout) -> Result<View<'a>> {
            match dtype {
                DType::F32 => Ok(View::F32(view_of(op, "tensor", s, l)?)),
                DType::BF16 => Ok(View::Bf16(view_of(op, "tensor", s, l)?)),
                other => bail!("{op}: internal error: multi-tensor launches take f32 or bf16, got {other:?}"),
            }
        }
    }

    /// A kernel taking the table first: (function, module, PTX).
    pub(crate) type Kernel = (&'static str, &'static str, &'static str);

    /// Launches `kernel` with one table entry per chunk of the tensors `lists[0][i]`,
    /// `lists[1][i]`, … (contiguous f32 or bf16 with as many elements per i, as the callers
    /// check), the entry's flag `flags[i]` (false when `flags` is empty), then `extra` as the
    /// kernel's second argument. The kernel writes the first `written` lists.
    pub(crate) fn launch<E: DeviceRepr>(
        op: &str,
        dev: &CudaDevice,
        kernel: Kernel,
        lists: &[&[Tensor]],
        written: usize,
        flags: &[bool],
        extra: Option<&E>,
    ) -> Result<()> {
        let n_tensors = lists.first().map_or(0, |l| l.len());
        if n_tensors == 0 {
            return Ok(());
        }
        let guards: Vec<Vec<_>> = lists.iter().map(|l| l.iter().map(Tensor::storage_and_layout).collect()).collect();
        let views = lists
            .iter()
            .zip(&guards)
            .map(|(list, gs)| {
                list.iter()
                    .zip(gs)
                    .map(|(t, (s, l))| View::new(op, t.dtype(), cuda_storage(op, "tensor", s)?, l))
                    .collect::<Result<Vec<_>>>()
            })
            .collect::<Result<Vec<_>>>()?;
        let stream = dev.cuda_stream();
        // (device address, bytes per element, elements) of every tensor; the pointer guards keep
        // the addresses valid (with the views and storage guards) past the launch.
        let mut keep = Vec::new();
        let spans: Vec<Vec<(u64, u64, usize)>> = views
            .iter()
            .map(|row| {
                row.iter()
                    .map(|v| {
                        let ((p, guard), size, len) = match v {
                            View::F32(v) => (v.device_ptr(&stream), 4, v.len()),
                            View::Bf16(v) => (v.device_ptr(&stream), 2, v.len()),
                        };
                        keep.push(guard);
                        (p, size, len)
                    })
                    .collect()
            })
            .collect();
        // The tensors written (the first `written` lists) may share memory with no other tensor:
        // the blocks would race. Tensors only read may share memory among themselves.
        let range = |&(p, size, len): &(u64, u64, usize)| (p, p + size * len as u64);
        let mut out: Vec<(u64, u64)> = spans[..written].iter().flatten().map(range).collect();
        out.sort_unstable();
        let overlaps = |(a, b): (u64, u64)| out.iter().any(|&(c, d)| a < d && c < b);
        if out.windows(2).any(|w| w[1].0 < w[0].1) || spans[written..].iter().flatten().map(range).any(overlaps) {
            bail!("{op}: a tensor written shares memory with another tensor of the call (views of one buffer?): the update would race")
        }
        // The table: per chunk, the K pointers at the chunk's start and the meta word.
        let k = lists.len();
        let mut table: Vec<u64> = Vec::new();
        for i in 0..n_tensors {
            let len = spans[0][i].2;
            let flag = u64::from(flags.get(i).copied().unwrap_or(false)) << 32;
            for start in (0..len).step_by(CHUNK) {
                table.extend(spans.iter().map(|row| row[i].0 + row[i].1 * start as u64));
                table.push((CHUNK.min(len - start) as u64) | flag);
            }
        }
        let entries = table.len() / (k + 1);
        if entries == 0 {
            return Ok(());
        }
        let table = dev.clone_htod(&table)?;
        let (name, module, ptx) = kernel;
        let func = dev.get_or_load_custom_func(name, module, ptx)?;
        let cfg = LaunchConfig { grid_dim: (entries as u32, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
        let mut args = func.builder();
        args.arg(&table);
        if let Some(e) = extra {
            args.arg(e);
        }
        // SAFETY: argument types and order match the kernel's signature; every entry points at
        // `len` live elements (f32 or bf16, as the kernel reads them) of a tensor whose storage
        // guard is held, and the tensors written overlap no other (checked above).
        unsafe { args.launch(cfg) }.w()?;
        drop(keep);
        Ok(())
    }
}
