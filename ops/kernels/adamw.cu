// One AdamW update of a stack of parameters in one pass (ops/src/adamw.rs): reads w, g and the
// moments mv = [m | v], writes out = [w' | m' | v'] (each n floats). The arithmetic is the
// trainer's former chain of candle ops, element by element, in f32 (c1 = 1 − β1, c2 = 1 − β2
// rounded from f64, as candle's affine rounds its factor):
//   m' = β1 m + c1 g,  v' = β2 v + c2 g²,
//   w' = w·decay − lr · (m' / bias1) / (sqrt(v' / bias2) + eps).

extern "C" __global__ void adamw_step_f32(const float* __restrict__ w, const float* __restrict__ g,
                                          const float* __restrict__ mv, float* __restrict__ out,
                                          size_t n, float beta1, float c1, float beta2, float c2,
                                          float eps, float inv_bias1, float inv_bias2, float decay,
                                          float lr) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const float gi = g[i];
        const float m = beta1 * mv[i] + c1 * gi;
        const float v = beta2 * mv[n + i] + c2 * (gi * gi);
        const float denom = sqrtf(v * inv_bias2) + eps;
        out[i] = w[i] * decay - lr * ((m * inv_bias1) / denom);
        out[n + i] = m;
        out[2 * n + i] = v;
    }
}
