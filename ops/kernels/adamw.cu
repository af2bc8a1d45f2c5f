// AdamW updates (ops/src/optim/adamw.rs), in f32, as the trainer's former chain of candle ops computed
// them element by element (c1 = 1 − β1, c2 = 1 − β2 rounded from f64, as candle's affine rounds
// its factor):
//   m' = β1 m + c1 g,  v' = β2 v + c2 g²,
//   w' = w·decay − lr · (m' / bias1) / (sqrt(v' / bias2) + eps).
// `adamw_step_f32` updates a stack of parameters out of place: reads w, g and the moments
// mv = [m | v], writes out = [w' | m' | v'] (each n floats). `adamw_many_f32` updates every
// parameter of the optimizer in place in one launch (multi_tensor.cuh: entries w, m, v, g; the
// flag selects the decay factor, 1 without).

#include "multi_tensor.cuh"

struct AdamWHyper {
    float beta1, c1, beta2, c2, eps, inv_bias1, inv_bias2, decay, lr;
};

// One element: updates m and v and returns w'.
__device__ __forceinline__ float adamw_element(float w, float g, float& m, float& v, float decay, const AdamWHyper& h) {
    m = h.beta1 * m + h.c1 * g;
    v = h.beta2 * v + h.c2 * (g * g);
    const float denom = sqrtf(v * h.inv_bias2) + h.eps;
    return w * decay - h.lr * ((m * h.inv_bias1) / denom);
}

extern "C" __global__ void adamw_step_f32(const float* __restrict__ w, const float* __restrict__ g,
                                          const float* __restrict__ mv, float* __restrict__ out,
                                          size_t n, AdamWHyper h) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float m = mv[i], v = mv[n + i];
        out[i] = adamw_element(w[i], g[i], m, v, h.decay, h);
        out[n + i] = m;
        out[2 * n + i] = v;
    }
}

extern "C" __global__ void adamw_many_f32(const unsigned long long* __restrict__ table, AdamWHyper h) {
    const unsigned long long* e = mt_entry<4>(table);
    float* w = reinterpret_cast<float*>(e[0]);
    float* m = reinterpret_cast<float*>(e[1]);
    float* v = reinterpret_cast<float*>(e[2]);
    const float* g = reinterpret_cast<const float*>(e[3]);
    const unsigned n = mt_len(e[4]);
    const float decay = mt_flag(e[4]) ? h.decay : 1.f;
    for (unsigned i = threadIdx.x; i < n; i += blockDim.x) {
        float mi = m[i], vi = v[i];
        w[i] = adamw_element(w[i], g[i], mi, vi, decay, h);
        m[i] = mi;
        v[i] = vi;
    }
}
