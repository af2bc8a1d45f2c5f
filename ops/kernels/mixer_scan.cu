// The mixer's selective scan on the GPU (ops/src/mixer, `mixer_scan`), one thread per
// (batch, channel): reads the in_proj output xz = [x | z]: (b, l, 2d) and delta: (b, l, d) in the
// IO type T (bf16 or f32) and writes the output and their gradients in T; all arithmetic is f32.
// The small inputs are f32: bc (b, l, 2n) = B | C, p (d, n + 2) = A_log | D | delta_bias, conv
// weight w (d, k) and bias cb (d).
//
// The math is the CPU op's (causal_conv1d/cpu.rs + selective_scan/cpu.rs on the halves of xz),
// which these kernels are tested against (tests/cuda_vs_cpu.rs). The kernels are those of
// selective_scan.cu (see there for the thread layout, the chunked backward and the deterministic
// partial sums) with two changes: the staged input u is recomputed from xz as
// silu(conv1d(x) + cb) (the kernel stages the conv's pre-activation and applies SiLU on use), and
// the backward writes dL/d(pre-activation) as f32 scratch, from which the kernels of
// mixer_conv.cu produce the x half of dxz and the conv's weight gradient.

#include "mixer_common.cuh"

#define FWD_CHUNK 32
#define BWD_CHUNK 8

template <int NP>
__device__ __forceinline__ void load_params(const float* __restrict__ p, int c, bool chan, int N,
                                            float (&a2)[NP], float& d_skip, float& d_bias) {
#pragma unroll
    for (int s = 0; s < NP; ++s) a2[s] = (chan && s < N) ? -expf(p[c * (N + 2) + s]) * LOG2E : 0.f;
    d_skip = chan ? p[c * (N + 2) + N] : 0.f;
    d_bias = chan ? p[c * (N + 2) + N + 1] : 0.f;
}

#define STAGE_PRE_DELTA 0
#define STAGE_WITH_Z 1
#define STAGE_WITH_Z_G 2

// Stages steps [t0, t0 + TT) for channels [c0, c0 + CPB) into s_in[k][j][cl] with k = the conv
// pre-activation, delta, z, g (z and g as `what` says), and B | C into s_bc, zero-padded.
template <typename T, int NP, int CPB, int TT>
__device__ __forceinline__ void stage(const T* __restrict__ xz, const T* __restrict__ delta,
                                      const T* __restrict__ g, const float* __restrict__ bc,
                                      const float* __restrict__ w, const float* __restrict__ cb,
                                      int i, int t0, int c0, int L, int D, int N, int K, int what,
                                      float (*s_in)[TT][CPB], float (*s_bc)[2 * NP]) {
    for (int q = threadIdx.x; q < TT * CPB; q += CPB) {
        const int j = q / CPB, cl = q % CPB, cc = c0 + cl, t = t0 + j;
        float pre = 0.f, dl = 0.f, z = 0.f, gt = 0.f;
        if (t < L && cc < D) {
            const size_t row = (size_t)i * L + t;
            pre = conv_pre(xz, w, cb, i, t, cc, L, D, K);
            dl = ld(delta, row * D + cc);
            if (what >= STAGE_WITH_Z) z = ld(xz, row * 2 * D + D + cc);
            if (what >= STAGE_WITH_Z_G) gt = ld(g, row * D + cc);
        }
        s_in[0][j][cl] = pre; s_in[1][j][cl] = dl; s_in[2][j][cl] = z; s_in[3][j][cl] = gt;
    }
    for (int q = threadIdx.x; q < TT * 2 * NP; q += CPB) {
        const int j = q / (2 * NP), r = q % (2 * NP), which = r / NP, s = r % NP, t = t0 + j;
        s_bc[j][r] = (t < L && s < N) ? bc[((size_t)i * L + t) * 2 * N + which * N + s] : 0.f;
    }
}

