//! [`Comm`]: the collectives data-parallel training needs, and nothing more. One `Comm` belongs to
//! one rank (one thread driving one device); every rank of a group must call the same collectives
//! in the same order with tensors of the same shape and dtype, as with NCCL.
//!
//! Two implementations: [`LocalComm`](super::local::LocalComm) (in-process, CPU tensors, used by
//! the tests and by `--devices cpu,cpu`) and, behind the `nccl` feature,
//! `NcclComm` (`nccl.rs`, one GPU per rank).

use candle_core::Tensor;

/// Why a collective failed.
#[derive(Debug, thiserror::Error)]
pub enum CommError {
    /// Another rank gave up (its error is in `reason`); every later collective fails the same way,
    /// so no rank waits for ever on a partner that is gone.
    #[error("rank {rank}: the rank group was aborted: {reason}")]
    Aborted { rank: usize, reason: String },

    /// The ranks called different collectives, or with different shapes or dtypes.
    #[error("rank {rank}: collective mismatch: {what}")]
    Mismatch { rank: usize, what: String },

    #[error("rank {rank}: NCCL: {what}")]
    Nccl { rank: usize, what: String },

    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// One rank's handle on its group. Tensors live on the rank's own device.
pub trait Comm {
    /// This rank, `0..world_size()`.
    fn rank(&self) -> usize;

    /// Number of ranks in the group.
    fn world_size(&self) -> usize;

    /// The element-wise sum of `t` over all ranks (a new tensor, same shape and dtype as `t`).
    fn all_reduce_sum(&self, t: &Tensor) -> Result<Tensor, CommError>;

    /// Every rank's `t` (all of one shape), concatenated along dimension 0 in rank order:
    /// `(n, ...)` becomes `(world_size · n, ...)`.
    fn all_gather(&self, t: &Tensor) -> Result<Tensor, CommError>;

    /// Called by a rank that failed outside a collective (or in one), so that the others get
    /// [`CommError::Aborted`] instead of waiting for it. Idempotent.
    fn abort(&self, reason: &str);
}
