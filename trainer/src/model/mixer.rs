//! The Mamba mixer (selective SSM block), mirroring `Mamba.forward` (parallel, training) and
//! `Mamba.step` (recurrent, generation) in state-spaces/mamba `mamba_ssm/modules/mamba_simple.py`,
//! parameter names as in HF transformers `MambaMixer` (`modeling_mamba.py`).

use candle_core::{Result, Tensor, D};
use candle_nn::VarBuilder;
use mamba_ops::backward::ScanSaved;

use super::config::MambaConfig;
use super::layers::{linear, softplus};

/// The parameters are the `Var`s' own tensors (the hand-written backward in `backward.rs` files
/// their gradients under them).
pub struct Mixer {
    pub(super) d_inner: usize,
    pub(super) d_state: usize,
    pub(super) dt_rank: usize,
    pub(super) in_proj: Tensor,     // (2·d_inner, d_model)
    pub(super) conv_weight: Tensor, // (d_inner, 1, d_conv), as in the checkpoint
    pub(super) conv_bias: Tensor,   // (d_inner,)
    pub(super) x_proj: Tensor,      // (dt_rank + 2·d_state, d_inner)
    pub(super) dt_proj_w: Tensor,   // (d_inner, dt_rank)
    pub(super) dt_proj_b: Tensor,   // (d_inner,)
    pub(super) a_log: Tensor,       // (d_inner, d_state)
    pub(super) d_skip: Tensor,      // (d_inner,)
    pub(super) out_proj: Tensor,    // (d_model, d_inner)
}

/// What the hand-written backward needs of one mixer's forward: its input, the activations the
/// matmuls and the mixer ops read, and the matmul weights in the compute dtype (the same tensors
/// candle's autograd graph would hold).
pub(super) struct MixerActs {
    pub x: Tensor,      // (b·l, d_model), the compute dtype
    pub xz: Tensor,     // (b·l, 2·di)
    pub xs: Tensor,     // (b·l, di), the conv's output
    pub x_dbl: Tensor,  // (b·l, r + 2n)
    pub dt_low: Tensor, // (b·l, r)
    pub dt: Tensor,     // (b·l, di), Δ before bias and softplus
    pub y: Tensor,      // (b·l, di), the scan's output
    /// What the scan's forward keeps for its backward (on the GPU its segment-start states;
    /// empty under autograd, which does not need it).
    pub scan: ScanSaved,
    /// in_proj, x_proj, dt_proj and out_proj's weights as the matmuls read them.
    pub w: [Tensor; 4],
}

/// Recurrent state of one mixer for generation: O(1) per token.
pub struct MixerState {
    /// The last d_conv inputs of the conv, newest last.
    pub conv: Tensor, // (b, d_inner, d_conv)
    /// The SSM hidden state h.
    pub ssm: Tensor, // (b, d_inner, d_state)
}

impl Mixer {
    pub fn new(cfg: &MambaConfig, vb: VarBuilder) -> Result<Mixer> {
        let (d, di, n, r, k) = (cfg.d_model, cfg.d_inner(), cfg.d_state, cfg.dt_rank(), cfg.d_conv);
        let conv_weight = vb.pp("conv1d").get((di, 1, k), "weight")?;
        Ok(Mixer {
            d_inner: di,
            d_state: n,
            dt_rank: r,
            in_proj: vb.pp("in_proj").get((2 * di, d), "weight")?,
            conv_weight,
            conv_bias: vb.pp("conv1d").get(di, "bias")?,
            x_proj: vb.pp("x_proj").get((r + 2 * n, di), "weight")?,
            dt_proj_w: vb.pp("dt_proj").get((di, r), "weight")?,
            dt_proj_b: vb.pp("dt_proj").get(di, "bias")?,
            a_log: vb.get((di, n), "A_log")?,
            d_skip: vb.get(di, "D")?,
            out_proj: vb.pp("out_proj").get((d, di), "weight")?,
        })
    }

    /// Parallel forward over whole sequences, given as rows: `x: (b·l, d_model)` holds `b`
    /// sequences of `seq_len` steps one after the other; returns `(b·l, d_model)` in the dtype of
    /// `x` (matmul weights are cast to it). The activations stay 2-D (no reshape nodes around the
    /// matmuls). The conv and the scan are the fused mixer ops, which read `xz` and `dt` where
    /// the matmuls left them, in that dtype (no narrow copies, no casts, no packing; see
    /// `mamba_ops::mixer_scan`).
    pub fn forward(&self, x: &Tensor, seq_len: usize) -> Result<Tensor> {
        Ok(self.forward_acts(x, seq_len, None)?.0)
    }

    /// in_proj, x_proj, dt_proj and out_proj's weights in `dtype`, without autograd history (the
    /// hand-written path casts them once per optimizer step: `MambaLM::compute_weights`).
    pub(super) fn matmul_weights(&self, dtype: candle_core::DType) -> Result<[Tensor; 4]> {
        let w = |t: &Tensor| t.detach().to_dtype(dtype);
        Ok([w(&self.in_proj)?, w(&self.x_proj)?, w(&self.dt_proj_w)?, w(&self.out_proj)?])
    }

