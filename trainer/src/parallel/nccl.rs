//! [`NcclComm`]: the collectives of [`Comm`] between GPUs through NCCL (cudarc's bindings, as
//! re-exported by candle-core's `nccl` feature). One communicator per rank, created in the rank's
//! own thread with `ncclCommInitRank` from one shared [`NcclId`] (all ranks at the same time:
//! the call returns once every rank has joined). Collectives are enqueued on the rank's CUDA
//! stream, the one all of the rank's candle work runs on, so no extra synchronisation is needed.
//!
//! NVLink SHARP / multicast (NVLS) is switched off through `NCCL_NVLS_ENABLE=0` before the first
//! communicator exists, unless the user set the variable (`devices::nvls_default`).

use std::cell::RefCell;

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{DeviceRepr, ValidAsZeroBits};
use candle_core::cuda_backend::cudarc::nccl::safe::{Comm as Nccl, Id, NcclType, ReduceOp};
use candle_core::cuda_backend::CudaDType;
use candle_core::{CpuStorage, CudaStorage, CustomOp1, DType, Device, Layout, Shape, Tensor};

use super::comm::{Comm, CommError};

/// The unique id every rank's communicator is created from (made once, copied to each rank).
#[derive(Clone, Copy)]
pub struct NcclId(Id);

impl NcclId {
    pub fn new() -> Result<NcclId, CommError> {
        Id::new()
            .map(NcclId)
            .map_err(|e| CommError::Nccl { rank: 0, what: format!("ncclGetUniqueId failed: {:?}", e.0) })
    }
}

pub struct NcclComm {
    comm: Nccl,
    /// Set by `abort`: later calls fail at once instead of enqueuing work peers will never match.
    aborted: RefCell<Option<String>>,
}

impl NcclComm {
    /// Joins the group as `rank` of `world` on `device` (a CUDA device; its stream is used).
    pub fn connect(rank: usize, world: usize, id: NcclId, device: &Device) -> Result<NcclComm, CommError> {
        let Device::Cuda(cuda) = device else {
            return Err(CommError::Mismatch { rank, what: "an NCCL rank needs a CUDA device".into() });
        };
        // ncclCommInitRank takes the rank's GPU from the thread's current CUDA context.
        let stream = cuda.cuda_stream();
        stream
            .context()
            .bind_to_thread()
            .map_err(|e| CommError::Nccl { rank, what: format!("binding GPU {}: {e}", stream.context().ordinal()) })?;
        let comm = Nccl::from_rank(stream, rank, world, id.0)
            .map_err(|e| CommError::Nccl { rank, what: format!("ncclCommInitRank failed: {:?}", e.0) })?;
        Ok(NcclComm { comm, aborted: RefCell::new(None) })
    }

    fn check(&self) -> Result<(), CommError> {
        match &*self.aborted.borrow() {
            Some(reason) => Err(CommError::Aborted { rank: self.comm.rank(), reason: reason.clone() }),
            None => Ok(()),
        }
    }
}

impl Comm for NcclComm {
    fn rank(&self) -> usize {
        self.comm.rank()
    }

    fn world_size(&self) -> usize {
        self.comm.world_size()
    }

    fn all_reduce_sum(&self, t: &Tensor) -> Result<Tensor, CommError> {
        self.check()?;
        Ok(t.contiguous()?.apply_op1_no_bwd(&Collective { comm: &self.comm, kind: Kind::AllReduceSum })?)
    }

    fn all_gather(&self, t: &Tensor) -> Result<Tensor, CommError> {
        self.check()?;
        if t.rank() == 0 {
            return Err(CommError::Mismatch {
                rank: self.rank(),
                what: "all_gather needs a tensor of rank >= 1".into(),
            });
        }
        Ok(t.contiguous()?.apply_op1_no_bwd(&Collective { comm: &self.comm, kind: Kind::AllGather })?)
    }

    /// NCCL cannot release peers already waiting on the GPU for this rank's data: a rank failing
    /// in the middle of a step leaves them blocked, and the trainer exits with the error (the
    /// process ends every rank thread). This only makes later calls on this rank fail fast.
    fn abort(&self, reason: &str) {
        tracing::error!("rank {}: aborting the NCCL group: {reason}", self.comm.rank());
        self.aborted.borrow_mut().get_or_insert_with(|| reason.to_string());
    }
}

#[derive(Clone, Copy)]
enum Kind {
    AllReduceSum,
    AllGather,
}

/// One collective as a candle op on the tensor's CUDA storage (a new output buffer).
struct Collective<'a> {
    comm: &'a Nccl,
    kind: Kind,
}

impl Collective<'_> {
    fn run<T: CudaDType + NcclType + DeviceRepr + ValidAsZeroBits>(
        &self,
        s: &CudaStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        let (start, end) = layout
            .contiguous_offsets()
            .ok_or_else(|| candle_core::Error::Msg("NCCL collective on a non-contiguous tensor".into()))?;
        let src = s.as_cuda_slice::<T>()?.slice(start..end);
        let world = self.comm.world_size();
        let (out_len, shape) = match self.kind {
            Kind::AllReduceSum => (end - start, layout.shape().clone()),
            Kind::AllGather => {
                let mut dims = layout.dims().to_vec();
                dims[0] *= world;
                ((end - start) * world, Shape::from(dims))
            }
        };
        let mut dst = s.device.alloc_zeros::<T>(out_len)?;
        let status = match self.kind {
            Kind::AllReduceSum => self.comm.all_reduce(&src, &mut dst, &ReduceOp::Sum),
            Kind::AllGather => self.comm.all_gather(&src, &mut dst),
        };
        status.map_err(|e| candle_core::Error::Msg(format!("NCCL rank {}: {:?}", self.comm.rank(), e.0)))?;
        Ok((CudaStorage::wrap_cuda_slice(dst, s.device.clone()), shape))
    }
}

impl CustomOp1 for Collective<'_> {
    fn name(&self) -> &'static str {
        match self.kind {
            Kind::AllReduceSum => "nccl-all-reduce-sum",
            Kind::AllGather => "nccl-all-gather",
        }
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        candle_core::bail!("{}: NCCL needs CUDA tensors", self.name())
    }

    fn cuda_fwd(&self, s: &CudaStorage, layout: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
        match s.dtype() {
            DType::F32 => self.run::<f32>(s, layout),
            DType::BF16 => self.run::<half::bf16>(s, layout),
            DType::F64 => self.run::<f64>(s, layout),
            other => candle_core::bail!("{}: dtype {other:?} not supported (f32, bf16, f64)", self.name()),
        }
    }
}
