//! One mixer's training path side by side, as llm.c keeps a layer's forward and backward
//! together: the forward without autograd history that saves its activations
//! ([`Mixer::forward_saved`], [`MixerActs`]), and the hand-written backward that reads them
//! ([`Mixer::backward`]). `backward.rs` runs them for the whole model; [`Mixer::forward`]
//! (`mixer.rs`) is the same computation under autograd, the reference the tests compare with.

use candle_core::{DType, Result, Tensor};
use mamba_ops::backward::ScanSaved;
use mamba_ops::ScanTensors;

use super::backward::linear_backward;
use super::layers::linear;
use super::mixer::Mixer;

/// What the hand-written backward needs of one mixer's forward: its input, the activations the
/// matmuls and the mixer ops read, and the matmul weights in the compute dtype (the same tensors
/// candle's autograd graph would hold).
pub(super) struct MixerActs {
    pub x: Tensor,      // (b·l, d_model), the compute dtype
    pub xs: Tensor,     // (b·l, di), the conv's output
    pub x_dbl: Tensor,  // (b·l, r + 2n)
    pub dt_low: Tensor, // (b·l, r)
    pub y: Tensor,      // (b·l, di), the scan's output
    /// The scan's inputs: xz (b·l, 2·di), Δ before bias and softplus (b·l, di), B and C (column
    /// views of x_dbl) and the per-channel parameters, without autograd history.
    pub scan: ScanTensors,
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
        Ok((out, MixerActs { x: x.clone(), xs, x_dbl, dt_low, y, scan, saved, w: weights.clone() }))
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
        let p = &a.scan.params;
        // out = y W_outᵀ
        let (dy, d_out_proj) = linear_backward(&a.y, w_out, dout)?; // (b·l, di)
        put(&self.out_proj, d_out_proj)?;
        // The scan; the conv's part of it waits for x_proj's gradient below.
        let sg = mamba_ops::backward::mixer_scan(&a.scan, &a.xs, &dy, &a.saved)?;
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
            mamba_ops::backward::mixer_conv(&a.scan.xz, a.scan.seq_len, &p.conv_w, &p.conv_b, &dxs, sg.conv)?;
        put(&self.conv_weight, d_conv_w)?;
        put(&self.conv_bias, d_conv_b)?;
        // xz = x W_inᵀ
        let (dx, d_in_proj) = linear_backward(&a.x, w_in, &dxz)?; // (b·l, d_model)
        put(&self.in_proj, d_in_proj)?;
        Ok(dx)
    }
}
