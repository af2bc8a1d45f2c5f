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

// 2^x on the hardware's approximate ex2: one instruction (exp2f adds four for denormal inputs
// and outputs), relative error about 2^-22, results below 2^-126 flushed to zero. The scan's
// decays exp2(dt·A·log2 e) have arguments ≤ 0, so the flush only turns a negligible decay into 0.
__device__ __forceinline__ float exp2_approx(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}
// e^x as 2^(x·log2 e): rounding x·log2 e adds a relative error of about |x|·2^-24.
__device__ __forceinline__ float exp_approx(float x) { return exp2_approx(x * LOG2E); }
// softplus keeps the accurate log1pf (a dt of 1e-3 is log1p(1e-3): log of a rounded 1 + e^x would
// lose most of its digits); sigmoid divides with the approximate reciprocal (2 ulp; 0 for x below
// about −88, as it should be).
__device__ __forceinline__ float softplus_f(float x) { return x > 20.f ? x : log1pf(exp_approx(x)); }
__device__ __forceinline__ float sigmoid_f(float x) { return __fdividef(1.f, 1.f + exp_approx(-x)); }

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
