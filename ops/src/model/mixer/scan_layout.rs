//! Which scan kernels run and how they are launched (`Layout` in `kernels/mixer_scan.cu`): the
//! padded state size NP and the states each thread holds, S = 4 or 2.
//!
//! With S = 4 a channel's 16 states sit on 4 lanes, 64 channels per block. The 130m model at
//! micro-batch 16 then launches 16 × 24 blocks of 256 threads, about one wave of the H200's
//! 132 SMs × 3 resident blocks; at micro-batch 8 it launches half a wave and the scan ran at 79%
//! (backward) and 86% (forward) of its micro-batch-16 time for half the work (docs/benchmarks.md,
//! eighth round). S = 2 puts a channel on 8 lanes, 32 channels per block: twice the threads for
//! the same batch. It is chosen when S = 4 would fill at most half of the GPU's resident block
//! slots; `MAMBA_SCAN_STATES_PER_THREAD=2|4` (or [`set_scan_states_per_thread`]) forces one.
//!
//! The forward's saved segment states are shaped `(b, n_seg, S, d, NP / S)`, as the kernels lay
//! them out, so the backward reads S from them instead of choosing again.

use super::MixerDims;
use candle_core::cuda_backend::cudarc::driver::sys::CUdevice_attribute;
use candle_core::cuda_backend::cudarc::driver::LaunchConfig;
use candle_core::cuda_backend::{CudaDevice, WrapErr};
use candle_core::{bail, Result, Shape};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Time steps per segment of the scan's backward, whose first states the forward (or pass 0)
/// saves (`BWD_SEG` in `kernels/mixer_scan_bwd.cuh`), and per chunk of its adjoint loop
/// (`BWD_CHUNK`; with S = 4 a chunk's states are recomputed from its first).
const BWD_SEG: usize = 16;
const BWD_CHUNK: usize = 4;
/// Time steps the backward's pass 0 stages at a time (`BWD_P0`).
const BWD_P0: usize = 32;
/// The scan backward's per-(step, channel) arrays in shared memory (`BwdSmem::N_CHAN`).
const BWD_CHAN_ARRAYS: usize = 9;
/// Threads per SM the kernels' launch bounds ask for (`__launch_bounds__` in `mixer_scan.cu`).
const THREADS_PER_SM: usize = 768;

/// The forced states per thread, 0 for chosen per launch; `usize::MAX` until first read from the
/// environment.
static FORCED_SPT: AtomicUsize = AtomicUsize::new(usize::MAX);

/// Forces the scan kernels' states per thread (2 or 4), or with `None` lets each launch choose
/// by occupancy (the default, unless `MAMBA_SCAN_STATES_PER_THREAD` is set). For benchmarks and
/// for tests that must cover both layouts; results agree to rounding either way.
pub fn set_scan_states_per_thread(spt: Option<usize>) -> Result<()> {
    FORCED_SPT.store(checked_spt(spt, "set_scan_states_per_thread")?, Ordering::Relaxed);
    Ok(())
}

fn checked_spt(spt: Option<usize>, source: &str) -> Result<usize> {
    match spt {
        None => Ok(0),
        Some(s @ (2 | 4)) => Ok(s),
        Some(other) => bail!("{source}: the scan kernels hold 2 or 4 states per thread, got {other}"),
    }
}

fn forced_spt() -> Result<usize> {
    let v = FORCED_SPT.load(Ordering::Relaxed);
    if v != usize::MAX {
        return Ok(v);
    }
    const VAR: &str = "MAMBA_SCAN_STATES_PER_THREAD";
    let from_env = match std::env::var(VAR) {
        Ok(s) => match s.trim().parse::<usize>() {
            Ok(n) => checked_spt(Some(n), VAR)?,
            Err(_) => bail!("{VAR}: expected 2 or 4, got {s:?}"),
        },
        Err(_) => 0,
    };
    // A concurrent `set_scan_states_per_thread` wins over the environment.
    let _ = FORCED_SPT.compare_exchange(usize::MAX, from_env, Ordering::Relaxed, Ordering::Relaxed);
    Ok(FORCED_SPT.load(Ordering::Relaxed))
}