template <int NP, int O>
__device__ __forceinline__ void butterfly(float (&v)[NP], int lane) {
    if constexpr (O >= 1) {
        const bool upper = lane & O;
#pragma unroll
        for (int k = 0; k < O; ++k) {
            const float send = upper ? v[k] : v[k + O];
            const float keep = upper ? v[k + O] : v[k];
            v[k] = keep + __shfl_xor_sync(0xffffffffu, send, O);
        }
        butterfly<NP, O / 2>(v, lane);
    }
}

template <int NP>
__device__ __forceinline__ float warp_sum_spread(float (&v)[NP]) {
    butterfly<NP, NP / 2>(v, threadIdx.x & 31);
    float r = v[0];
#pragma unroll
    for (int o = NP; o < 32; o *= 2) r += __shfl_xor_sync(0xffffffffu, r, o);
    return r;
}

template <typename T, int NP, int CPB>
__device__ void scan_fwd(const T* __restrict__ xz, const T* __restrict__ delta,
                         const float* __restrict__ bc, const float* __restrict__ p,
                         const float* __restrict__ w, const float* __restrict__ cb,
                         T* __restrict__ out, int L, int D, int N, int K) {
    __shared__ float s_in[4][FWD_CHUNK][CPB];
    __shared__ float s_bc[FWD_CHUNK][2 * NP];
    const int cl = threadIdx.x, c0 = blockIdx.x * CPB, c = c0 + cl, i = blockIdx.y;
    const bool chan = c < D;
    float a2[NP], d_skip, d_bias;
    load_params<NP>(p, c, chan, N, a2, d_skip, d_bias);
    float h[NP];
#pragma unroll
    for (int s = 0; s < NP; ++s) h[s] = 0.f;
    for (int t0 = 0; t0 < L; t0 += FWD_CHUNK) {
        __syncthreads();
        stage<T, NP, CPB, FWD_CHUNK>(xz, delta, (const T*)nullptr, bc, w, cb, i, t0, c0, L, D, N, K,
                                     STAGE_WITH_Z, s_in, s_bc);
        __syncthreads();
        const int steps = min(FWD_CHUNK, L - t0);
        for (int j = 0; j < steps; ++j) {
            const float pre = s_in[0][j][cl], u = pre * sigmoid_f(pre), z = s_in[2][j][cl];
            const float dt = softplus_f(s_in[1][j][cl] + d_bias), dtu = dt * u;
            float y = 0.f;
#pragma unroll
            for (int s = 0; s < NP; ++s) {
                h[s] = exp2f(dt * a2[s]) * h[s] + dtu * s_bc[j][s];
                y += s_bc[j][NP + s] * h[s];
            }
            if (chan) st(out, ((size_t)i * L + t0 + j) * D + c, (y + d_skip * u) * (z * sigmoid_f(z)));
        }
    }
}

