//! Small helpers shared by the CUDA paths of the ops: our PTX, viewing a contiguous f32
//! tensor's device memory, and wrapping kernel outputs back into tensors.

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{CudaSlice, CudaView, DeviceRepr};
use candle_core::cuda_backend::{CudaDType, CudaDevice, CudaStorage};
use candle_core::op::BackpropOp;
use candle_core::{bail, Layout, Result, Shape, Storage, Tensor};

/// The PTX of `ops/kernels/*.cu`, compiled by `build.rs` for `CUDA_COMPUTE_CAP`.
pub(crate) mod ptx {
    pub const RMS_NORM: &str = include_str!(concat!(env!("OUT_DIR"), "/rms_norm.ptx"));
    pub const CROSS_ENTROPY: &str = include_str!(concat!(env!("OUT_DIR"), "/cross_entropy.ptx"));
    pub const MIXER_CONV: &str = include_str!(concat!(env!("OUT_DIR"), "/mixer_conv.ptx"));
    pub const MIXER_SCAN: &str = include_str!(concat!(env!("OUT_DIR"), "/mixer_scan.ptx"));
    pub const PARTIALS: &str = include_str!(concat!(env!("OUT_DIR"), "/partials.ptx"));
    pub const EMBEDDING: &str = include_str!(concat!(env!("OUT_DIR"), "/embedding.ptx"));
    pub const MUON: &str = include_str!(concat!(env!("OUT_DIR"), "/muon.ptx"));
    pub const RESIDUAL: &str = include_str!(concat!(env!("OUT_DIR"), "/residual.ptx"));
    pub const SUM_SQUARES: &str = include_str!(concat!(env!("OUT_DIR"), "/sum_squares.ptx"));
    pub const ADAMW: &str = include_str!(concat!(env!("OUT_DIR"), "/adamw.ptx"));
    pub const MULTI_TENSOR: &str = include_str!(concat!(env!("OUT_DIR"), "/multi_tensor.ptx"));
    pub const PACK: &str = include_str!(concat!(env!("OUT_DIR"), "/pack.ptx"));
}

/// The f32 device memory of a contiguous tensor argument.
pub(crate) fn view<'a>(op: &str, what: &str, s: &'a CudaStorage, l: &Layout) -> Result<CudaView<'a, f32>> {
    let slice = s.as_cuda_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((start, end)) => Ok(slice.slice(start..end)),
        None => bail!("{op}: internal error: `{what}` is not contiguous on the GPU"),
    }
}

/// [`view`] for any element type `T` (bf16 logits, u32 targets, …); fails if the storage holds
/// another dtype.
pub(crate) fn view_of<'a, T: candle_core::cuda_backend::CudaDType>(
    op: &str,
    what: &str,
    s: &'a CudaStorage,
    l: &Layout,
) -> Result<CudaView<'a, T>> {
    let slice = s.as_cuda_slice::<T>()?;
    match l.contiguous_offsets() {
        Some((start, end)) => Ok(slice.slice(start..end)),
        None => bail!("{op}: internal error: `{what}` is not contiguous on the GPU"),
    }
}

/// The CUDA storage behind a tensor (which must live on a CUDA device).
pub(crate) fn cuda_storage<'a>(op: &str, what: &str, s: &'a Storage) -> Result<&'a CudaStorage> {
    match s {
        Storage::Cuda(c) => Ok(c),
        _ => bail!("{op}: internal error: `{what}` is not on a CUDA device"),
    }
}

/// An element type kernels read or write in several variants: the kernel names end in `SUFFIX`
/// (`rms_norm_fwd_bf16`, `mixer_scan_fwd_f32_n16`, ...).
pub(crate) trait Io: CudaDType + DeviceRepr + Copy + 'static {
    const SUFFIX: &'static str;
}
impl Io for f32 {
    const SUFFIX: &'static str = "f32";
}
impl Io for half::bf16 {
    const SUFFIX: &'static str = "bf16";
}

/// Calls `$f::<T>(args)` with `T` the [`Io`] type of `$dtype` (f32 or bf16); any other dtype is
/// an error naming `$op`.
macro_rules! dispatch {
    ($op:expr, $dtype:expr, $f:ident($($arg:expr),*)) => {
        match $dtype {
            candle_core::DType::F32 => $f::<f32>($($arg),*),
            candle_core::DType::BF16 => $f::<half::bf16>($($arg),*),
            other => candle_core::bail!("{}: the CUDA kernels read bf16 or f32, got {other:?}", $op),
        }
    };
}
pub(crate) use dispatch;

/// Wraps a kernel's output as a fresh tensor (no autograd history).
pub(crate) fn tensor<T: Io>(slice: CudaSlice<T>, dev: &CudaDevice, shape: impl Into<Shape>) -> Tensor {
    tensor_of(CudaStorage::wrap_cuda_slice(slice, dev.clone()), shape)
}

/// Wraps a kernel's output storage as a fresh tensor (no autograd history).
pub(crate) fn tensor_of(storage: CudaStorage, shape: impl Into<Shape>) -> Tensor {
    Tensor::from_storage(Storage::Cuda(storage), shape, BackpropOp::none(), false)
}

/// The launch of a grid-stride loop over `n` elements: 256 threads per block, enough blocks to
/// cover `n` but at most `max_blocks` (the kernels loop over the rest), and at least one.
pub(crate) fn grid_stride(n: usize, max_blocks: usize) -> candle_core::cuda_backend::cudarc::driver::LaunchConfig {
    let blocks = n.div_ceil(GRID_STRIDE_THREADS).clamp(1, max_blocks.max(1));
    candle_core::cuda_backend::cudarc::driver::LaunchConfig {
        grid_dim: (blocks as u32, 1, 1),
        block_dim: (GRID_STRIDE_THREADS as u32, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Threads per block of [`grid_stride`] launches (the kernels read `blockDim.x`, or assume 256).
pub(crate) const GRID_STRIDE_THREADS: usize = 256;

pub(crate) fn device(s: &CudaStorage) -> CudaDevice {
    s.device().clone()
}

/// `out[o, x] = Σ_p part[o, p, x]` for `part: (outer, parts, inner)`, summed in a fixed order by
/// `kernels/partials.cu` (deterministic): the reduction of kernels' per-block partial results.
pub(crate) fn sum_partials(
    dev: &CudaDevice,
    part: &CudaSlice<f32>,
    (outer, parts, inner): (usize, usize, usize),
) -> Result<CudaSlice<f32>> {
    use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
    use candle_core::cuda_backend::WrapErr;
    if part.len() != outer * parts * inner {
        bail!("sum_partials: internal error: {} partial values, expected {outer}·{parts}·{inner}", part.len())
    }
    // SAFETY: one thread per output element writes every element.
    let out = unsafe { dev.alloc::<f32>(outer * inner)? };
    let func = dev.get_or_load_custom_func("sum_partials_f32", "mamba_partials", ptx::PARTIALS)?;
    let (o, p, i) = (outer as i32, parts as i32, inner as i32);
    let mut args = func.builder();
    args.arg(part).arg(&out).arg(&o).arg(&p).arg(&i);
    // SAFETY: argument types and order match the kernel's signature.
    unsafe { args.launch(LaunchConfig::for_num_elems((outer * inner) as u32)) }.w()?;
    Ok(out)
}
