//! Helpers the ops share: CPU storage access, the compute types, argument checks, the CUDA launch
//! helpers and our PTX, and `pack` (several 2-D parts into one tensor in one launch; also public
//! as `concat_columns`).

pub(crate) mod cpu_storage;
#[cfg(feature = "cuda")]
pub(crate) mod cuda_util;
pub(crate) mod pack;
pub(crate) mod real;
pub(crate) mod shape_check;
