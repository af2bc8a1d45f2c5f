//! The parallel layer of data-parallel training (issue 6, see docs/multi-gpu.md): the
//! communicator between ranks and what is about devices and collectives, nothing about training.
//!
//! - [`Comm`] (`comm.rs`): the collectives; [`LocalComm`] (`local.rs`): in-process CPU ranks;
//!   `NcclComm` (`nccl.rs`, feature `nccl`): one GPU per rank through NCCL.
//! - [`Placement`] (`devices.rs`): `--devices`.
//! - [`all_reduce_grads`] (`grad_sync.rs`): the bucketed gradient all-reduce.
//!
//! Import rule: this module imports nothing from `train` or `optim`; they import from it. Who uses
//! it: the rank group and the batch sharing (`train/rank_group.rs`, `train/batch_share.rs`) and
//! Muon's sharded Newton–Schulz (`optim/muon_shard.rs`).

pub mod comm;
pub mod devices;
pub mod grad_sync;
pub mod local;
#[cfg(feature = "nccl")]
pub mod nccl;

pub use comm::{Comm, CommError};
pub use devices::{parse_devices, DevicesError, Placement};
pub use grad_sync::all_reduce_grads;
pub use local::LocalComm;
