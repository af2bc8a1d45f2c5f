//! Several 2-D tensors (or row-strided views of them) copied into one new tensor in a single
//! pass: [`concat_columns`] and, inside the crate, the mixer scan's packing of B | C with its
//! per-channel parameters and the split of their gradients ([`Part`], [`pack`]). On the GPU one
//! launch (`kernels/pack.cu`) where candle's narrow copies, casts and concatenations took one
//! each: about fifteen launches of 2–3 µs per layer and micro-batch for the 130m model. On the
//! CPU: candle's ops.

use candle_core::{bail, DType, Result, Tensor};

/// `[parts[0] | parts[1] | …]` along the columns, in `dtype`: every part is 2-D `(rows, c_i)`
/// with the same rows, f32 or bf16 (f64 on the CPU), and may be a view whose rows are further
/// apart than their length (a column slice of a wider tensor); the result is `(rows, Σ c_i)`,
/// contiguous. x_proj's gradient `[dΔ_low | dB | dC]` in one launch on the GPU when no part has
/// autograd history (else candle's cast and concatenation, which keep it).
pub fn concat_columns(parts: &[&Tensor], dtype: DType) -> Result<Tensor> {
    const NAME: &str = "concat_columns";
    let Some(first) = parts.first() else { bail!("{NAME}: no parts") };
    let rows = first.dims2()?.0;
    if let Some((i, p)) = parts.iter().enumerate().find(|(_, p)| p.rank() != 2 || p.dim(0).ok() != Some(rows)) {
        bail!("{NAME}: part {i} must be 2-D with {rows} rows, got {:?}", p.dims())
    }
    #[cfg(feature = "cuda")]
    if first.device().is_cuda()
        && parts.len() <= cuda::MAX_PARTS
        && matches!(dtype, DType::F32 | DType::BF16)
        && !parts.iter().any(|t| t.track_op())
    {
        let cols = parts.iter().map(|t| t.dim(1)).sum::<Result<usize>>()?;
        let mut off = 0;
        let spec: Vec<Part> = parts
            .iter()
            .map(|t| {
                let part = Part { t, dst_offset: off, dst_row_stride: cols };
                off += t.dim(1)?;
                Ok(part)
            })
            .collect::<Result<_>>()?;
        return pack(NAME, &spec, (rows, cols), dtype);
    }
    let parts: Vec<Tensor> = parts.iter().map(|t| t.to_dtype(dtype)).collect::<Result<_>>()?;
    Tensor::cat(&parts, 1)
}

/// One region of a [`pack`]: the 2-D tensor `t` (rows `(r, c)`, a row stride of its own, unit
/// column stride) goes to `dst_offset + row · dst_row_stride + col` of the output.
#[cfg(feature = "cuda")]
pub(crate) struct Part<'a> {
    pub t: &'a Tensor,
    pub dst_offset: usize,
    pub dst_row_stride: usize,
}

/// A new tensor of `shape` in `dtype` (f32 or bf16) on the parts' GPU, written by the parts
/// (which must cover it: nothing else is written), in one launch. At most `cuda::MAX_PARTS` parts,
/// each f32 or bf16 on that GPU.
#[cfg(feature = "cuda")]
pub(crate) fn pack(op: &str, parts: &[Part], shape: impl Into<candle_core::Shape>, dtype: DType) -> Result<Tensor> {
    let shape = shape.into();
    let covered: usize = parts.iter().map(|p| p.t.elem_count()).sum();
    if covered != shape.elem_count() {
        bail!("{op}: internal error: the packed parts hold {covered} elements, the result {}", shape.elem_count())
    }
    cuda::pack(op, parts, shape, dtype)
}

#[cfg(feature = "cuda")]
pub(crate) mod cuda {
    use super::Part;
    use crate::util::cuda_util::{cuda_storage, grid_stride, ptx, tensor};
    use candle_core::cuda_backend::cudarc::driver::{DevicePtr, DeviceRepr, PushKernelArg};
    use candle_core::cuda_backend::WrapErr;
    use candle_core::{bail, DType, Result, Shape, Tensor};

    /// Parts per launch (`PACK_MAX_PARTS`).
    pub(crate) const MAX_PARTS: usize = 8;
    /// Blocks of the grid-stride loop.
    const BLOCKS: usize = 2048;

    /// `PackPart` in `kernels/pack.cu`.
    #[derive(Clone, Copy, Default)]
    #[repr(C)]
    struct RawPart {
        src: u64,
        dst_off: u64,
        src_stride: u32,
        rows: u32,
        cols: u32,
        dst_stride: u32,
        bf16: u32,
        pad: u32,
    }

    /// `PackParts` in `kernels/pack.cu`: passed by value.
    #[derive(Clone, Copy)]
    #[repr(C)]
    struct RawParts {
        p: [RawPart; MAX_PARTS],
        total: u64,
        count: i32,
        pad: i32,
    }

    // SAFETY: plain integers, laid out as the kernel's structs of pointers and integers.
    unsafe impl DeviceRepr for RawParts {}

    /// `(rows, cols, row stride)` of a 2-D part (a 1-D tensor is one column).
    fn geometry(op: &str, i: usize, t: &Tensor, layout: &candle_core::Layout) -> Result<(usize, usize, usize)> {
        let (rows, cols, stride) = match (t.dims(), layout.stride()) {
            (&[r, c], &[s, 1]) => (r, c, s),
            (&[r, 1], &[s, _]) => (r, 1, s),
            (&[r], &[s]) => (r, 1, s),
            (d, s) => bail!(
                "{op}: internal error: part {i} must be 2-D with unit column stride, got shape {d:?}, strides {s:?}"
            ),
        };
        if u32::try_from(stride.max(rows * cols)).is_err() {
            bail!("{op}: part {i} is too large for the pack kernel ({rows} × {cols}, row stride {stride})")
        }
        Ok((rows, cols, stride))
    }

