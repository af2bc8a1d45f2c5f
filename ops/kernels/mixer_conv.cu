// The mixer's causal conv1d + SiLU over the x half of xz = [x | z]: (b, l, 2d) (ops/src/mixer,
// `mixer_conv`), in the IO type T (bf16 or f32), f32 arithmetic; conv weight w (d, k), bias cb (d)
// in f32. The math is causal_conv1d.cu's on the x half. The backward kernels are shared with
// mixer_scan, whose backward produces dpre = dL/d(pre-activation) for them.

#include "mixer_common.cuh"

// One thread per (i, t, c), consecutive threads consecutive c.

template <typename T>
__device__ void conv_fwd(const T* __restrict__ xz, const float* __restrict__ w,
                         const float* __restrict__ cb, T* __restrict__ out, int B, int L, int D, int K) {
    const size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)B * L * D) return;
    const int c = idx % D, t = (idx / D) % L, i = idx / ((size_t)D * L);
    const float pre = conv_pre(xz, w, cb, i, t, c, L, D, K);
    st(out, idx, pre * sigmoid_f(pre));
}

// dpre = g · silu'(pre) in f32.
template <typename T>
__device__ void conv_dpre(const T* __restrict__ xz, const float* __restrict__ w,
                          const float* __restrict__ cb, const T* __restrict__ g,
                          float* __restrict__ dpre, int B, int L, int D, int K) {
    const size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)B * L * D) return;
    const int c = idx % D, t = (idx / D) % L, i = idx / ((size_t)D * L);
    const float pre = conv_pre(xz, w, cb, i, t, c, L, D, K);
    const float sg = sigmoid_f(pre);
    dpre[idx] = ld(g, idx) * sg * (1.f + pre * (1.f - sg));
}

// The x half of dxz: Σ_j w[c, j] dpre[i, t + (K-1) - j, c]; the z half set to zero if zero_z.
template <typename T>
__device__ void conv_dx(const float* __restrict__ dpre, const float* __restrict__ w,
                        T* __restrict__ dxz, int B, int L, int D, int K, int zero_z) {
    const size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)B * L * D) return;
    const int c = idx % D, t = (idx / D) % L;
    const size_t row = idx / D;
    float acc = 0.f;
    for (int j = 0; j < K; ++j) {
        const int to = t + (K - 1) - j;
        if (to < L) acc += w[c * K + j] * dpre[(row + (to - t)) * D + c];
    }
    st(dxz, row * 2 * D + c, acc);
    if (zero_z) st(dxz, row * 2 * D + D + c, 0.f);
}

// Partial dw and dbias over strips of `rows` consecutive (i, t) rows: one thread per (strip, c).
// dw_part: (n_strips, d, k + 1), the last column being dbias; the caller sums over strips.
template <typename T>
__device__ void conv_dw(const T* __restrict__ xz, const float* __restrict__ dpre,
                        float* __restrict__ dw_part, int B, int L, int D, int K, int rows) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= D) return;
    float acc[MAX_K + 1];
    for (int j = 0; j <= MAX_K; ++j) acc[j] = 0.f;
    const size_t r0 = (size_t)blockIdx.y * rows;
    const size_t r1 = min(r0 + rows, (size_t)B * L);
    for (size_t r = r0; r < r1; ++r) {
        const int t = r % L;
        const float dp = dpre[r * D + c];
        for (int j = 0; j < K; ++j) {
            const int tt = t - (K - 1) + j;
            if (tt >= 0) acc[j] += dp * ld(xz, (r - (K - 1) + j) * 2 * D + c);
        }
        acc[K] += dp;
    }
    float* out = dw_part + ((size_t)blockIdx.y * D + c) * (K + 1);
    for (int j = 0; j <= K; ++j) out[j] = acc[j];
}

#define CONV_KERNELS(TN, T)                                                                         \
    extern "C" __global__ void mixer_conv_fwd_##TN(const T* xz, const float* w, const float* cb,   \
                                                   T* out, int B, int L, int D, int K) {           \
        conv_fwd<T>(xz, w, cb, out, B, L, D, K);                                                    \
    }                                                                                               \
    extern "C" __global__ void mixer_conv_dpre_##TN(const T* xz, const float* w, const float* cb,  \
                                                    const T* g, float* dpre, int B, int L, int D,  \
                                                    int K) {                                        \
        conv_dpre<T>(xz, w, cb, g, dpre, B, L, D, K);                                               \
    }                                                                                               \
    extern "C" __global__ void mixer_conv_dx_##TN(const float* dpre, const float* w, T* dxz, int B, \
                                                  int L, int D, int K, int zero_z) {                \
        conv_dx<T>(dpre, w, dxz, B, L, D, K, zero_z);                                               \
    }                                                                                               \
    extern "C" __global__ void mixer_conv_dw_##TN(const T* xz, const float* dpre, float* dw_part,  \
                                                  int B, int L, int D, int K, int rows) {           \
        conv_dw<T>(xz, dpre, dw_part, B, L, D, K, rows);                                            \
    }

CONV_KERNELS(f32, float)
CONV_KERNELS(bf16, __nv_bfloat16)
