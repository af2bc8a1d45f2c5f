//! The mixer ops' CPU arithmetic: the causal conv and the selective scan as plain loops over
//! `f32`/`f64` slices (rayon over batch × channel blocks, deterministic). The fused ops apply them
//! to the unpacked halves of `xz`; `crate::reference`'s plain ops wrap the same loops.

pub(crate) mod conv;
pub(crate) mod scan;
