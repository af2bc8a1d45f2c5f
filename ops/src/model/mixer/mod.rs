//! The mixer's core as two ops that read the in_proj output `xz = [x | z]: (b, l, 2d)` where it
//! lies and in its own dtype (bf16 under mixed precision), so the model needs no narrow/contiguous
//! copies of `x` and `z`, no f32 casts around the ops and no packing of the scan's big inputs:
//!
//! - [`MixerConv`](conv): `xs = silu(conv1d(x) + bias)`, the input of x_proj;
//! - [`MixerScan`](scan): the selective scan with D skip and silu(z) gate, which recomputes its
//!   input `u = silu(conv1d(x) + bias)` from `xz` instead of taking `xs` (a `CustomOp3` has three
//!   inputs, and recomputing four multiply-adds per element is cheaper than storing and packing a
//!   `(b, l, d)` tensor).
//!
//! They compute exactly what the plain `reference::causal_conv1d_silu` and
//! `reference::selective_scan` compute from the narrowed halves (tests/mixer.rs checks the
//! identities in f64, forward and gradients). The CPU paths are the loops of `cpu/` (which those
//! two plain ops wrap too) applied to the unpacked halves; `cuda.rs` + `kernels/mixer_conv.cu`,
//! `kernels/mixer_scan.cu` (four or two states per thread, `scan_layout.rs`) fuse the conv into
//! the scan kernels and read and write bf16 or f32 directly.
//!
//! Dtypes: `xz` and `delta` are bf16, f32 or f64 (the same dtype, the "IO dtype"); the output and
//! their gradients have that dtype. Everything else (B, C and the per-channel parameters) goes in
//! a small packed tensor in the compute dtype, f32 (f64 when `xz` is f64):
//! `small = [bc (b, l, 2n) | p = [A_log | D | delta_bias] (d, n + 2) | conv_w (d, k) | conv_b (d)]`,
//! flattened. The arithmetic is always f32 (or f64), as in the other ops.

pub(crate) mod backward;
pub(crate) mod conv;
pub(crate) mod cpu;
#[cfg(feature = "cuda")]
mod cuda;
pub(crate) mod scan;
#[cfg(feature = "cuda")]
pub(crate) mod scan_layout;
pub(crate) mod tensors;

use crate::util::real::Real;
use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, DType, Layout, Result, Shape, Tensor};

/// Problem sizes: batch `b`, length `l`, channels `d` (half of xz's last dim), state size `n`,
/// conv width `k`; `flat`: the activations are given as `(b·l, width)` rows instead of
/// `(b, l, width)` (the same memory; the ops' outputs and gradients take the same form).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MixerDims {
    pub b: usize,
    pub l: usize,
    pub d: usize,
    pub n: usize,
    pub k: usize,
    pub flat: bool,
}

impl MixerDims {
    /// The shape of an activation with last dim `width`: `(b, l, width)` or `(b·l, width)`.
    pub(crate) fn act_shape(&self, width: usize) -> Shape {
        if self.flat {
            (self.b * self.l, width).into()
        } else {
            (self.b, self.l, width).into()
        }
    }

    fn conv(&self) -> cpu::conv::ConvDims {
        cpu::conv::ConvDims { b: self.b, l: self.l, d: self.d, k: self.k }
    }

    fn scan(&self) -> cpu::scan::ScanDims {
        cpu::scan::ScanDims { b: self.b, l: self.l, d: self.d, n: self.n }
    }

    /// Offsets into the packed small tensor: `[bc, p, conv_w, conv_b, end]`.
    pub(crate) fn small_offsets(&self) -> [usize; 5] {
        let bc = 0;
        let p = bc + self.b * self.l * 2 * self.n;
        let w = p + self.d * (self.n + 2);
        let cb = w + self.d * self.k;
        [bc, p, w, cb, cb + self.d]
    }
}