// Writes: the z half of dxz, ddelta, dpre (f32, (b, l, d)), dbc_part (b, gridDim.x, l, 2n),
// dp_part (b, d, n + 2). states: (b, n_chunks, NP, d) scratch.
template <typename T, int NP, int CPB>
__device__ void scan_bwd(const T* __restrict__ xz, const T* __restrict__ delta,
                         const float* __restrict__ bc, const float* __restrict__ p,
                         const float* __restrict__ w, const float* __restrict__ cb,
                         const T* __restrict__ g, T* __restrict__ dxz, T* __restrict__ ddelta_out,
                         float* __restrict__ dpre, float* __restrict__ dbc_part,
                         float* __restrict__ dp_part, float* __restrict__ states, int L, int D,
                         int N, int K) {
    constexpr int TT = BWD_CHUNK, WARPS = CPB / 32;
    __shared__ float s_in[4][TT][CPB];          // conv pre-activation, delta, z, g
    __shared__ float s_bc[TT][2 * NP];          // B | C
    __shared__ float s_h[TT + 1][NP][CPB];      // h before the chunk, then after each step
    __shared__ float s_part[TT][WARPS][2 * NP]; // per-warp sums of dB | dC
    const int cl = threadIdx.x, c0 = blockIdx.x * CPB, c = c0 + cl, i = blockIdx.y;
    const int warp = cl / 32, lane = cl % 32;
    const bool chan = c < D;
    const int n_chunks = (L + TT - 1) / TT;
    float a2[NP], d_skip, d_bias;
    load_params<NP>(p, c, chan, N, a2, d_skip, d_bias);
    float* my_states = states + (size_t)i * n_chunks * NP * D + c; // + (k·NP + s)·D

    // Pass 1: the recurrence, saving h before each chunk.
    float h[NP];
#pragma unroll
    for (int s = 0; s < NP; ++s) h[s] = 0.f;
    for (int k = 0; k < n_chunks; ++k) {
        const int t0 = k * TT, steps = min(TT, L - t0);
        __syncthreads();
        stage<T, NP, CPB, TT>(xz, delta, g, bc, w, cb, i, t0, c0, L, D, N, K, STAGE_PRE_DELTA, s_in, s_bc);
        __syncthreads();
        if (chan) {
#pragma unroll
            for (int s = 0; s < NP; ++s) my_states[((size_t)k * NP + s) * D] = h[s];
        }
        for (int j = 0; j < steps; ++j) {
            const float pre = s_in[0][j][cl], u = pre * sigmoid_f(pre);
            const float dt = softplus_f(s_in[1][j][cl] + d_bias), dtu = dt * u;
#pragma unroll
            for (int s = 0; s < NP; ++s) h[s] = exp2f(dt * a2[s]) * h[s] + dtu * s_bc[j][s];
        }
    }

    // Pass 2: chunks backwards. carry[s] = dL/dh_{t+1}[s] · exp(dt_{t+1} A[s]).
    float carry[NP], d_a[NP];
#pragma unroll
    for (int s = 0; s < NP; ++s) { carry[s] = 0.f; d_a[s] = 0.f; }
    float acc_dskip = 0.f, acc_dbias = 0.f;
    for (int k = n_chunks - 1; k >= 0; --k) {
        const int t0 = k * TT, steps = min(TT, L - t0);
        __syncthreads();
        stage<T, NP, CPB, TT>(xz, delta, g, bc, w, cb, i, t0, c0, L, D, N, K, STAGE_WITH_Z_G, s_in, s_bc);
#pragma unroll
        for (int s = 0; s < NP; ++s) h[s] = chan ? my_states[((size_t)k * NP + s) * D] : 0.f;
        __syncthreads();
#pragma unroll
        for (int s = 0; s < NP; ++s) s_h[0][s][cl] = h[s];
        for (int j = 0; j < steps; ++j) {
            const float pre = s_in[0][j][cl], u = pre * sigmoid_f(pre);
            const float dt = softplus_f(s_in[1][j][cl] + d_bias), dtu = dt * u;
#pragma unroll
            for (int s = 0; s < NP; ++s) {
                h[s] = exp2f(dt * a2[s]) * h[s] + dtu * s_bc[j][s];
                s_h[j + 1][s][cl] = h[s];
            }
        }
        for (int j = steps - 1; j >= 0; --j) {
            const float pre_c = s_in[0][j][cl], sgc = sigmoid_f(pre_c), u = pre_c * sgc;
            const float z = s_in[2][j][cl], gt = s_in[3][j][cl];
            const float pre = s_in[1][j][cl] + d_bias, dt = softplus_f(pre);
            const float sz = sigmoid_f(z), gy = gt * z * sz;
            float ddt = 0.f, du = 0.f, y = 0.f, db[NP], dc[NP];
#pragma unroll
            for (int s = 0; s < NP; ++s) {
                const float hprev = s_h[j][s][cl], hcur = s_h[j + 1][s][cl];
                const float bs = s_bc[j][s], cs = s_bc[j][NP + s];
                const float e = exp2f(dt * a2[s]), a = a2[s] * LN2;
                const float ah = gy * cs + carry[s];
                ddt += ah * (a * e * hprev + bs * u);
                du += ah * bs;
                d_a[s] += ah * dt * e * hprev;
                carry[s] = ah * e;
                y += cs * hcur;
                db[s] = ah * dt * u;
                dc[s] = gy * hcur;
            }
            const float db_sum = warp_sum_spread<NP>(db), dc_sum = warp_sum_spread<NP>(dc);
            if (lane < NP) { s_part[j][warp][lane] = db_sum; s_part[j][warp][NP + lane] = dc_sum; }
            if (chan) {
                const size_t row = (size_t)i * L + t0 + j;
                const float ddelta = ddt * sigmoid_f(pre);
                const float du_total = du * dt + gy * d_skip;
                dpre[row * D + c] = du_total * sgc * (1.f + pre_c * (1.f - sgc));
                st(ddelta_out, row * D + c, ddelta);
                st(dxz, row * 2 * D + D + c, gt * (y + d_skip * u) * sz * (1.f + z * (1.f - sz)));
                acc_dskip += gy * u;
                acc_dbias += ddelta;
            }
        }
        __syncthreads();
        float* part = dbc_part + ((size_t)i * gridDim.x + blockIdx.x) * L * 2 * N;
        for (int q = threadIdx.x; q < steps * 2 * NP; q += CPB) {
            const int j = q / (2 * NP), r = q % (2 * NP), which = r / NP, s = r % NP;
            if (s >= N) continue;
            float acc = 0.f;
            for (int ww = 0; ww < WARPS; ++ww) acc += s_part[j][ww][r];
            part[(size_t)(t0 + j) * 2 * N + which * N + s] = acc;
        }
    }
    if (chan) {
        float* dp = dp_part + ((size_t)i * D + c) * (N + 2);
#pragma unroll
        for (int s = 0; s < NP; ++s)
            if (s < N) dp[s] = d_a[s] * a2[s] * LN2;
        dp[N] = acc_dskip;
        dp[N + 1] = acc_dbias;
    }
}

