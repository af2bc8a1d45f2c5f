//! Muon: momentum, orthogonalized by Newton–Schulz, for the 2-D hidden matrices.
//!
//! Per parameter W (r, c) with gradient G, at learning rate lr and weight decay wd:
//!   M ← β M + G                                  (momentum buffer, f32, β = 0.95)
//!   U ← G + β M  (Nesterov)   or   U ← M
//!   O ← NewtonSchulz(U)                           (batched per shape, see newton_schulz.rs)
//!   W ← W (1 − lr·wd) − lr · 0.2·sqrt(max(r, c)) · O
//! Momentum and Nesterov as in K. Jordan's Muon; the 0.2·sqrt(max(r, c)) factor is from Liu et al.
//! (Moonshot), "Muon is Scalable for LLM Training" (2025), §2.2: O has RMS ≈ 1/sqrt(max(r, c)), so
//! the update's RMS becomes ≈ 0.2, the typical RMS of an AdamW update, and a learning rate means
//! the same for both groups. The weight decay is decoupled (also from that paper).
//!
//! Matrices of one shape are updated together on stacked (k, r, c) tensors (their momentum and
//! look-ahead U are kept stacked, and updated in place): on a GPU the step is then a few dozen
//! launches per shape, not a dozen per matrix. The elementwise work around Newton–Schulz is two
//! fused ops of `mamba_ops`: `muon_momentum` (M, and U in the NS dtype, reading each gradient
//! where it is) and `muon_apply_many` (the decayed W minus the scaled O, on each weight in
//! place); U's normalization is folded into Newton–Schulz's first iteration. On an H200 the first
//! fusions took Muon from 16.2 to 10.7 ms per step for the 130m model (docs/benchmarks.md).
//! Checkpoints still hold one momentum tensor per parameter.

use super::error::{OptimError, Result};
use super::muon_shard::orthogonalize_sharded;
use super::newton_schulz::newton_schulz_batched;
use crate::parallel::{Comm, CommError};
use candle_core::{DType, Tensor, Var};
use std::collections::HashMap;

/// The RMS-matching factor 0.2·sqrt(max(rows, cols)) of a Muon update.
pub fn update_scale(rows: usize, cols: usize) -> f64 {
    0.2 * (rows.max(cols) as f64).sqrt()
}

/// One matrix under Muon.
struct MuonParam {
    name: String,
    var: Var,
}

/// The matrices of one shape, updated together: momentum, Newton–Schulz and the weight update run
/// on stacked (k, r, c) tensors, so a step costs a few launches per shape plus one gather and one
/// write-back per matrix, instead of a dozen small launches per matrix.
struct ShapeGroup {
    shape: (usize, usize),
    /// Indices into `Muon::params`, in order of first appearance.
    members: Vec<usize>,
    /// Momentum buffers of the members, stacked: (k, r, c), f32, on the parameters' device;
    /// updated in place.
    momentum: Tensor,
    /// The look-ahead U of the last step (k, r, c), in the Newton–Schulz dtype: scratch the
    /// momentum op writes.
    lookahead: Tensor,
}

/// The Muon group: its parameters and their momentum buffers, orthogonalized per shape.
pub struct Muon {
    params: Vec<MuonParam>,
    groups: Vec<ShapeGroup>,
    beta: f64,
    nesterov: bool,
    ns_steps: usize,
    ns_dtype: DType,
}

/// A failed collective, as an optimizer error (candle errors pass through unchanged).
pub(crate) fn comm_error(e: CommError) -> OptimError {
    match e {
        CommError::Candle(e) => OptimError::Candle(e),
        other => OptimError::Candle(candle_core::Error::wrap(other)),
    }
}

/// Checkpoint name of a parameter's momentum buffer.
pub fn momentum_state_name(param: &str) -> String {
    format!("muon.momentum.{param}")
}

