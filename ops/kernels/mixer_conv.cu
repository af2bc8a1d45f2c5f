// The mixer's causal conv1d + SiLU over the x half of xz = [x | z]: (b, l, 2d) (ops/src/mixer,
// `mixer_conv`), in the IO type T (bf16 or f32), f32 arithmetic; conv weight w (d, k), bias cb (d)
// in f32. The math is causal_conv1d.cu's on the x half. The backward kernels are shared with
// mixer_scan, whose backward produces dpre = dL/d(pre-activation) for them.

#include "mixer_common.cuh"

// fwd, dpre, dx: one block row per (i, t) row of the activations (blockIdx.x = i·L + t) and one
// thread per channel c (blockIdx.y · blockDim.x + threadIdx.x), so the indices need no 64-bit
// division (a 64-bit `idx % D` per element made these kernels several times slower than memory).

template <typename T>
__device__ void conv_fwd(const T* __restrict__ xz, const float* __restrict__ w,
                         const float* __restrict__ cb, T* __restrict__ out, int L, int D, int K) {
    const int row = blockIdx.x, c = blockIdx.y * blockDim.x + threadIdx.x;
    if (c >= D) return;
    const int i = row / L, t = row - i * L;
    const float pre = conv_pre(xz, w, cb, i, t, c, L, D, K);
    st(out, (size_t)row * D + c, pre * sigmoid_f(pre));
}

// dpre = g · silu'(pre) in f32.
template <typename T>
__device__ void conv_dpre(const T* __restrict__ xz, const float* __restrict__ w,
                          const float* __restrict__ cb, const T* __restrict__ g,
                          float* __restrict__ dpre, int L, int D, int K) {
    const int row = blockIdx.x, c = blockIdx.y * blockDim.x + threadIdx.x;
    if (c >= D) return;
    const int i = row / L, t = row - i * L;
    const size_t idx = (size_t)row * D + c;
    const float pre = conv_pre(xz, w, cb, i, t, c, L, D, K);
    const float sg = sigmoid_f(pre);
    dpre[idx] = ld(g, idx) * sg * (1.f + pre * (1.f - sg));
}

// The x half of dxz: Σ_j w[c, j] dpre[i, t + (K-1) - j, c]; the z half set to zero if zero_z.
template <typename T>
__device__ void conv_dx(const float* __restrict__ dpre, const float* __restrict__ w,
                        T* __restrict__ dxz, int L, int D, int K, int zero_z) {
    const int row = blockIdx.x, c = blockIdx.y * blockDim.x + threadIdx.x;
    if (c >= D) return;
    const int t = row % L;
    float acc = 0.f;
#pragma unroll
    for (int j = 0; j < MAX_K; ++j) {
        const int to = t + (K - 1) - j;
        if (j < K && to < L) acc += w[c * K + j] * dpre[((size_t)row + (K - 1) - j) * D + c];
    }
    st(dxz, (size_t)row * 2 * D + c, acc);
    if (zero_z) st(dxz, (size_t)row * 2 * D + D + c, 0.f);
}

// Partial dw and dbias over strips of `rows` consecutive (i, t) rows: one thread per (strip, c).
// dw_part: (n_strips, d, k + 1), the last column being dbias; the caller sums over strips. The
// accumulators are indexed by compile-time constants (the loops over MAX_K unroll), so they stay
// in registers, and the sequence position is stepped along, not divided out per row.
template <typename T>
__device__ void conv_dw(const T* __restrict__ xz, const float* __restrict__ dpre,
                        float* __restrict__ dw_part, int B, int L, int D, int K, int rows) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= D) return;
    float acc[MAX_K + 1];
#pragma unroll
    for (int j = 0; j <= MAX_K; ++j) acc[j] = 0.f;
    const size_t r0 = (size_t)blockIdx.y * rows;
    const size_t r1 = min(r0 + rows, (size_t)B * L);
    int t = (int)(r0 % L);
    for (size_t r = r0; r < r1; ++r) {
        const float dp = dpre[r * D + c];
#pragma unroll
        for (int j = 0; j < MAX_K; ++j) {
            const int tt = t - (K - 1) + j;
            if (j < K && tt >= 0) acc[j] += dp * ld(xz, (r - (K - 1) + j) * 2 * D + c);
        }
        acc[MAX_K] += dp;
        if (++t == L) t = 0;
    }
    float* out = dw_part + ((size_t)blockIdx.y * D + c) * (K + 1);
#pragma unroll
    for (int j = 0; j < MAX_K; ++j)
        if (j < K) out[j] = acc[j];
    out[K] = acc[MAX_K];
}

#define CONV_KERNELS(TN, T)                                                                         \
    extern "C" __global__ void mixer_conv_fwd_##TN(const T* xz, const float* w, const float* cb,   \
                                                   T* out, int L, int D, int K) {                  \
        conv_fwd<T>(xz, w, cb, out, L, D, K);                                                       \
    }                                                                                               \
    extern "C" __global__ void mixer_conv_dpre_##TN(const T* xz, const float* w, const float* cb,  \
                                                    const T* g, float* dpre, int L, int D, int K) {\
        conv_dpre<T>(xz, w, cb, g, dpre, L, D, K);                                                  \
    }                                                                                               \
    extern "C" __global__ void mixer_conv_dx_##TN(const float* dpre, const float* w, T* dxz, int L, \
                                                  int D, int K, int zero_z) {                       \
        conv_dx<T>(dpre, w, dxz, L, D, K, zero_z);                                                  \
    }                                                                                               \
    extern "C" __global__ void mixer_conv_dw_##TN(const T* xz, const float* dpre, float* dw_part,  \
                                                  int B, int L, int D, int K, int rows) {           \
        conv_dw<T>(xz, dpre, dw_part, B, L, D, K, rows);                                            \
    }

CONV_KERNELS(f32, float)
CONV_KERNELS(bf16, __nv_bfloat16)
