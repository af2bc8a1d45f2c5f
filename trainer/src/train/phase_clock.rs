//! Phase times of a training step (forward, backward, update) without stalling the GPU: on a
//! CUDA device each mark is an event recorded on the device's stream and the times are read
//! once the step's results are read anyway; elsewhere (CPU: every op has finished when it
//! returns) a mark is the host's clock. Synchronizing after each phase to read the host's clock
//! instead left the GPU idle while the host prepared the next micro-batch (uploads, the embedding
//! index) and issued its first kernels.

use anyhow::Result;
use candle_core::Device;
use std::time::Instant;

/// A point in a device's work.
pub enum Mark {
    Host(Instant),
    #[cfg(feature = "cuda")]
    Cuda(candle_core::cuda_backend::cudarc::driver::CudaEvent),
}

/// Marks the work issued so far on `device`.
pub fn mark(device: &Device) -> Result<Mark> {
    #[cfg(feature = "cuda")]
    if let Device::Cuda(cuda) = device {
        use candle_core::cuda_backend::cudarc::driver::sys::CUevent_flags;
        // Timing events (the default flags); recording one does not wait for anything.
        return Ok(Mark::Cuda(cuda.cuda_stream().record_event(Some(CUevent_flags::CU_EVENT_DEFAULT))?));
    }
    let _ = device;
    Ok(Mark::Host(Instant::now()))
}

/// Milliseconds from `start` to `end` (marks of one device); on a GPU this waits for `end`'s work.
pub fn elapsed_ms(start: &Mark, end: &Mark) -> Result<f64> {
    match (start, end) {
        (Mark::Host(a), Mark::Host(b)) => Ok(b.saturating_duration_since(*a).as_secs_f64() * 1e3),
        #[cfg(feature = "cuda")]
        (Mark::Cuda(a), Mark::Cuda(b)) => Ok(f64::from(a.elapsed_ms(b)?)),
        #[cfg(feature = "cuda")]
        _ => anyhow::bail!("phase marks of different kinds of device"),
    }
}
