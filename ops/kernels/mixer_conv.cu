// The mixer's causal conv1d + SiLU over the x half of xz = [x | z]: (b, l, 2d) (ops/src/mixer,
// `mixer_conv`), in the IO type T (bf16 or f32), f32 arithmetic; conv weight w (d, k), bias cb (d)
// in f32. The math is causal_conv1d.cu's on the x half. The backward kernels are shared with
// mixer_scan, whose backward produces dpre = dL/d(pre-activation) for them.

#include "mixer_common.cuh"

// fwd, dpre, dx: a thread walks RUN consecutive time steps of one channel c of one sequence i,
// keeping the last MAX_K inputs in registers (a sliding window), so each input element is read
// about once instead of K times. Blocks: blockIdx.x = (i, run), blockIdx.y · blockDim.x +
// threadIdx.x = c (consecutive threads read consecutive channels). No 64-bit division anywhere (a
// 64-bit `idx % D` per element made the first version several times slower than memory).
//
// The taps are aligned to the window: wa[m] multiplies x[t - m] (wa[m] = w[c, K-1-m] for m < K,
// else 0), so every register index is a compile-time constant for any K <= MAX_K.
#define RUN 16

__device__ __forceinline__ void aligned_taps(const float* __restrict__ w, int c, int K, float (&wa)[MAX_K]) {
#pragma unroll
    for (int m = 0; m < MAX_K; ++m) wa[m] = m < K ? w[c * K + (K - 1 - m)] : 0.f;
}

// The window before step t0 is shifted in: win[m] = x[t0 - 1 - m] (zero before the sequence), so
// that after shift_in(x[t0]) win[m] = x[t0 - m].
template <typename T>
__device__ __forceinline__ void window_before(const T* __restrict__ xr, size_t stride, int t0, float (&win)[MAX_K]) {
#pragma unroll
    for (int m = 0; m < MAX_K; ++m) win[m] = t0 - 1 - m >= 0 ? ld(xr, (size_t)(t0 - 1 - m) * stride) : 0.f;
}

// win[m] ← win[m - 1], win[0] ← v.
__device__ __forceinline__ void shift_in(float (&win)[MAX_K], float v) {
#pragma unroll
    for (int m = MAX_K - 1; m >= 1; --m) win[m] = win[m - 1];
    win[0] = v;
}

__device__ __forceinline__ float dot_window(const float (&wa)[MAX_K], const float (&win)[MAX_K]) {
    float acc = 0.f;
#pragma unroll
    for (int m = 0; m < MAX_K; ++m) acc += wa[m] * win[m];
    return acc;
}

template <typename T>
__device__ void conv_fwd(const T* __restrict__ xz, const float* __restrict__ w,
                         const float* __restrict__ cb, T* __restrict__ out, int L, int D, int K) {
    const int runs = (L + RUN - 1) / RUN, i = blockIdx.x / runs, t0 = (blockIdx.x % runs) * RUN;
    const int c = blockIdx.y * blockDim.x + threadIdx.x;
    if (c >= D) return;
    float wa[MAX_K], win[MAX_K];
    aligned_taps(w, c, K, wa);
    const T* xr = xz + (size_t)i * L * 2 * D + c; // x[i, t, c] = xr[t · 2D]
    window_before(xr, 2 * (size_t)D, t0, win);
    const float bias = cb[c];
    for (int t = t0; t < min(t0 + RUN, L); ++t) {
        shift_in(win, ld(xr, (size_t)t * 2 * D));
        const float pre = bias + dot_window(wa, win);
        st(out, ((size_t)i * L + t) * D + c, pre * sigmoid_f(pre));
    }
}

// dpre = g · silu'(pre) in f32; with `accumulate`, (g + dpre) · silu'(pre) in place: dpre then
// holds dL/du from the scan's backward, when the model's own backward runs the conv once for both
// uses of its output u.
template <typename T>
__device__ void conv_dpre(const T* __restrict__ xz, const float* __restrict__ w,
                          const float* __restrict__ cb, const T* __restrict__ g,
                          float* __restrict__ dpre, int L, int D, int K, int accumulate) {
    const int runs = (L + RUN - 1) / RUN, i = blockIdx.x / runs, t0 = (blockIdx.x % runs) * RUN;
    const int c = blockIdx.y * blockDim.x + threadIdx.x;
    if (c >= D) return;
    float wa[MAX_K], win[MAX_K];
    aligned_taps(w, c, K, wa);
    const T* xr = xz + (size_t)i * L * 2 * D + c;
    window_before(xr, 2 * (size_t)D, t0, win);
    const float bias = cb[c];
    for (int t = t0; t < min(t0 + RUN, L); ++t) {
        shift_in(win, ld(xr, (size_t)t * 2 * D));
        const float pre = bias + dot_window(wa, win), sg = sigmoid_f(pre);
        const size_t idx = ((size_t)i * L + t) * D + c;
        const float gu = accumulate ? ld(g, idx) + dpre[idx] : ld(g, idx);
        dpre[idx] = gu * sg * (1.f + pre * (1.f - sg));
    }
}

// The x half of dxz: Σ_j w[c, j] dpre[i, t + (K-1) - j, c] = Σ_m wa[m] dpre[i, t + m, c], walking
// the run backwards with the window win[m] = dpre[t + m] (zero past the sequence); the z half set
// to zero if zero_z.
template <typename T>
__device__ void conv_dx(const float* __restrict__ dpre, const float* __restrict__ w,
                        T* __restrict__ dxz, int L, int D, int K, int zero_z) {
    const int runs = (L + RUN - 1) / RUN, i = blockIdx.x / runs, t0 = (blockIdx.x % runs) * RUN;
    const int c = blockIdx.y * blockDim.x + threadIdx.x;
    if (c >= D) return;
    float wa[MAX_K], win[MAX_K];
    aligned_taps(w, c, K, wa);
    const float* dr = dpre + (size_t)i * L * D + c; // dpre[i, t, c] = dr[t · D]
    const int t1 = min(t0 + RUN, L); // one past the run's last step
    // Before shifting in dpre[t1 - 1]: win[m] = dpre[t1 + m] (zero past the sequence).
#pragma unroll
    for (int m = 0; m < MAX_K; ++m) win[m] = t1 + m < L ? dr[(size_t)(t1 + m) * D] : 0.f;
    for (int t = t1 - 1; t >= t0; --t) {
        shift_in(win, dr[(size_t)t * D]);
        const size_t row = (size_t)i * L + t;
        st(dxz, row * 2 * D + c, dot_window(wa, win));
        if (zero_z) st(dxz, row * 2 * D + D + c, 0.f);
    }
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
                                                    const T* g, float* dpre, int L, int D, int K,  \
                                                    int accumulate) {                              \
        conv_dpre<T>(xz, w, cb, g, dpre, L, D, K, accumulate);                                      \
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
