//! Data-parallel training over several devices of one host (issue 6), see docs/multi-gpu.md.
//!
//! One process, one thread per rank: each rank owns a model replica and its optimizer on its
//! device; every optimizer step, the rank group ([`RankGroup`]) hands each rank its share of the
//! step's micro-batches, the ranks all-reduce their gradients ([`all_reduce_grads`]), clip by the
//! global norm, and take the same optimizer step, with Muon's Newton–Schulz split over the ranks
//! ([`muon_shard`], as in KellerJordan/modded-nanogpt). Rank 0 runs on the calling thread and is
//! the one the training loop logs, evaluates and checkpoints with.
//!
//! - [`Comm`] (`comm.rs`): the collectives; [`LocalComm`] (`local.rs`): in-process CPU ranks;
//!   `NcclComm` (`nccl.rs`, feature `nccl`): one GPU per rank through NCCL.
//! - [`Placement`] (`devices.rs`): `--devices`.
//! - `batch_share.rs`: which rank trains on which micro-batch.

pub mod batch_share;
pub mod comm;
pub mod devices;
pub mod grad_sync;
pub mod local;
pub mod muon_shard;
#[cfg(feature = "nccl")]
pub mod nccl;
pub mod rank_group;

pub use batch_share::share_batches;
pub use comm::{Comm, CommError};
pub use devices::{parse_devices, DevicesError, Placement};
pub use grad_sync::all_reduce_grads;
pub use local::LocalComm;
pub use rank_group::RankGroup;
