// Shared by the mixer kernels (mixer_conv.cu, mixer_scan.cu) and rms_norm.cu: loads and stores of the IO type T
// (bf16 or f32; arithmetic is always f32), the activations, and the conv's pre-activation read
// from the x half of xz = [x | z]: (b, l, 2d).
#pragma once
#include <cuda_bf16.h>

#define LOG2E 1.4426950408889634f
#define LN2 0.6931471805599453f
#define MAX_K 8

__device__ __forceinline__ float ld(const float* __restrict__ p, size_t i) { return p[i]; }
__device__ __forceinline__ float ld(const __nv_bfloat16* __restrict__ p, size_t i) { return __bfloat162float(p[i]); }
__device__ __forceinline__ void st(float* __restrict__ p, size_t i, float v) { p[i] = v; }
__device__ __forceinline__ void st(__nv_bfloat16* __restrict__ p, size_t i, float v) { p[i] = __float2bfloat16(v); }

__device__ __forceinline__ float softplus_f(float x) { return x > 20.f ? x : log1pf(expf(x)); }
__device__ __forceinline__ float sigmoid_f(float x) { return 1.f / (1.f + expf(-x)); }

// The conv's pre-activation at (i, t, c): cb[c] + Σ_j w[c, j] x[i, t - (K-1) + j, c], x = xz[.., :D].
template <typename T>
__device__ __forceinline__ float conv_pre(const T* __restrict__ xz, const float* __restrict__ w,
                                          const float* __restrict__ cb, int i, int t, int c, int L,
                                          int D, int K) {
    float acc = cb[c];
    for (int j = 0; j < K; ++j) {
        const int tt = t - (K - 1) + j;
        if (tt >= 0) acc += w[c * K + j] * ld(xz, ((size_t)i * L + tt) * 2 * D + c);
    }
    return acc;
}
