// RMSNorm on the GPU: y = w · x / √(mean(x²) + eps) over rows of d values; x and w are f32, the
// output y and its gradient g are f32 or bf16 (the `_bf16` kernels: the model's f32 residual
// stream normalized straight into its bf16 matmul input). The arithmetic is f32. The math is the
// CPU op's (ops/src/model/rms_norm/cpu.rs), which these kernels are tested against.
//
// One warp per row (consecutive lanes read consecutive columns: coalesced), warp-shuffle sums.
// Backward: dx and 1/rms per row in one kernel; dw as per-strip partial sums over rows (one
// thread per (strip, column)), added afterwards in strip order: deterministic.

#include "mixer_common.cuh"

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

template <typename TY>
__device__ void rms_fwd(const float* __restrict__ x, const float* __restrict__ w, TY* __restrict__ y,
                        int rows, int d, float eps) {
    const int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (row >= rows) return; // whole warps leave together
    const float* xr = x + (size_t)row * d;
    float ss = 0.f;
    for (int j = lane; j < d; j += 32) ss += xr[j] * xr[j];
    const float r = rsqrtf(warp_sum(ss) / d + eps);
    TY* yr = y + (size_t)row * d;
    for (int j = lane; j < d; j += 32) st(yr, j, w[j] * xr[j] * r);
}

// dx_j = r·w_j·g_j − x_j·r³·(1/d)·Σ_k w_k g_k x_k (+ add_j with has_add: the residual stream's
// other gradient, so a model's backward needs no separate add); also writes r per row for the
// dw kernel, and dx in bf16 to dx_lo when given (the next block's bf16 matmuls read it: one
// pass instead of a separate cast).
template <typename TY>
__device__ void rms_bwd_dx(const float* __restrict__ x, const float* __restrict__ w,
                           const TY* __restrict__ g, const float* __restrict__ add, int has_add,
                           float* __restrict__ dx, __nv_bfloat16* __restrict__ dx_lo,
                           float* __restrict__ inv_rms, int rows, int d, float eps) {
    const int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (row >= rows) return;
    const float* xr = x + (size_t)row * d;
    const TY* gr = g + (size_t)row * d;
    float ss = 0.f, dot = 0.f;
    for (int j = lane; j < d; j += 32) {
        ss += xr[j] * xr[j];
        dot += w[j] * ld(gr, j) * xr[j];
    }
    const float r = rsqrtf(warp_sum(ss) / d + eps);
    const float c = r * r * r * warp_sum(dot) / d;
    float* dxr = dx + (size_t)row * d;
    const float* ar = add + (size_t)row * d;
    for (int j = lane; j < d; j += 32) {
        const float v = r * w[j] * ld(gr, j) - xr[j] * c + (has_add ? ar[j] : 0.f);
        dxr[j] = v;
        if (dx_lo != nullptr) dx_lo[(size_t)row * d + j] = __float2bfloat16(v);
    }
    if (lane == 0) inv_rms[row] = r;
}

// dw_part[strip][j] = Σ_{rows of the strip} g_j · x_j · r_row.
template <typename TY>
__device__ void rms_bwd_dw(const float* __restrict__ x, const TY* __restrict__ g,
                           const float* __restrict__ inv_rms, float* __restrict__ dw_part,
                           int rows, int d, int strip_rows) {
    const int j = blockIdx.x * blockDim.x + threadIdx.x, strip = blockIdx.y;
    if (j >= d) return;
    const int r0 = strip * strip_rows, r1 = min(r0 + strip_rows, rows);
    float acc = 0.f;
#pragma unroll 8
    for (int r = r0; r < r1; ++r) acc += ld(g, (size_t)r * d + j) * x[(size_t)r * d + j] * inv_rms[r];
    dw_part[(size_t)strip * d + j] = acc;
}

#define RMS_KERNELS(TN, TY)                                                                         \
    extern "C" __global__ void rms_norm_fwd_##TN(const float* x, const float* w, TY* y, int rows,    \
                                                 int d, float eps) {                                 \
        rms_fwd<TY>(x, w, y, rows, d, eps);                                                          \
    }                                                                                                \
    extern "C" __global__ void rms_norm_bwd_dx_##TN(const float* x, const float* w, const TY* g,     \
                                                    const float* add, int has_add, float* dx,        \
                                                    __nv_bfloat16* dx_lo, float* inv_rms, int rows,  \
                                                    int d, float eps) {                              \
        rms_bwd_dx<TY>(x, w, g, add, has_add, dx, dx_lo, inv_rms, rows, d, eps);                     \
    }                                                                                                \
    extern "C" __global__ void rms_norm_bwd_dw_##TN(const float* x, const TY* g, const float* inv_rms, \
                                                    float* dw_part, int rows, int d, int strip_rows) { \
        rms_bwd_dw<TY>(x, g, inv_rms, dw_part, rows, d, strip_rows);                                 \
    }

RMS_KERNELS(f32, float)
RMS_KERNELS(bf16, __nv_bfloat16)
