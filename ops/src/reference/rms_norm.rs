//! RMSNorm in plain f64 loops: `y = w · x / √(mean(x²) + eps)` per row (Zhang & Sennrich 2019;
//! mamba_ssm `RMSNorm`, HF `MambaRMSNorm`), and its backward.

/// Rows of `d` values: `x (rows·d)`, `w (d)` → `y (rows·d)`.
pub fn rms_norm_forward(x: &[f64], w: &[f64], eps: f64) -> Vec<f64> {
    let d = w.len();
    let mut y = vec![0.0; x.len()];
    for (row, out) in x.chunks(d).zip(y.chunks_mut(d)) {
        let ms = row.iter().map(|v| v * v).sum::<f64>() / d as f64;
        let r = 1.0 / (ms + eps).sqrt();
        for j in 0..d {
            out[j] = w[j] * row[j] * r;
        }
    }
    y
}

/// Gradients `(dx, dw)` for upstream gradient `g` of `y`:
/// `dx_j = r (w_j g_j) − x_j r³ (1/d) Σ_k w_k g_k x_k`, `dw_j = Σ_rows g_j x_j r`.
pub fn rms_norm_backward(x: &[f64], w: &[f64], eps: f64, g: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let d = w.len();
    let mut dx = vec![0.0; x.len()];
    let mut dw = vec![0.0; d];
    for ((row, grow), out) in x.chunks(d).zip(g.chunks(d)).zip(dx.chunks_mut(d)) {
        let ms = row.iter().map(|v| v * v).sum::<f64>() / d as f64;
        let r = 1.0 / (ms + eps).sqrt();
        let dot: f64 = (0..d).map(|k| w[k] * grow[k] * row[k]).sum::<f64>() / d as f64;
        for j in 0..d {
            out[j] = r * w[j] * grow[j] - row[j] * r * r * r * dot;
            dw[j] += grow[j] * row[j] * r;
        }
    }
    (dx, dw)
}