/// Checks `xz` against `weight: (d, k)` and returns the dims (state size `n` = 0): `xz` is
/// `(b, l, 2d)` with `seq_len` None, or `(b·l, 2d)` rows of sequences of `seq_len` steps.
fn xz_dims(op: &str, xz: &Tensor, seq_len: Option<usize>, conv_w: &Tensor) -> Result<MixerDims> {
    let (b, l, d2, flat) = match (xz.dims(), seq_len) {
        (&[b, l, d2], None) if d2 % 2 == 0 => (b, l, d2, false),
        (&[rows, d2], Some(l)) if d2 % 2 == 0 && l > 0 && rows % l == 0 => (rows / l, l, d2, true),
        (other, None) => bail!("{op}: `xz` must be (batch, len, 2·channels), got shape {other:?}"),
        (other, Some(l)) => {
            bail!("{op}: `xz` must be (batch·len, 2·channels) rows with len = {l}, got shape {other:?}")
        }
    };
    let d = d2 / 2;
    match conv_w.dims() {
        &[wd, k] if wd == d && k >= 1 => Ok(MixerDims { b, l, d, n: 0, k, flat }),
        other => bail!(
            "{op}: `conv_w` must be (channels={d}, kernel>=1) for xz of shape {:?}, got shape {other:?}",
            xz.dims()
        ),
    }
}

/// The gradient of the ops' output, `grad: (b, l, d)` or `(b·l, d)`, checked and made contiguous
/// in xz's dtype `io`.
pub(crate) fn output_grad(op: &str, dims: &MixerDims, grad: &Tensor, io: DType) -> Result<Tensor> {
    crate::util::shape_check::expect_shape(op, "grad", grad, dims.act_shape(dims.d).dims())?;
    grad.to_dtype(io)?.contiguous()
}

/// The IO dtype (of `xz`) and the compute dtype of the small tensors: f64 for f64, else f32.
fn dtypes(op: &str, xz: &Tensor) -> Result<(DType, DType)> {
    match xz.dtype() {
        DType::F64 => Ok((DType::F64, DType::F64)),
        dt @ (DType::F32 | DType::BF16) => Ok((dt, DType::F32)),
        other => bail!("{op}: `xz` must be bf16, f32 or f64, got {other:?}"),
    }
}

/// A contiguous CPU tensor argument in the compute type `C`, converted from bf16/f32/f64.
pub(crate) fn load<C: Real>(op: &str, what: &str, s: &CpuStorage, l: &Layout) -> Result<Vec<C>> {
    let Some((start, end)) = l.contiguous_offsets() else {
        bail!("{op}: internal error: input `{what}` is not contiguous (layout {l:?})")
    };
    let conv = |v: f64| C::from_f64(v);
    Ok(match s {
        CpuStorage::BF16(v) => v[start..end].iter().map(|x| conv(x.to_f64())).collect(),
        CpuStorage::F32(v) => v[start..end].iter().map(|&x| conv(f64::from(x))).collect(),
        CpuStorage::F64(v) => v[start..end].iter().map(|&x| conv(x)).collect(),
        other => bail!("{op}: internal error: `{what}` has dtype {:?}", other.dtype()),
    })
}

/// Compute-type values as CPU storage of `dtype` (bf16 rounds to nearest even).
pub(crate) fn store<C: Real>(op: &str, v: &[C], dtype: DType) -> Result<CpuStorage> {
    Ok(match dtype {
        DType::BF16 => CpuStorage::BF16(v.iter().map(|x| half::bf16::from_f64(x.to_f64())).collect()),
        DType::F32 => CpuStorage::F32(v.iter().map(|x| x.to_f64() as f32).collect()),
        DType::F64 => CpuStorage::F64(v.iter().map(|x| x.to_f64()).collect()),
        other => bail!("{op}: internal error: cannot store {other:?}"),
    })
}

/// Splits `xz: (b, l, 2d)` into its halves `x, z: (b, l, d)`.
fn split_xz<C: Copy>(xz: &[C], d: usize) -> (Vec<C>, Vec<C>) {
    let mut x = Vec::with_capacity(xz.len() / 2);
    let mut z = Vec::with_capacity(xz.len() / 2);
    for row in xz.chunks_exact(2 * d) {
        x.extend_from_slice(&row[..d]);
        z.extend_from_slice(&row[d..]);
    }
    (x, z)
}

/// Joins halves `x, z: (b, l, d)` into `(b, l, 2d)`.
fn join_xz<C: Copy>(x: &[C], z: &[C], d: usize) -> Vec<C> {
    let mut out = Vec::with_capacity(2 * x.len());
    for (xr, zr) in x.chunks_exact(d).zip(z.chunks_exact(d)) {
        out.extend_from_slice(xr);
        out.extend_from_slice(zr);
    }
    out
}
