//! `sum_squares`: Σx² of each of many f32 tensors, for the gradients' global norm. On the GPU one
//! kernel covers every tensor (`kernels/sum_squares.cu`: a table of device pointers, per-block
//! partial sums) and the host adds the partials in f64 in a fixed order: deterministic, and one
//! launch and one copy back instead of five candle ops per tensor. On the CPU a plain f64 loop.

use candle_core::{bail, DType, Result, Tensor};

const NAME: &str = "sum_squares";

/// See [`crate::sum_squares`].
pub(crate) fn sum_squares(tensors: &[Tensor]) -> Result<Vec<f64>> {
    let Some(first) = tensors.first() else { return Ok(Vec::new()) };
    for (i, t) in tensors.iter().enumerate() {
        if t.dtype() != DType::F32 || !t.device().same_device(first.device()) {
            bail!("{NAME}: tensor {i} must be f32 on {:?}, got {:?} on {:?}", first.device(), t.dtype(), t.device())
        }
    }
    let tensors: Vec<Tensor> = tensors.iter().map(|t| t.contiguous()).collect::<Result<_>>()?;
    #[cfg(feature = "cuda")]
    if let candle_core::Device::Cuda(dev) = first.device() {
        return cuda(dev, &tensors);
    }
    tensors
        .iter()
        .map(|t| Ok(t.flatten_all()?.to_vec1::<f32>()?.iter().map(|&x| f64::from(x) * f64::from(x)).sum()))
        .collect()
}

/// Blocks per tensor: its partial sums.
#[cfg(feature = "cuda")]
const PARTS: usize = 32;

#[cfg(feature = "cuda")]
fn cuda(dev: &candle_core::CudaDevice, tensors: &[Tensor]) -> Result<Vec<f64>> {
    use crate::util::cuda_util::{cuda_storage, ptx, view};
    use candle_core::cuda_backend::cudarc::driver::{DevicePtr, LaunchConfig, PushKernelArg};
    use candle_core::cuda_backend::WrapErr;
    let guards: Vec<_> = tensors.iter().map(|t| t.storage_and_layout()).collect();
    let views = guards
        .iter()
        .map(|(s, l)| view(NAME, "tensor", cuda_storage(NAME, "tensor", s)?, l))
        .collect::<Result<Vec<_>>>()?;
    let stream = dev.cuda_stream();
    // The pointers stay valid while `views` (and the storage guards) live, past the launch.
    let ptrs: Vec<_> = views.iter().map(|v| v.device_ptr(&stream)).collect();
    let table: Vec<u64> = ptrs.iter().map(|(p, _)| *p).collect();
    let lens: Vec<i64> = views.iter().map(|v| v.len() as i64).collect();
    let (table, lens) = (dev.clone_htod(&table)?, dev.clone_htod(&lens)?);
    // SAFETY: every block writes its own partial.
    let part = unsafe { dev.alloc::<f32>(tensors.len() * PARTS)? };
    let func = dev.get_or_load_custom_func("sum_squares_f32", "mamba_sum_squares", ptx::SUM_SQUARES)?;
    let cfg =
        LaunchConfig { grid_dim: (PARTS as u32, tensors.len() as u32, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
    let mut args = func.builder();
    args.arg(&table).arg(&lens).arg(&part);
    // SAFETY: argument types and order match the kernel's signature; the table points at live
    // f32 buffers of the given lengths.
    unsafe { args.launch(cfg) }.w()?;
    let part = dev.clone_dtoh(&part)?;
    drop(ptrs);
    Ok(part.chunks_exact(PARTS).map(|p| p.iter().map(|&x| f64::from(x)).sum()).collect())
}
