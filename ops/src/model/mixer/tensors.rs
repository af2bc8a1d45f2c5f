//! The mixer ops' tensor arguments as structs: the per-channel parameters, which the conv and the
//! scan read, and the scan's inputs. Names follow HF `MambaMixer` (in brackets where they differ).

use candle_core::Tensor;

/// The mixer's per-channel tensors in the shapes the ops read them: `d` channels, state size `n`,
/// conv width `k`. Any float dtype; the ops compute in f32 (f64 when `xz` is f64).
#[derive(Clone, Debug)]
pub struct ChannelParams {
    pub conv_w: Tensor,     // (d, k) [conv1d.weight (d, 1, k) squeezed]
    pub conv_b: Tensor,     // (d,) [conv1d.bias]
    pub a_log: Tensor,      // (d, n) [A_log]
    pub d_skip: Tensor,     // (d,) [D]
    pub delta_bias: Tensor, // (d,) [dt_proj.bias]
}

/// The selective scan's inputs where in_proj, x_proj and dt_proj leave them: `xz = [x | z]` (in_proj's
/// output; the scan reads z and, unless given u, recomputes `u = silu(conv1d(x) + conv_b)`),
/// `delta` (dt_proj's output without its bias), `b` and `c` (x_proj's output columns), and the
/// per-channel parameters.
///
/// The activations are `(b, l, ·)` with `seq_len` None, or rows `(b·l, ·)` of `b` sequences of
/// `seq_len` steps one after the other (the same memory; a model that keeps its activations 2-D
/// needs no reshapes around its matmuls). Outputs and gradients take the same form.
#[derive(Clone, Debug)]
pub struct ScanTensors {
    pub xz: Tensor, // (b, l, 2d) or (b·l, 2d); bf16, f32 or f64
    pub seq_len: Option<usize>,
    pub delta: Tensor, // (b, l, d) or (b·l, d); xz's dtype
    pub b: Tensor,     // (b, l, n) or (b·l, n)
    pub c: Tensor,     // (b, l, n) or (b·l, n)
    pub params: ChannelParams,
}

impl ChannelParams {
    /// The same tensors without autograd history.
    pub fn detach(&self) -> ChannelParams {
        ChannelParams {
            conv_w: self.conv_w.detach(),
            conv_b: self.conv_b.detach(),
            a_log: self.a_log.detach(),
            d_skip: self.d_skip.detach(),
            delta_bias: self.delta_bias.detach(),
        }
    }
}

impl ScanTensors {
    /// The same tensors without autograd history.
    pub fn detach(&self) -> ScanTensors {
        ScanTensors {
            xz: self.xz.detach(),
            seq_len: self.seq_len,
            delta: self.delta.detach(),
            b: self.b.detach(),
            c: self.c.detach(),
            params: self.params.detach(),
        }
    }

    /// The tensors that go into the packed small tensor, in `small`'s order of parts
    /// (`mixer` module docs): `[b, c, a_log, d_skip, delta_bias, conv_w, conv_b]`.
    #[cfg(feature = "cuda")]
    pub(crate) fn small_parts(&self) -> [&Tensor; 7] {
        let p = &self.params;
        [&self.b, &self.c, &p.a_log, &p.d_skip, &p.delta_bias, &p.conv_w, &p.conv_b]
    }
}