impl Muon {
    /// A Muon group over 2-D `params` with momentum `beta`. Newton–Schulz runs `ns_steps`
    /// iterations in f32 (see [`Muon::set_ns_dtype`]).
    pub fn new(params: Vec<(String, Var)>, beta: f64, nesterov: bool, ns_steps: usize) -> Result<Self> {
        let mut out = Vec::with_capacity(params.len());
        let mut shapes: Vec<((usize, usize), Vec<usize>)> = Vec::new();
        for (i, (name, var)) in params.into_iter().enumerate() {
            let shape = var.dims().to_vec();
            let (r, c) = match shape[..] {
                [r, c] => (r, c),
                _ => return Err(OptimError::BadParameterShape { name, shape, expected: "a 2-D matrix (Muon)" }),
            };
            match shapes.iter_mut().find(|(s, _)| *s == (r, c)) {
                Some((_, members)) => members.push(i),
                None => shapes.push(((r, c), vec![i])),
            }
            out.push(MuonParam { name, var });
        }
        let groups = shapes
            .into_iter()
            .map(|((r, c), members)| {
                let device = out[members[0]].var.device().clone();
                let momentum = Tensor::zeros((members.len(), r, c), DType::F32, &device)?;
                let lookahead = momentum.zeros_like()?;
                Ok(ShapeGroup { shape: (r, c), members, momentum, lookahead })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { params: out, groups, beta, nesterov, ns_steps, ns_dtype: DType::F32 })
    }

    /// The dtype Newton–Schulz computes in: f32 (default, CPU) or bf16 (CUDA).
    pub fn set_ns_dtype(&mut self, dtype: DType) -> Result<()> {
        for g in &mut self.groups {
            g.lookahead = g.lookahead.to_dtype(dtype)?;
        }
        self.ns_dtype = dtype;
        Ok(())
    }

    /// Number of matrices and of scalar parameters.
    pub fn counts(&self) -> (usize, usize) {
        (self.params.len(), self.params.iter().map(|p| p.var.elem_count()).sum())
    }

    /// "24×(3072, 768), 24×(80, 1536)": the batches Newton–Schulz runs on.
    pub fn shapes_summary(&self) -> String {
        let parts: Vec<String> =
            self.groups.iter().map(|g| format!("{}×({}, {})", g.members.len(), g.shape.0, g.shape.1)).collect();
        parts.join(", ")
    }

    /// One update of every parameter; `grads[i]` belongs to the i-th parameter given to `new`.
    pub fn step(&mut self, grads: &[Tensor], lr: f64, weight_decay: f64) -> Result<()> {
        self.step_with(grads, lr, weight_decay, None)
    }

    /// [`Muon::step`] on one rank of a data-parallel group (`comm` with more than one rank):
    /// every rank keeps the momentum of every matrix, but orthogonalizes only its share of each
    /// shape group and all-gathers the rest, as modded-nanogpt does
    /// (`optim::muon_shard`). The gradients must already be identical on all ranks.
    pub fn step_with(&mut self, grads: &[Tensor], lr: f64, weight_decay: f64, comm: Option<&dyn Comm>) -> Result<()> {
        if grads.len() != self.params.len() {
            return Err(OptimError::GradCountMismatch { expected: self.params.len(), got: grads.len() });
        }
        for group in &mut self.groups {
            let (r, c) = group.shape;
            // Momentum in f32 and the Nesterov look-ahead in the NS dtype, all matrices of the
            // shape at once: m ← βm + g and g + βm, in place on the group's stacks, each gradient
            // read where it is: one fused op (mamba_ops::muon_momentum).
            let g: Vec<Tensor> = group
                .members
                .iter()
                .map(|&i| grads[i].to_dtype(DType::F32)?.contiguous())
                .collect::<candle_core::Result<_>>()?;
            mamba_ops::muon_momentum(&group.momentum, &group.lookahead, &g, self.beta, self.nesterov)?;
            // One batched Newton–Schulz chain for all matrices of this shape, which also divides
            // each look-ahead by its Frobenius norm.
            let u = &group.lookahead; // (k, r, c)
            let ortho = match comm.filter(|c| c.world_size() > 1) {
                // Each rank its share of the matrices, then all-gathered (see optim::muon_shard).
                Some(comm) => orthogonalize_sharded(u, self.ns_steps, comm).map_err(comm_error)?,
                None => newton_schulz_batched(u, self.ns_steps)?,
            }; // (k, r, c), in the NS dtype
               // Decoupled weight decay and the scaled orthogonal step (one fused op): f32 weights
               // in place (mamba_ops::muon_apply_many), others through an f32 copy.
            let (decay, scale) = (1.0 - lr * weight_decay, lr * update_scale(r, c));
            let vars: Vec<&Var> = group.members.iter().map(|&i| &self.params[i].var).collect();
            if vars.iter().all(|v| v.dtype() == DType::F32 && v.as_tensor().is_contiguous()) {
                // All of the group in one op (one launch on the GPU), each weight where it is.
                let ws: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
                mamba_ops::muon_apply_many(&ws, &ortho, decay, scale)?;
                continue;
            }
            for (j, var) in vars.into_iter().enumerate() {
                let o = ortho.get(j)?.unsqueeze(0)?; // (1, r, c)
                let w = var.as_tensor().to_dtype(DType::F32)?.unsqueeze(0)?; // (1, r, c)
                let w = mamba_ops::muon_apply(&w, &o, decay, scale)?.squeeze(0)?;
                var.set(&w.to_dtype(var.dtype())?)?;
            }
        }
        Ok(())
    }

    /// The (group, position in the group) of every parameter, in parameter order.
    fn slots(&self) -> Vec<(usize, usize)> {
        super::state::member_slots(self.groups.iter().map(|g| g.members.as_slice()), self.params.len())
    }

    /// (name, tensor) of every state tensor, in parameter order: host copies, one at a time
    /// (`state::host_copy`; later steps update the momentum in place).
    pub fn state_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        self.slots()
            .into_iter()
            .zip(&self.params)
            .map(|((gi, j), p)| {
                Ok((momentum_state_name(&p.name), super::state::host_copy(&self.groups[gi].momentum.get(j)?)?))
            })
            .collect()
    }