    /// [`Mixer::forward`] with its activations. Given `weights` (its [`Mixer::matmul_weights`] in
    /// x's dtype) the parameters are read without autograd history, so no graph is recorded (the
    /// hand-written backward's forward); else the weights are cast here, under autograd.
    pub(super) fn forward_acts(&self, x: &Tensor, seq_len: usize, weights: Option<&[Tensor; 4]>) -> Result<(Tensor, MixerActs)> {
        let (n, r) = (self.d_state, self.dt_rank);
        let detached = weights.is_some();
        let p = |t: &Tensor| if detached { t.detach() } else { t.clone() };
        let [w_in, w_x, w_dt, w_out] = match weights {
            Some(w) => w.clone(),
            None => {
                let w = |t: &Tensor| t.to_dtype(x.dtype());
                [w(&self.in_proj)?, w(&self.x_proj)?, w(&self.dt_proj_w)?, w(&self.out_proj)?]
            }
        };
        let conv_w = p(&self.conv_weight).squeeze(1)?; // (di, k)
        let xz = linear(x, &w_in)?; // (b·l, 2·di) = [x | z]
        let xs = mamba_ops::mixer_conv_rows(&xz, seq_len, &conv_w, &p(&self.conv_bias))?; // (b·l, di)
        let x_dbl = linear(&xs, &w_x)?; // (b·l, r + 2n)
        let dt_low = x_dbl.narrow(D::Minus1, 0, r)?.contiguous()?; // (b·l, r)
        let b = x_dbl.narrow(D::Minus1, r, n)?; // (b·l, n)
        let c = x_dbl.narrow(D::Minus1, r + n, n)?; // (b·l, n)
        // Δ without its bias: the scan adds dt_proj.bias and applies softplus (delta_softplus=True).
        let dt = linear(&dt_low, &w_dt)?; // (b·l, di)
        // The scan reads z from xz. Under autograd it recomputes u = silu(conv(x)) from xz too (its
        // custom op takes three inputs, no room for xs); for the hand-written backward it reads
        // u = xs, as the reference kernel does.
        let (cb, a_log, d_skip, dt_b) = (p(&self.conv_bias), p(&self.a_log), p(&self.d_skip), p(&self.dt_proj_b));
        let (y, scan) = if detached {
            mamba_ops::mixer_scan_rows_u(&xz, &xs, seq_len, &dt, &b, &c, &conv_w, &cb, &a_log, &d_skip, &dt_b)?
        } else {
            (mamba_ops::mixer_scan_rows(&xz, seq_len, &dt, &b, &c, &conv_w, &cb, &a_log, &d_skip, &dt_b)?, ScanSaved::default())
        }; // (b·l, di)
        let out = linear(&y, &w_out)?; // (b·l, d_model)
        Ok((out, MixerActs { x: x.clone(), xz, xs, x_dbl, dt_low, dt, y, scan, w: [w_in, w_x, w_dt, w_out] }))
    }

    pub fn zero_state(&self, batch: usize) -> Result<MixerState> {
        let (dev, dtype) = (self.a_log.device(), self.a_log.dtype());
        Ok(MixerState {
            conv: Tensor::zeros((batch, self.d_inner, self.conv_weight.dim(2)?), dtype, dev)?,
            ssm: Tensor::zeros((batch, self.d_inner, self.d_state), dtype, dev)?,
        })
    }

    /// One recurrent step (`Mamba.step`): `(b, d_model)` → `(b, d_model)`, updating `state`.
    pub fn step(&self, x: &Tensor, state: &mut MixerState) -> Result<Tensor> {
        let (di, n, r) = (self.d_inner, self.d_state, self.dt_rank);
        let xz = linear(x, &self.in_proj)?; // (b, 2·di)
        let xs = xz.narrow(1, 0, di)?; // (b, di)
        let z = xz.narrow(1, di, di)?; // (b, di)
        // Causal conv: shift the window left, append x_t, dot with the kernel.
        let k = state.conv.dim(2)?;
        state.conv = Tensor::cat(&[&state.conv.narrow(2, 1, k - 1)?, &xs.unsqueeze(2)?], 2)?; // (b, di, k)
        let xs = state.conv.broadcast_mul(&self.conv_weight.squeeze(1)?)?.sum(2)?.broadcast_add(&self.conv_bias)?; // (b, di)
        let xs = candle_nn::ops::silu(&xs)?; // (b, di)
        let x_dbl = linear(&xs, &self.x_proj)?; // (b, r + 2n)
        let dt = linear(&x_dbl.narrow(1, 0, r)?, &self.dt_proj_w)?; // (b, di)
        let dt = softplus(&dt.broadcast_add(&self.dt_proj_b)?)?; // (b, di)
        let b = x_dbl.narrow(1, r, n)?; // (b, n)
        let c = x_dbl.narrow(1, r + n, n)?; // (b, n)
        let a = self.a_log.exp()?.neg()?; // (di, n)
        let da = dt.unsqueeze(2)?.broadcast_mul(&a)?.exp()?; // (b, di, n)
        let dbx = (&dt * &xs)?.unsqueeze(2)?.broadcast_mul(&b.unsqueeze(1)?)?; // (b, di, n)
        state.ssm = ((&state.ssm * da)? + dbx)?; // (b, di, n)
        let y = state.ssm.broadcast_mul(&c.unsqueeze(1)?)?.sum(2)?; // (b, di)
        let y = (y + xs.broadcast_mul(&self.d_skip)?)?; // (b, di)
        let y = (y * candle_nn::ops::silu(&z)?)?; // (b, di)
        linear(&y, &self.out_proj) // (b, d_model)
    }
}
