// The mixer's causal conv1d + SiLU over the x half of xz = [x | z]: (b, l, 2d) (ops/src/model/mixer,
// `mixer_conv`), in the IO type T (bf16 or f32), f32 arithmetic; conv weight w (d, k), bias cb (d)
// in f32. The math is ops/src/model/mixer/cpu/conv.rs's on the x half. The conv's own backward
// is `bwd` (one pass from the output's gradient); `dx` and `dw` serve mixer_scan's backward, which
// produces dpre = dL/d(pre-activation) for them.

#include "mixer_common.cuh"

// fwd, dx (and bwd, over BWD_ROWS steps): a thread walks RUN consecutive time steps of one channel c of one sequence i,
// keeping the last KW inputs in registers (a sliding window), so each input element is read
// about once instead of K times. Blocks: blockIdx.x = (i, run), blockIdx.y · blockDim.x +
// threadIdx.x = c (consecutive threads read consecutive channels). No 64-bit division anywhere (a
// 64-bit `idx % D` per element made the first version several times slower than memory).
//
// The taps are aligned to the window: wa[m] multiplies x[t - m] (wa[m] = w[c, K-1-m] for m < K,
// else 0), so every register index is a compile-time constant for any K <= KW, the window size
// the kernel is built for: KW = 4 (the model's K = 4: a window and dot product of 4, not MAX_K)
// or MAX_K. The run's steps are unrolled too (a guard per step for the sequence's end), so the
// window's shifts are register renames, not moves: the KW = MAX_K, not-unrolled version spent
// about 56 instructions per element (ncu: 55% of issue slots busy at 23% of DRAM bandwidth).
#define RUN 16

template <int KW>
__device__ __forceinline__ void aligned_taps(const float* __restrict__ w, int c, int K, float (&wa)[KW]) {
#pragma unroll
    for (int m = 0; m < KW; ++m) wa[m] = m < K ? w[c * K + (K - 1 - m)] : 0.f;
}

// The window before step t0 is shifted in: win[m] = x[t0 - 1 - m] (zero before the sequence), so
// that after shift_in(x[t0]) win[m] = x[t0 - m].
template <int KW, typename T>
__device__ __forceinline__ void window_before(const T* __restrict__ xr, size_t stride, int t0, float (&win)[KW]) {
#pragma unroll
    for (int m = 0; m < KW; ++m) win[m] = t0 - 1 - m >= 0 ? ld(xr, (size_t)(t0 - 1 - m) * stride) : 0.f;
}

// win[m] ← win[m - 1], win[0] ← v.
template <int KW>
__device__ __forceinline__ void shift_in(float (&win)[KW], float v) {
#pragma unroll
    for (int m = KW - 1; m >= 1; --m) win[m] = win[m - 1];
    win[0] = v;
}

template <int KW>
__device__ __forceinline__ float dot_window(const float (&wa)[KW], const float (&win)[KW]) {
    float acc = 0.f;
#pragma unroll
    for (int m = 0; m < KW; ++m) acc += wa[m] * win[m];
    return acc;
}

template <int KW, typename T>
__device__ void conv_fwd(const T* __restrict__ xz, const float* __restrict__ w,
                         const float* __restrict__ cb, T* __restrict__ out, int L, int D, int K) {
    const int runs = (L + RUN - 1) / RUN, i = blockIdx.x / runs, t0 = (blockIdx.x % runs) * RUN;
    const int c = blockIdx.y * blockDim.x + threadIdx.x;
    if (c >= D) return;
    float wa[KW], win[KW];
    aligned_taps(w, c, K, wa);
    const T* xr = xz + (size_t)i * L * 2 * D + c; // x[i, t, c] = xr[t · 2D]
    window_before(xr, 2 * (size_t)D, t0, win);
    const float bias = cb[c];
#pragma unroll
    for (int t = t0; t < t0 + RUN; ++t) {
        if (t >= L) break;
        shift_in(win, ld(xr, (size_t)t * 2 * D));
        const float pre = bias + dot_window(wa, win);
        st(out, ((size_t)i * L + t) * D + c, pre * sigmoid_f(pre));
    }
}