    /// The names [`Muon::state_tensors`] returns, without copying anything.
    pub fn state_names(&self) -> Vec<String> {
        self.params.iter().map(|p| momentum_state_name(&p.name)).collect()
    }

    /// The momentum buffers read from `state` (f32, on the parameters' devices), checked for
    /// presence and shape; nothing is changed until [`Muon::set_state`].
    pub fn read_state(&self, state: &HashMap<String, Tensor>) -> Result<Vec<Tensor>> {
        self.params
            .iter()
            .map(|p| super::state::read_state_tensor(state, &momentum_state_name(&p.name), &p.var))
            .collect()
    }

    /// Installs buffers returned by [`Muon::read_state`] (one per parameter, in parameter order);
    /// on an error nothing is changed.
    pub fn set_state(&mut self, momenta: Vec<Tensor>) -> Result<()> {
        let stacked = self
            .groups
            .iter()
            .map(|g| Tensor::stack(&g.members.iter().map(|&i| &momenta[i]).collect::<Vec<_>>(), 0))
            .collect::<candle_core::Result<Vec<_>>>()?;
        for (g, m) in self.groups.iter_mut().zip(stacked) {
            g.momentum = m; // (k, r, c)
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::testutil::{newton_schulz_f64, randn, Mat};
    use super::*;

    fn var(shape: &[usize], seed: u64) -> Var {
        Var::from_tensor(&randn(shape, seed)).unwrap()
    }

    #[test]
    fn two_steps_match_f64_reference() {
        let shapes = [(32usize, 16usize), (16, 32), (32, 16)]; // two of one shape: one batch
        let params: Vec<(String, Var)> =
            shapes.iter().enumerate().map(|(i, &(r, c))| (format!("p{i}"), var(&[r, c], i as u64))).collect();
        let p0: Vec<Mat> = params.iter().map(|(_, v)| Mat::from_tensor(v.as_tensor())).collect();
        let mut muon = Muon::new(params.clone(), 0.95, true, 5).unwrap();
        assert_eq!(muon.shapes_summary(), "2×(32, 16), 1×(16, 32)");
        let (lr, wd, beta) = (0.02, 0.1, 0.95);
        let g1: Vec<Tensor> = shapes.iter().enumerate().map(|(i, &(r, c))| randn(&[r, c], 100 + i as u64)).collect();
        let g2: Vec<Tensor> = shapes.iter().enumerate().map(|(i, &(r, c))| randn(&[r, c], 200 + i as u64)).collect();
        muon.step(&g1, lr, wd).unwrap();
        muon.step(&g2, lr, wd).unwrap();
        for (i, &(r, c)) in shapes.iter().enumerate() {
            // Reference in f64: m1 = g1, u1 = g1 + β m1; m2 = β m1 + g2, u2 = g2 + β m2.
            let (a, b) = (Mat::from_tensor(&g1[i]), Mat::from_tensor(&g2[i]));
            let u1 = a.axpby(1.0 + beta, &a, 0.0);
            let m2 = a.axpby(beta, &b, 1.0);
            let u2 = b.axpby(1.0, &m2, beta);
            let s = lr * 0.2 * (r.max(c) as f64).sqrt();
            let w1 = p0[i].axpby(1.0 - lr * wd, &newton_schulz_f64(&u1, 5), -s);
            let w2 = w1.axpby(1.0 - lr * wd, &newton_schulz_f64(&u2, 5), -s);
            let got = Mat::from_tensor(params[i].1.as_tensor());
            let err = got.data.iter().zip(&w2.data).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max);
            assert!(err < 1e-5, "param {i}: {err}");
        }
    }

    #[test]
    fn update_rms_matches_adamw_scale() {
        // From W = 0 with lr 1 and no decay, W after one step is -0.2·sqrt(max(r,c))·O. A
        // semi-orthogonal (r, c) matrix has RMS exactly 1/sqrt(max(r, c)) and NS leaves singular
        // values in about [0.7, 1.2], so the update RMS must be 0.2 within that band.
        for (i, &(r, c)) in [(64usize, 32usize), (32, 64), (48, 48), (10, 96)].iter().enumerate() {
            let v = Var::zeros((r, c), DType::F32, &candle_core::Device::Cpu).unwrap();
            let mut muon = Muon::new(vec![("w".into(), v.clone())], 0.95, true, 5).unwrap();
            muon.step(&[randn(&[r, c], 300 + i as u64)], 1.0, 0.0).unwrap();
            let rms = v.as_tensor().sqr().unwrap().mean_all().unwrap().to_scalar::<f32>().unwrap().sqrt();
            assert!((0.2 * 0.7..=0.2 * 1.2).contains(&(rms as f64)), "({r},{c}): rms {rms}");
        }
    }

    #[test]
    fn plain_momentum_without_nesterov() {
        let v = var(&[8, 12], 1);
        let w0 = Mat::from_tensor(v.as_tensor());
        let mut muon = Muon::new(vec![("w".into(), v.clone())], 0.9, false, 5).unwrap();
        let (g1, g2) = (randn(&[8, 12], 2), randn(&[8, 12], 3));
        muon.step(std::slice::from_ref(&g1), 0.01, 0.0).unwrap();
        muon.step(std::slice::from_ref(&g2), 0.01, 0.0).unwrap();
        let (a, b) = (Mat::from_tensor(&g1), Mat::from_tensor(&g2));
        let s = 0.01 * 0.2 * 12f64.sqrt();
        let w1 = w0.axpby(1.0, &newton_schulz_f64(&a, 5), -s);
        let w2 = w1.axpby(1.0, &newton_schulz_f64(&a.axpby(0.9, &b, 1.0), 5), -s);
        let got = Mat::from_tensor(v.as_tensor());
        let err = got.data.iter().zip(&w2.data).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max);
        assert!(err < 1e-5, "{err}");
    }

