//! One mixer's training path side by side, as llm.c keeps a layer's forward and backward
//! together: the forward without autograd history that saves its activations
//! ([`Mixer::forward_saved`], [`MixerActs`]), and the hand-written backward that reads them
//! ([`Mixer::backward`]). `backward.rs` runs them for the whole model; [`Mixer::forward`]
//! (`mixer.rs`) is the same computation under autograd, the reference the tests compare with.

use candle_core::{DType, Result, Tensor};
use mamba_ops::backward::ScanSaved;
use mamba_ops::ChannelParams;

use super::backward::linear_backward;
use super::layers::linear;
use super::mixer::Mixer;

/// What the hand-written backward needs of one mixer's forward: its input, the activations the
/// matmuls and the mixer ops read, and the matmul weights in the compute dtype (the tensors
/// candle's autograd graph would hold, but Δ).
///
/// Δ = dt_low W_dtᵀ, (b·l, di), is not kept: the backward recomputes it with the same matmul
/// (bitwise the forward's), which costs 2·r·di FLOPs per token (r = 48 at 130m) and saves
/// di values per token and layer, 1.1 GiB at the 130m model's micro-batch 16 in bf16.
pub(super) struct MixerActs {
    pub x: Tensor,      // (b·l, d_model), the compute dtype
    pub xz: Tensor,     // (b·l, 2·di), in_proj's output [x | z]
    pub xs: Tensor,     // (b·l, di), the conv's output
    pub x_dbl: Tensor,  // (b·l, r + 2n) = [dt_low | B | C]
    pub dt_low: Tensor, // (b·l, r)
    pub y: Tensor,      // (b·l, di), the scan's output
    pub seq_len: usize,
    /// The per-channel parameters, without autograd history.
    pub params: ChannelParams,
    /// What the scan's forward keeps for its backward (on the GPU its segment-start states).
    pub saved: ScanSaved,
    /// in_proj, x_proj, dt_proj and out_proj's weights as the matmuls read them.
    pub w: [Tensor; 4],
}

impl Mixer {
    /// in_proj, x_proj, dt_proj and out_proj's weights in `dtype`, without autograd history (the
    /// hand-written path casts them once per optimizer step: `MambaLM::compute_weights`).
    pub(super) fn matmul_weights(&self, dtype: DType) -> Result<[Tensor; 4]> {
        let w = |t: &Tensor| t.detach().to_dtype(dtype);
        Ok([w(&self.in_proj)?, w(&self.x_proj)?, w(&self.dt_proj_w)?, w(&self.out_proj)?])
    }

    /// [`Mixer::forward`] without autograd history, with its activations: `weights` are its
    /// [`Mixer::matmul_weights`] in x's dtype, the other parameters are read detached. The scan
    /// reads u = xs (the conv's output, which x_proj's backward keeps anyway), as the reference
    /// kernel does, instead of recomputing the conv.
    pub(super) fn forward_saved(
        &self,
        x: &Tensor,
        seq_len: usize,
        weights: &[Tensor; 4],
    ) -> Result<(Tensor, MixerActs)> {
        let [w_in, w_x, w_dt, w_out] = weights;
        let (xs, x_dbl, dt_low, scan) =
            self.scan_inputs(x, seq_len, [w_in, w_x, w_dt], self.channel_params()?.detach())?;
        let (y, saved) = mamba_ops::mixer_scan_saving(&scan, &xs)?; // (b·l, di)
        let out = linear(&y, w_out)?; // (b·l, d_model)
        let (xz, params) = (scan.xz, scan.params); // Δ (scan.delta) is dropped here
        let acts = MixerActs { x: x.clone(), xz, xs, x_dbl, dt_low, y, seq_len, params, saved, w: weights.clone() };
        Ok((out, acts))
    }

    /// The backward of [`Mixer::forward_saved`] for its output's gradient `dout: (b·l, d_model)`:
    /// files each parameter's gradient with `put` and returns the input's gradient.
    pub(super) fn backward(
        &self,
        a: &MixerActs,
        dout: &Tensor,
        put: &mut impl FnMut(&Tensor, Tensor) -> Result<()>,
    ) -> Result<Tensor> {
        let [w_in, w_x, w_dt, w_out] = &a.w;
        let p = &a.params;
        // out = y W_outᵀ
        let (dy, d_out_proj) = linear_backward(&a.y, w_out, dout)?; // (b·l, di)
        put(&self.out_proj, d_out_proj)?;
        // The scan, with Δ recomputed as the forward computed it; the conv's part of it waits
        // for x_proj's gradient below.
        let delta = Mixer::delta(&a.dt_low, w_dt)?; // (b·l, di)
        let scan = self.scan_tensors(a.xz.clone(), &a.x_dbl, delta, a.seq_len, p.clone())?;
        let sg = mamba_ops::backward::mixer_scan(&scan, &a.xs, &dy, &a.saved)?;
        drop(scan); // Δ's memory goes back before the gradients below are made
        put(&self.a_log, sg.a_log)?;
        put(&self.d_skip, sg.d_skip)?;
        put(&self.dt_proj_b, sg.delta_bias)?;
        // dt = dt_low W_dtᵀ
        let (d_dt_low, d_dt_proj) = linear_backward(&a.dt_low, w_dt, &sg.delta)?; // (b·l, r)
        put(&self.dt_proj_w, d_dt_proj)?;
        // x_dbl = xs W_xᵀ = [dt_low | B | C]
        let dx_dbl = mamba_ops::concat_columns(&[&d_dt_low, &sg.b, &sg.c], a.x_dbl.dtype())?; // (b·l, r + 2n), one pass
        let (dxs, d_x_proj) = linear_backward(&a.xs, w_x, &dx_dbl)?; // (b·l, di)
        put(&self.x_proj, d_x_proj)?;
        // The conv, for x_proj's input and the scan's u at once: dxz whole.
        let [dxz, d_conv_w, d_conv_b] =
            mamba_ops::backward::mixer_conv(&a.xz, Some(a.seq_len), &p.conv_w, &p.conv_b, &dxs, sg.conv)?;
        put(&self.conv_weight, d_conv_w)?;
        put(&self.conv_bias, d_conv_b)?;
        // xz = x W_inᵀ
        let (dx, d_in_proj) = linear_backward(&a.x, w_in, &dxz)?; // (b·l, d_model)
        put(&self.in_proj, d_in_proj)?;
        Ok(dx)
    }
}