// The conv's whole backward in one pass, from the gradient of its output: g, plus du (f32, the
// scan's dL/du) when given (`accumulate`: the model's own backward, one pass for both uses of the
// conv's output u). A thread walks BWD_ROWS steps of one channel of one sequence forward, with the
// window of x in registers (win[m] = x[t - m]) and that of dpre = dL/d(pre) = (g + du)·silu'(pre)
// (dwin[m] = dpre[t - m]). It computes dpre for its steps and the KW - 1 after them (the halo the
// input gradient needs; recomputed by the next thread too), writes the x half of dxz
// dx[s] = Σ_m wa[m] dpre[s + m] KW - 1 steps behind, and sums dw (as acc[m] += dpre·x[t - m],
// taps aligned as wa) and dbias over its own steps into partials (b·groups, d, k + 1), groups =
// ceil(L / BWD_ROWS), summed by the caller in a fixed order. The z half is zeroed if zero_z.
// Replaced three kernels (dpre in place, dx, dw: 24 bytes of traffic per element, 10 here);
// every value and the order of every sum are theirs, so the results are the same bit for bit
// when L is a multiple of BWD_ROWS (their dw strips were BWD_ROWS rows too).
#define BWD_ROWS 64

template <int KW, typename T>
__device__ void conv_bwd(const T* __restrict__ xz, const float* __restrict__ w,
                         const float* __restrict__ cb, const T* __restrict__ g,
                         const float* __restrict__ du, T* __restrict__ dxz, float* __restrict__ dw_part,
                         int L, int D, int K, int accumulate, int zero_z) {
    const int groups = (L + BWD_ROWS - 1) / BWD_ROWS, i = blockIdx.x / groups, t0 = (blockIdx.x % groups) * BWD_ROWS;
    const int c = blockIdx.y * blockDim.x + threadIdx.x;
    if (c >= D) return;
    float wa[KW], win[KW], dwin[KW], acc[KW + 1];
    aligned_taps(w, c, K, wa);
    const T* xr = xz + (size_t)i * L * 2 * D + c; // x[i, t, c] = xr[t · 2D]
    window_before(xr, 2 * (size_t)D, t0, win);
#pragma unroll
    for (int m = 0; m < KW; ++m) dwin[m] = 0.f;
#pragma unroll
    for (int m = 0; m <= KW; ++m) acc[m] = 0.f;
    const float bias = cb[c];
#pragma unroll
    for (int j = 0; j < BWD_ROWS + KW - 1; ++j) {
        const int t = t0 + j;
        // dpre[t], zero past the sequence (as the dx kernel's window).
        float dp = 0.f;
        if (t < L) {
            shift_in(win, ld(xr, (size_t)t * 2 * D));
            const float pre = bias + dot_window(wa, win), sg = sigmoid_f(pre);
            const size_t idx = ((size_t)i * L + t) * D + c;
            const float gu = accumulate ? ld(g, idx) + du[idx] : ld(g, idx);
            dp = gu * sg * (1.f + pre * (1.f - sg));
            if (j < BWD_ROWS) {
#pragma unroll
                for (int m = 0; m < KW; ++m) acc[m] += dp * win[m];
                acc[KW] += dp;
            }
        }
        shift_in(dwin, dp);
        // dx at s = t - (KW - 1), whose window dpre[s .. s + KW - 1] is complete now.
        const int s = t - (KW - 1);
        if (j >= KW - 1 && s < L) {
            float dx = 0.f;
#pragma unroll
            for (int m = 0; m < KW; ++m) dx += wa[m] * dwin[KW - 1 - m];
            const size_t row = (size_t)i * L + s;
            st(dxz, row * 2 * D + c, dx);
            if (zero_z) st(dxz, row * 2 * D + D + c, 0.f);
        }
    }
    // acc[m] holds Σ dpre[t]·x[t - m] = the sum for tap K - 1 - m.
    float* out = dw_part + ((size_t)blockIdx.x * D + c) * (K + 1);
#pragma unroll
    for (int m = 0; m < KW; ++m)
        if (m < K) out[K - 1 - m] = acc[m];
    out[K] = acc[KW];
}