/// The scan kernels for one launch: padded state size `np` (4, 8, 16 or 32) and states per
/// thread `spt` (4 or 2).
pub(crate) struct ScanKernels {
    np: usize,
    spt: usize,
}

fn padded(op: &str, n: usize) -> Result<usize> {
    Ok(match n {
        1..=4 => 4,
        5..=8 => 8,
        9..=16 => 16,
        17..=32 => 32,
        _ => bail!("{op}: the CUDA kernels support state sizes 1..=32, got {n}"),
    })
}

impl ScanKernels {
    /// The layout for a fresh forward (or the op's self-contained backward): forced, or S = 2
    /// when the S = 4 grid would fill at most half of the resident block slots.
    pub(crate) fn choose(op: &str, dims: &MixerDims, dev: &CudaDevice) -> Result<Self> {
        let np = padded(op, dims.n)?;
        let spt = match forced_spt()? {
            0 => {
                let sms = dev
                    .cuda_stream()
                    .context()
                    .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
                    .w()? as usize;
                let narrow = ScanKernels { np, spt: 4 };
                let slots = sms * (THREADS_PER_SM / narrow.threads()).max(1);
                if 2 * narrow.blocks(dims) <= slots {
                    2
                } else {
                    4
                }
            }
            s => s,
        };
        Ok(ScanKernels { np, spt })
    }

    /// The layout the forward used, read from its saved states' shape `(b, n_seg, S, d, NP / S)`.
    pub(crate) fn of_states(op: &str, dims: &MixerDims, states: &Shape) -> Result<Self> {
        let np = padded(op, dims.n)?;
        for spt in [4, 2] {
            let k = ScanKernels { np, spt };
            if states == &k.states_shape(dims) {
                return Ok(k);
            }
        }
        bail!("{op}: saved states of shape {states:?} do not fit this scan ({dims:?}): pass the forward's own")
    }

    /// Channels per block (`Layout::CH`).
    fn channels(&self) -> usize {
        16 * self.spt
    }

    fn threads(&self) -> usize {
        self.channels() * (self.np / self.spt)
    }

    fn blocks(&self, dims: &MixerDims) -> usize {
        dims.b * dims.d.div_ceil(self.channels())
    }

    /// Bytes of dynamic shared memory the backward kernel needs (`BwdSmem::FLOATS` in
    /// `kernels/mixer_scan_bwd.cuh`, which traps when given less): per segment the staged
    /// per-(step, channel) arrays, B | C, every thread's states (S = 2: before every step and after
    /// the last; S = 4: at chunk starts) and the per-warp dB | dC sums; pass 0's staging uses the
    /// same memory before. 70 KiB for the 130m model (n = 16) either way.
    pub(crate) fn bwd_shared_bytes(&self) -> usize {
        let (np, ch) = (self.np, self.channels());
        let warps = self.threads() / 32;
        let slots = if self.spt == 2 { BWD_SEG + 1 } else { BWD_SEG / BWD_CHUNK };
        let segment = BWD_CHAN_ARRAYS * BWD_SEG * ch + BWD_SEG * 2 * np + slots * np * ch + BWD_SEG * warps * 2 * np;
        let pass0 = 2 * BWD_P0 * ch + BWD_P0 * np;
        4 * segment.max(pass0)
    }

    /// The states at every backward segment start, `(b, n_seg, S, d, NP / S)`.
    pub(crate) fn states_shape(&self, dims: &MixerDims) -> Shape {
        (dims.b, dims.l.div_ceil(BWD_SEG), self.spt, dims.d, self.np / self.spt).into()
    }

    pub(crate) fn name(&self, pass: &str, suffix: &str) -> String {
        format!("mixer_scan_{pass}_{suffix}_n{}_s{}", self.np, self.spt)
    }

    /// Blocks over (channel groups, batch); the forward's shared memory is static (< 48 KiB for
    /// every instantiation), the backward sets its dynamic size (`bwd_shared_bytes`).
    pub(crate) fn launch(&self, dims: &MixerDims) -> LaunchConfig {
        LaunchConfig {
            grid_dim: (dims.d.div_ceil(self.channels()) as u32, dims.b as u32, 1),
            block_dim: (self.threads() as u32, 1, 1),
            shared_mem_bytes: 0,
        }
    }
}