    #[test]
    fn rejects_non_matrices_and_wrong_grad_count() {
        let err = Muon::new(vec![("v".into(), var(&[4], 0))], 0.95, true, 5).err().unwrap();
        assert!(matches!(err, OptimError::BadParameterShape { .. }), "{err}");
        let mut muon = Muon::new(vec![("w".into(), var(&[4, 4], 0))], 0.95, true, 5).unwrap();
        assert!(muon.step(&[], 0.1, 0.0).is_err());
    }

    /// One full Muon step (momentum, batched NS, update) over the 72 matrices of the 130m model:
    /// `cargo test -p mamba-trainer --release --lib optim -- --ignored --nocapture`.
    #[test]
    #[ignore = "benchmark: prints timings"]
    fn bench_muon_step_130m() {
        let shapes = [(3072usize, 768usize), (80, 1536), (768, 1536)];
        let params: Vec<(String, Var)> = (0..24)
            .flat_map(|l| shapes.iter().enumerate().map(move |(j, &(r, c))| (l, j, r, c)))
            .map(|(l, j, r, c)| {
                (format!("l{l}.{j}"), Var::zeros((r, c), DType::F32, &candle_core::Device::Cpu).unwrap())
            })
            .collect();
        let grads: Vec<Tensor> = params.iter().enumerate().map(|(i, (_, v))| randn(v.dims(), i as u64)).collect();
        let mut muon = Muon::new(params, 0.95, true, 5).unwrap();
        let t0 = std::time::Instant::now();
        muon.step(&grads, 1e-3, 0.01).unwrap();
        println!(
            "Muon step, 130m (72 matrices: {}), f32 CPU: {:.1} ms",
            muon.shapes_summary(),
            t0.elapsed().as_secs_f64() * 1e3
        );
    }
}