// The x half of dxz: Σ_j w[c, j] dpre[i, t + (K-1) - j, c] = Σ_m wa[m] dpre[i, t + m, c], walking
// the run backwards with the window win[m] = dpre[t + m] (zero past the sequence); the z half set
// to zero if zero_z.
template <int KW, typename T>
__device__ void conv_dx(const float* __restrict__ dpre, const float* __restrict__ w,
                        T* __restrict__ dxz, int L, int D, int K, int zero_z) {
    const int runs = (L + RUN - 1) / RUN, i = blockIdx.x / runs, t0 = (blockIdx.x % runs) * RUN;
    const int c = blockIdx.y * blockDim.x + threadIdx.x;
    if (c >= D) return;
    float wa[KW], win[KW];
    aligned_taps(w, c, K, wa);
    const float* dr = dpre + (size_t)i * L * D + c; // dpre[i, t, c] = dr[t · D]
    // Before the run's last step: win[m] = dpre[t0 + RUN + m]. dpre is zero past the sequence, and
    // the steps past it shift in zeros too, so that every step shifts (register renames).
#pragma unroll
    for (int m = 0; m < KW; ++m) win[m] = t0 + RUN + m < L ? dr[(size_t)(t0 + RUN + m) * D] : 0.f;
#pragma unroll
    for (int j = RUN - 1; j >= 0; --j) {
        const int t = t0 + j;
        shift_in(win, t < L ? dr[(size_t)t * D] : 0.f);
        if (t >= L) continue;
        const size_t row = (size_t)i * L + t;
        st(dxz, row * 2 * D + c, dot_window(wa, win));
        if (zero_z) st(dxz, row * 2 * D + D + c, 0.f);
    }
}

// Partial dw and dbias over strips of `rows` consecutive (i, t) rows: one thread per (strip, c).
// dw_part: (n_strips, d, k + 1), the last column being dbias; the caller sums over strips. The
// accumulators are indexed by compile-time constants (the loops over KW unroll), so they stay
// in registers, and the sequence position is stepped along, not divided out per row.
template <int KW, typename T>
__device__ void conv_dw(const T* __restrict__ xz, const float* __restrict__ dpre,
                        float* __restrict__ dw_part, int B, int L, int D, int K, int rows) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= D) return;
    float acc[KW + 1];
#pragma unroll
    for (int j = 0; j <= KW; ++j) acc[j] = 0.f;
    const size_t r0 = (size_t)blockIdx.y * rows;
    const size_t r1 = min(r0 + rows, (size_t)B * L);
    int t = (int)(r0 % L);
    for (size_t r = r0; r < r1; ++r) {
        const float dp = dpre[r * D + c];
#pragma unroll
        for (int j = 0; j < KW; ++j) {
            const int tt = t - (K - 1) + j;
            if (j < K && tt >= 0) acc[j] += dp * ld(xz, (r - (K - 1) + j) * 2 * D + c);
        }
        acc[KW] += dp;
        if (++t == L) t = 0;
    }
    float* out = dw_part + ((size_t)blockIdx.y * D + c) * (K + 1);
#pragma unroll
    for (int j = 0; j < KW; ++j)
        if (j < K) out[j] = acc[j];
    out[K] = acc[KW];
}

// Kernels mixer_conv_{fwd,bwd,dx,dw}_k{KW}_{TN}: window size KW (4, or MAX_K for any K up to
// it; the host picks the smallest that holds K), IO type T.
#define CONV_KERNELS(KW, TN, T)                                                                     \
    extern "C" __global__ void mixer_conv_fwd_k##KW##_##TN(const T* xz, const float* w,            \
                                                           const float* cb, T* out, int L, int D,  \
                                                           int K) {                                \
        conv_fwd<KW, T>(xz, w, cb, out, L, D, K);                                                   \
    }                                                                                               \
    extern "C" __global__ void mixer_conv_bwd_k##KW##_##TN(const T* xz, const float* w,            \
                                                           const float* cb, const T* g,            \
                                                           const float* du, T* dxz,                \
                                                           float* dw_part, int L, int D, int K,    \
                                                           int accumulate, int zero_z) {           \
        conv_bwd<KW, T>(xz, w, cb, g, du, dxz, dw_part, L, D, K, accumulate, zero_z);               \
    }                                                                                               \
    extern "C" __global__ void mixer_conv_dx_k##KW##_##TN(const float* dpre, const float* w,       \
                                                          T* dxz, int L, int D, int K, int zero_z) { \
        conv_dx<KW, T>(dpre, w, dxz, L, D, K, zero_z);                                              \
    }                                                                                               \
    extern "C" __global__ void mixer_conv_dw_k##KW##_##TN(const T* xz, const float* dpre,          \
                                                          float* dw_part, int B, int L, int D,     \
                                                          int K, int rows) {                       \
        conv_dw<KW, T>(xz, dpre, dw_part, B, L, D, K, rows);                                        \
    }

CONV_KERNELS(4, f32, float)
CONV_KERNELS(4, bf16, __nv_bfloat16)
CONV_KERNELS(8, f32, float)
CONV_KERNELS(8, bf16, __nv_bfloat16)
