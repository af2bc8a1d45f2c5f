//! Reference depthwise causal conv1d + bias + SiLU in `f64`.

use super::{silu, silu_grad};

/// `x: (b, l, d)`, `weight: (d, k)`, `bias: (d,)`, flat row-major.
#[derive(Debug, Clone)]
pub struct ConvInputs {
    pub b: usize,
    pub l: usize,
    pub d: usize,
    pub k: usize,
    pub x: Vec<f64>,
    pub weight: Vec<f64>,
    pub bias: Vec<f64>,
}

/// Gradients of a scalar loss, shaped like [`ConvInputs`].
#[derive(Debug, Clone)]
pub struct ConvGrads {
    pub x: Vec<f64>,
    pub weight: Vec<f64>,
    pub bias: Vec<f64>,
}

impl ConvInputs {
    /// `x[i, t - (k-1) + j, c]`, zero before the start of the sequence.
    fn tap(&self, i: usize, t: usize, j: usize, c: usize) -> Option<usize> {
        let src = (t + j).checked_sub(self.k - 1)?;
        Some((i * self.l + src) * self.d + c)
    }

    /// Pre-activation `bias[c] + sum_j weight[c, j] x[i, t-(k-1)+j, c]`, shape `(b, l, d)`.
    fn pre(&self) -> Vec<f64> {
        let mut out = vec![0.0; self.b * self.l * self.d];
        for i in 0..self.b {
            for t in 0..self.l {
                for c in 0..self.d {
                    let mut acc = self.bias[c];
                    for j in 0..self.k {
                        if let Some(src) = self.tap(i, t, j, c) {
                            acc += self.weight[c * self.k + j] * self.x[src];
                        }
                    }
                    out[(i * self.l + t) * self.d + c] = acc;
                }
            }
        }
        out
    }
}

/// `silu(pre)`, shape `(b, l, d)`.
pub fn causal_conv1d_silu_forward(x: &ConvInputs) -> Vec<f64> {
    x.pre().into_iter().map(silu).collect()
}

/// Gradients of `sum(g * out)` for an upstream gradient `g: (b, l, d)`.
pub fn causal_conv1d_silu_backward(x: &ConvInputs, g: &[f64]) -> ConvGrads {
    let pre = x.pre();
    let mut gr = ConvGrads { x: vec![0.0; x.x.len()], weight: vec![0.0; x.d * x.k], bias: vec![0.0; x.d] };
    for i in 0..x.b {
        for t in 0..x.l {
            for c in 0..x.d {
                let o = (i * x.l + t) * x.d + c;
                let dpre = g[o] * silu_grad(pre[o]);
                gr.bias[c] += dpre;
                for j in 0..x.k {
                    if let Some(src) = x.tap(i, t, j, c) {
                        gr.weight[c * x.k + j] += dpre * x.x[src];
                        gr.x[src] += dpre * x.weight[c * x.k + j];
                    }
                }
            }
        }
    }
    gr
}