#define SCAN_KERNELS(TN, T, NP, CPB)                                                                \
    extern "C" __global__ void __launch_bounds__(CPB) mixer_scan_fwd_##TN##_n##NP(                  \
        const T* xz, const T* delta, const float* bc, const float* p, const float* w,              \
        const float* cb, T* out, int L, int D, int N, int K) {                                      \
        scan_fwd<T, NP, CPB>(xz, delta, bc, p, w, cb, out, L, D, N, K);                             \
    }                                                                                               \
    extern "C" __global__ void __launch_bounds__(CPB) mixer_scan_bwd_##TN##_n##NP(                  \
        const T* xz, const T* delta, const float* bc, const float* p, const float* w,              \
        const float* cb, const T* g, T* dxz, T* ddelta, float* dpre, float* dbc_part,              \
        float* dp_part, float* states, int L, int D, int N, int K) {                                \
        scan_bwd<T, NP, CPB>(xz, delta, bc, p, w, cb, g, dxz, ddelta, dpre, dbc_part, dp_part,      \
                             states, L, D, N, K);                                                   \
    }

SCAN_KERNELS(f32, float, 4, 64)
SCAN_KERNELS(f32, float, 8, 64)
SCAN_KERNELS(f32, float, 16, 64)
SCAN_KERNELS(f32, float, 32, 32)
SCAN_KERNELS(bf16, __nv_bfloat16, 4, 64)
SCAN_KERNELS(bf16, __nv_bfloat16, 8, 64)
SCAN_KERNELS(bf16, __nv_bfloat16, 16, 64)
SCAN_KERNELS(bf16, __nv_bfloat16, 32, 32)