    pub(super) fn pack(op: &str, parts: &[Part], shape: Shape, dtype: DType) -> Result<Tensor> {
        if parts.is_empty() || parts.len() > MAX_PARTS {
            bail!("{op}: internal error: {} parts (1 to {MAX_PARTS})", parts.len())
        }
        let guards: Vec<_> = parts.iter().map(|p| p.t.storage_and_layout()).collect();
        let candle_core::Device::Cuda(dev) = parts[0].t.device() else { bail!("{op}: internal error: not on a GPU") };
        let stream = dev.cuda_stream();
        let mut raw = RawParts {
            p: [RawPart::default(); MAX_PARTS],
            total: shape.elem_count() as u64,
            count: parts.len() as i32,
            pad: 0,
        };
        // The parts' device memory (views from each one's first element), then their pointers,
        // whose guards live until after the launch.
        enum View<'a> {
            F32(candle_core::cuda_backend::cudarc::driver::CudaView<'a, f32>),
            Bf16(candle_core::cuda_backend::cudarc::driver::CudaView<'a, half::bf16>),
        }
        let mut views = Vec::with_capacity(parts.len());
        let mut geo = Vec::with_capacity(parts.len());
        for (i, (p, (s, l))) in parts.iter().zip(&guards).enumerate() {
            let cs = cuda_storage(op, "part", s)?;
            if !p.t.device().same_device(parts[0].t.device()) {
                bail!("{op}: part {i} is on {:?}, part 0 on {:?}", p.t.device(), parts[0].t.device())
            }
            let (rows, cols, stride) = geometry(op, i, p.t, l)?;
            let extent = if rows == 0 { 0 } else { (rows - 1) * stride + cols };
            let range = l.start_offset()..l.start_offset() + extent;
            views.push(match p.t.dtype() {
                DType::F32 => View::F32(cs.as_cuda_slice::<f32>()?.slice(range)),
                DType::BF16 => View::Bf16(cs.as_cuda_slice::<half::bf16>()?.slice(range)),
                other => bail!("{op}: part {i} must be f32 or bf16, got {other:?}"),
            });
            let end = p.dst_offset + if rows == 0 { 0 } else { (rows - 1) * p.dst_row_stride + cols };
            if end > shape.elem_count() || (rows > 1 && p.dst_row_stride < cols) {
                bail!("{op}: internal error: part {i} writes past the result or over itself")
            }
            geo.push((rows, cols, stride));
        }
        let mut keep = Vec::with_capacity(parts.len());
        for (i, (v, (p, &(rows, cols, stride)))) in views.iter().zip(parts.iter().zip(&geo)).enumerate() {
            let ((ptr, guard), bf16) = match v {
                View::F32(v) => (v.device_ptr(&stream), 0),
                View::Bf16(v) => (v.device_ptr(&stream), 1),
            };
            keep.push(guard);
            raw.p[i] = RawPart {
                src: ptr,
                dst_off: p.dst_offset as u64,
                src_stride: stride as u32,
                rows: rows as u32,
                cols: cols as u32,
                dst_stride: p.dst_row_stride as u32,
                bf16,
                pad: 0,
            };
        }
        let n = shape.elem_count();
        let cfg = grid_stride(n, BLOCKS);
        let out = match dtype {
            DType::F32 => {
                // SAFETY: the parts cover the result (checked by the caller) and write in bounds.
                let out = unsafe { dev.alloc::<f32>(n)? };
                let func = dev.get_or_load_custom_func("pack_2d_f32", "mamba_pack", ptx::PACK)?;
                let mut args = func.builder();
                args.arg(&raw).arg(&out);
                // SAFETY: argument types and order match the kernel's signature; every source
                // pointer addresses `extent` live elements of its dtype, kept by `guards`.
                unsafe { args.launch(cfg) }.w()?;
                tensor(out, dev, shape)
            }
            DType::BF16 => {
                // SAFETY: as above.
                let out = unsafe { dev.alloc::<half::bf16>(n)? };
                let func = dev.get_or_load_custom_func("pack_2d_bf16", "mamba_pack", ptx::PACK)?;
                let mut args = func.builder();
                args.arg(&raw).arg(&out);
                // SAFETY: as above.
                unsafe { args.launch(cfg) }.w()?;
                tensor(out, dev, shape)
            }
            other => bail!("{op}: the result must be f32 or bf16, got {other:?}"),
        };
        drop(keep);
        drop(views);
        drop(guards);
        Ok(out)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn concat_columns_concatenates_views_and_names_bad_parts() {
        let a = Tensor::arange(0f32, 6.0, &Device::Cpu).unwrap().reshape((2, 3)).unwrap();
        let wide = Tensor::arange(10f32, 18.0, &Device::Cpu).unwrap().reshape((2, 4)).unwrap();
        let got = concat_columns(&[&a, &wide.narrow(1, 1, 2).unwrap()], DType::F64).unwrap();
        assert_eq!(
            got.to_vec2::<f64>().unwrap(),
            vec![vec![0.0, 1.0, 2.0, 11.0, 12.0], vec![3.0, 4.0, 5.0, 15.0, 16.0]]
        );
        let e = concat_columns(&[&a, &wide.narrow(0, 0, 1).unwrap()], DType::F32).unwrap_err().to_string();
        assert!(e.contains("concat_columns") && e.contains("part 1"), "{e}");
        assert!(concat_columns(&[&a.flatten_all().unwrap()], DType::F32).is_err(), "1-D");
        assert!(concat_columns(&[], DType::F32).is_err(), "no parts");
    }
}
