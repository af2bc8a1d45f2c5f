//! `--device cpu|cuda:N` and `--dtype f32|bf16`.

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};

pub fn parse_device(s: &str) -> Result<Device> {
    if s == "cpu" {
        return Ok(Device::Cpu);
    }
    if let Some(n) = s.strip_prefix("cuda:").or(if s == "cuda" { Some("0") } else { None }) {
        let ordinal: usize = n.parse().with_context(|| format!("--device {s}: bad GPU ordinal"))?;
        let device =
            Device::new_cuda(ordinal).with_context(|| format!("--device {s} (this build needs `--features cuda`)"))?;
        #[cfg(feature = "cuda")]
        if let Device::Cuda(cuda) = &device {
            tune_cuda(cuda).with_context(|| format!("--device {s}: configuring the CUDA allocator"))?;
        }
        return Ok(device);
    }
    bail!("--device {s}: expected cpu or cuda:N")
}

/// The device of one GPU rank of data-parallel training (`--devices`): created on an explicit
/// stream of its own (not CUDA's per-thread default stream, which NCCL handles badly), tuned as
/// `--device cuda:N` is. Called in the rank's own thread.
pub fn cuda_rank_device(ordinal: usize) -> Result<Device> {
    #[cfg(feature = "cuda")]
    {
        let cuda =
            candle_core::CudaDevice::new_with_stream(ordinal).with_context(|| format!("opening GPU {ordinal}"))?;
        tune_cuda(&cuda).with_context(|| format!("GPU {ordinal}: configuring the CUDA allocator"))?;
        Ok(Device::Cuda(cuda))
    }
    #[cfg(not(feature = "cuda"))]
    bail!("GPU {ordinal}: this build has no CUDA (build with `--features nccl`)")
}

/// Two settings for a device that one training process drives from one stream, made before any
/// tensor exists on it:
/// - no per-allocation CUDA events: cudarc records them to order a buffer's uses across
///   streams; with a single stream they are pure host overhead on every allocation;
/// - the stream-ordered memory pool keeps freed memory: by default it hands everything back to
///   the driver at each synchronisation (the loss and grad-norm reads sync every step), so every
///   step re-acquired gigabytes. PyTorch's caching allocator keeps memory the same way.
#[cfg(feature = "cuda")]
fn tune_cuda(cuda: &candle_core::CudaDevice) -> Result<()> {
    use candle_core::cuda_backend::cudarc::driver::{result, sys};
    // SAFETY: called right after the device is created, before any buffer exists, and the trainer
    // issues all work on the device's one stream.
    unsafe { cuda.disable_event_tracking() };
    let cu_device = cuda.cuda_stream().context().cu_device();
    let mut keep: u64 = u64::MAX;
    // SAFETY: `cu_device` comes from a live context; the attribute takes a u64 by pointer.
    unsafe {
        let pool = result::device::get_default_mem_pool(cu_device)?;
        result::mem_pool::set_attribute(
            pool,
            sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
            (&mut keep as *mut u64).cast(),
        )?;
    }
    Ok(())
}

/// The free memory of an opened CUDA device in bytes (cuMemGetInfo in its context); `None` for
/// the CPU. For `--micro-batch auto` (`train::batch_plan`).
pub fn gpu_free_memory(device: &Device) -> Result<Option<u64>> {
    #[cfg(feature = "cuda")]
    if let Device::Cuda(cuda) = device {
        let (free, _total) = cuda.cuda_stream().context().mem_get_info().context("reading the GPU's free memory")?;
        return Ok(Some(free as u64));
    }
    #[cfg(not(feature = "cuda"))]
    let _ = device; // a build without CUDA has no GPU
    Ok(None)
}

/// The free memory of GPU `ordinal` in bytes, read through its primary context before the ranks
/// of `--devices` open their devices (for `--micro-batch auto`).
pub fn gpu_free_memory_of(ordinal: usize) -> Result<u64> {
    #[cfg(feature = "cuda")]
    {
        use candle_core::cuda_backend::cudarc::driver::CudaContext;
        let ctx = CudaContext::new(ordinal).with_context(|| format!("opening GPU {ordinal}"))?;
        let (free, _total) = ctx.mem_get_info().with_context(|| format!("reading GPU {ordinal}'s free memory"))?;
        Ok(free as u64)
    }
    #[cfg(not(feature = "cuda"))]
    bail!("GPU {ordinal}: this build has no CUDA (build with `--features nccl`)")
}

/// The compute dtype. bf16 is mixed precision (bf16 matmuls and activations, f32 master weights,
/// optimizer state, recurrence, norm statistics and loss). It also runs on the CPU (slowly:
/// candle's CPU bf16 matmul is not tuned), which is how the tests check it.
pub fn parse_dtype(s: &str, _device: &Device) -> Result<DType> {
    match s {
        "f32" => Ok(DType::F32),
        "bf16" => Ok(DType::BF16),
        _ => bail!("--dtype {s}: expected f32 or bf16"),
    }
}
