//! The Mamba mixer (selective SSM block), mirroring `Mamba.forward` (parallel, training) and
//! `Mamba.step` (recurrent, generation) in state-spaces/mamba `mamba_ssm/modules/mamba_simple.py`,
//! parameter names as in HF transformers `MambaMixer` (`modeling_mamba.py`).

use candle_core::{Result, Tensor, D};
use candle_nn::VarBuilder;
use mamba_ops::{ChannelParams, ScanTensors};

use super::config::MambaConfig;
use super::layers::{linear, softplus};

/// The parameters are the `Var`s' own tensors (the hand-written backward in `mixer_train.rs` files
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
    /// `x` (matmul weights are cast to it), under autograd. The activations stay 2-D (no reshape
    /// nodes around the matmuls). The conv and the scan are the fused mixer ops, which read `xz`
    /// and `dt` where the matmuls left them, in that dtype (no narrow copies, no casts, no
    /// packing; see `mamba_ops::mixer_scan`). The trainer's forward is
    /// [`Mixer::forward_saved`] (`mixer_train.rs`).
    pub fn forward(&self, x: &Tensor, seq_len: usize) -> Result<Tensor> {
        let w = |t: &Tensor| t.to_dtype(x.dtype());
        let [w_in, w_x, w_dt, w_out] = [w(&self.in_proj)?, w(&self.x_proj)?, w(&self.dt_proj_w)?, w(&self.out_proj)?];
        let (_, _, _, scan) = self.scan_inputs(x, seq_len, [&w_in, &w_x, &w_dt], self.channel_params()?)?;
        // The scan reads z from xz, and recomputes u = silu(conv(x)) from xz too (its custom op
        // takes three inputs, no room for xs).
        let y = mamba_ops::mixer_scan(&scan)?; // (b·l, di)
        linear(&y, &w_out) // (b·l, d_model)
    }

    /// The per-channel tensors as the mixer ops read them: the conv's weight `(di, k)`, its bias,
    /// A_log, D and dt_proj's bias.
    pub(super) fn channel_params(&self) -> Result<ChannelParams> {
        Ok(ChannelParams {
            conv_w: self.conv_weight.squeeze(1)?, // (di, k)
            conv_b: self.conv_bias.clone(),
            a_log: self.a_log.clone(),
            d_skip: self.d_skip.clone(),
            delta_bias: self.dt_proj_b.clone(),
        })
    }

    /// in_proj, the conv, x_proj and dt_proj on `x: (b·l, d_model)` with the matmul weights
    /// `[in_proj, x_proj, dt_proj]` in x's dtype: `(xs, x_dbl, dt_low, the scan's inputs)`.
    pub(super) fn scan_inputs(
        &self,
        x: &Tensor,
        seq_len: usize,
        [w_in, w_x, w_dt]: [&Tensor; 3],
        params: ChannelParams,
    ) -> Result<(Tensor, Tensor, Tensor, ScanTensors)> {
        let xz = linear(x, w_in)?; // (b·l, 2·di) = [x | z]
        let xs = mamba_ops::mixer_conv(&xz, Some(seq_len), &params.conv_w, &params.conv_b)?; // (b·l, di)
        let x_dbl = linear(&xs, w_x)?; // (b·l, r + 2n)
        let dt_low = x_dbl.narrow(D::Minus1, 0, self.dt_rank)?.contiguous()?; // (b·l, r)
        let scan = self.scan_tensors(xz, &x_dbl, Self::delta(&dt_low, w_dt)?, seq_len, params)?;
        Ok((xs, x_dbl, dt_low, scan))
    }

    /// Δ without its bias, `dt_low W_dtᵀ`: (b·l, r) → (b·l, di); the scan adds dt_proj.bias and
    /// applies softplus (delta_softplus=True). The hand-written backward recomputes Δ with this
    /// same call instead of keeping it (`mixer_train.rs`), so both get the same bits.
    pub(super) fn delta(dt_low: &Tensor, w_dt: &Tensor) -> Result<Tensor> {
        linear(dt_low, w_dt)
    }

    /// The scan's inputs from in_proj's output `xz`, x_proj's output `x_dbl = [dt_low | B | C]`
    /// (B and C are its column views) and dt_proj's output `delta`.
    pub(super) fn scan_tensors(
        &self,
        xz: Tensor,
        x_dbl: &Tensor,
        delta: Tensor,
        seq_len: usize,
        params: ChannelParams,
    ) -> Result<ScanTensors> {
        let (n, r) = (self.d_state, self.dt_rank);
        let b = x_dbl.narrow(D::Minus1, r, n)?; // (b·l, n)
        let c = x_dbl.narrow(D::Minus1, r + n, n)?; // (b·l, n)
        Ok(ScanTensors { xz, seq_len: Some(seq_len), delta, b, c, params })
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
