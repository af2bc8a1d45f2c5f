// The mixer's selective scan on the GPU (ops/src/mixer, `mixer_scan`), one thread per (batch,
// channel, state). It reads the in_proj output xz = [x | z]: (b, l, 2d) and delta: (b, l, d) in
// the IO type T (bf16 or f32) and writes the output and their gradients in T; all arithmetic is
// f32. The small inputs are f32: bc (b, l, 2n) = B | C, p (d, n + 2) = A_log | D | delta_bias,
// conv weight w (d, k) and bias cb (d). The math is the CPU op's (causal_conv1d/cpu.rs +
// selective_scan/cpu.rs on the halves of xz), which these kernels are tested against
// (tests/cuda_vs_cpu.rs).
//
// Layout, for occupancy: selective_scan.cu keeps all NP states of a channel in one thread: b·d
// threads (24.6k for the 130m model at micro-batch 16), a few warps per SM, each a long
// dependent chain. Here a channel's NP states are NP consecutive lanes (b·d·NP threads, 393k),
// and the sums over states (the output y, and in the backward dL/dΔ, dL/du and y again) are
// butterfly shuffles within those lanes. With one thread per channel this op ran the model at
// 52.6k tokens/s, with one per state at 59.3k (micro-batch 16, H200; docs/benchmarks.md, fourth
// round).
//
// The input u is recomputed from xz as silu(conv1d(x) + cb), so neither u nor a packed copy of
// the inputs is stored for the backward; the backward writes dL/d(pre-activation) as f32 scratch,
// from which the kernels of mixer_conv.cu produce the x half of dxz and the conv's weight
// gradient.
//
// Block: CH = 512 / NP channels × NP states. Per chunk of time steps the block stages, once per
// (step, channel), u = silu(conv1d(x) + cb), dt = softplus(delta + delta_bias), and what the pass
// needs of z and g, into shared memory (coalesced: consecutive threads read consecutive channels),
// and B | C per (step, state).
//
// Forward: the recurrence per thread; y summed over the state lanes into shared memory; after the
// chunk the block writes out = (y + D u) silu(z) for the chunk, coalesced.
// Backward (like the reference kernel, never storing all states): pass 1 saves each thread's state
// at every chunk boundary (BWD_CHUNK steps) to global scratch; pass 2 walks the chunks backwards,
// recomputes the chunk's states in registers and runs the adjoint recurrence. dB and dC (sums over
// channels) are summed over the lanes of one state in a warp, then over the block's warps in a
// fixed order into per-block partials; dA_log per thread, D and delta_bias per channel into
// per-batch partials. The per-(step, channel) gradients of a chunk are written by the whole block
// after its adjoint loop. The caller sums the partials in a fixed order: deterministic.

#include "mixer_common.cuh"

#define SCAN_THREADS 512
// Forward chunk: 32 steps, 16 where a block has 64 or more channels (shared memory).
#define FWD_CHUNK(NP) ((NP) >= 16 ? 32 : 16)
#define BWD_CHUNK 8

// Sum of v over the NP consecutive lanes of one channel (every lane gets the sum).
template <int NP>
__device__ __forceinline__ float state_sum(float v) {
#pragma unroll
    for (int o = NP / 2; o >= 1; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// Sum of v over the lanes of this warp that hold the same state (32 / NP channels).
template <int NP>
__device__ __forceinline__ float channel_sum_in_warp(float v) {
#pragma unroll
    for (int o = NP; o < 32; o *= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

template <typename T, int NP>
__device__ void scan_fwd(const T* __restrict__ xz, const T* __restrict__ delta,
                            const float* __restrict__ bc, const float* __restrict__ p,
                            const float* __restrict__ w, const float* __restrict__ cb,
                            T* __restrict__ out, int L, int D, int N, int K) {
    constexpr int CH = SCAN_THREADS / NP, TT = FWD_CHUNK(NP);
    __shared__ float s_u[TT][CH], s_dt[TT][CH], s_z[TT][CH], s_y[TT][CH];
    __shared__ float s_bc[TT][2 * NP];
    const int tid = threadIdx.x, s = tid % NP, cl = tid / NP;
    const int c0 = blockIdx.x * CH, c = c0 + cl, i = blockIdx.y;
    const bool live = c < D && s < N;
    const float a2 = live ? -expf(p[c * (N + 2) + s]) * LOG2E : 0.f;
    float h = 0.f;
    for (int t0 = 0; t0 < L; t0 += TT) {
        const int steps = min(TT, L - t0);
        __syncthreads();
        for (int q = tid; q < TT * CH; q += SCAN_THREADS) {
            const int j = q / CH, ql = q % CH, cc = c0 + ql, t = t0 + j;
            float u = 0.f, dt = 0.f, z = 0.f;
            if (t < L && cc < D) {
                const size_t row = (size_t)i * L + t;
                const float pre = conv_pre(xz, w, cb, i, t, cc, L, D, K);
                u = pre * sigmoid_f(pre);
                dt = softplus_f(ld(delta, row * D + cc) + p[cc * (N + 2) + N + 1]);
                z = ld(xz, row * 2 * D + D + cc);
            }
            s_u[j][ql] = u; s_dt[j][ql] = dt; s_z[j][ql] = z;
        }
        for (int q = tid; q < TT * 2 * NP; q += SCAN_THREADS) {
            const int j = q / (2 * NP), r = q % (2 * NP), which = r / NP, ss = r % NP, t = t0 + j;
            s_bc[j][r] = (t < L && ss < N) ? bc[((size_t)i * L + t) * 2 * N + which * N + ss] : 0.f;
        }
        __syncthreads();
        for (int j = 0; j < steps; ++j) {
            const float dt = s_dt[j][cl];
            h = exp2f(dt * a2) * h + dt * s_u[j][cl] * s_bc[j][s];
            const float y = state_sum<NP>(s_bc[j][NP + s] * h);
            if (s == 0) s_y[j][cl] = y;
        }
        __syncthreads();
        for (int q = tid; q < steps * CH; q += SCAN_THREADS) {
            const int j = q / CH, ql = q % CH, cc = c0 + ql;
            if (cc < D) {
                const float z = s_z[j][ql];
                const float y = s_y[j][ql] + p[cc * (N + 2) + N] * s_u[j][ql];
                st(out, ((size_t)i * L + t0 + j) * D + cc, y * (z * sigmoid_f(z)));
            }
        }
    }
}

// Writes: the z half of dxz, ddelta, dpre (f32 (b, l, d)), dbc_part (b, gridDim.x, l, 2n),
// dp_part (b, d, n + 2). states: (b, n_chunks, d, NP) scratch.
template <typename T, int NP>
__device__ void scan_bwd(const T* __restrict__ xz, const T* __restrict__ delta,
                            const float* __restrict__ bc, const float* __restrict__ p,
                            const float* __restrict__ w, const float* __restrict__ cb,
                            const T* __restrict__ g, T* __restrict__ dxz, T* __restrict__ ddelta_out,
                            float* __restrict__ dpre, float* __restrict__ dbc_part,
                            float* __restrict__ dp_part, float* __restrict__ states, int L, int D,
                            int N, int K) {
    constexpr int CH = SCAN_THREADS / NP, TT = BWD_CHUNK, WARPS = SCAN_THREADS / 32;
    // Per (step, channel): u, dt, silu'(conv pre-activation), sigmoid(delta + bias), z, g,
    // gy = dL/dy = g·silu(z); then the adjoint's sums over states: dL/du (before ·dt), dL/ddt, y.
    __shared__ float s_u[TT][CH], s_dt[TT][CH], s_dsl[TT][CH], s_sdt[TT][CH], s_z[TT][CH], s_g[TT][CH];
    __shared__ float s_gy[TT][CH];
    __shared__ float s_du[TT][CH], s_ddt[TT][CH], s_y[TT][CH];
    __shared__ float s_bc[TT][2 * NP];
    __shared__ float s_part[TT][WARPS][2 * NP]; // per-warp sums of dB | dC
    const int tid = threadIdx.x, s = tid % NP, cl = tid / NP, warp = tid / 32, lane = tid % 32;
    const int c0 = blockIdx.x * CH, c = c0 + cl, i = blockIdx.y;
    const bool live = c < D && s < N;
    const int n_chunks = (L + TT - 1) / TT;
    const float a2 = live ? -expf(p[c * (N + 2) + s]) * LOG2E : 0.f, a = a2 * LN2;
    float* my_states = states + ((size_t)i * n_chunks * D + c) * NP + s; // + k·D·NP

    // Stages chunk k's per-(step, channel) values (with_g: also z and g) and B | C.
    auto stage = [&](int k, bool with_g) {
        const int t0 = k * TT;
        for (int q = tid; q < TT * CH; q += SCAN_THREADS) {
            const int j = q / CH, ql = q % CH, cc = c0 + ql, t = t0 + j;
            float u = 0.f, dt = 0.f, dsl = 0.f, sdt = 0.f, z = 0.f, gt = 0.f;
            if (t < L && cc < D) {
                const size_t row = (size_t)i * L + t;
                const float pre = conv_pre(xz, w, cb, i, t, cc, L, D, K), sg = sigmoid_f(pre);
                u = pre * sg;
                dsl = sg * (1.f + pre * (1.f - sg));
                const float pd = ld(delta, row * D + cc) + p[cc * (N + 2) + N + 1];
                dt = softplus_f(pd);
                sdt = sigmoid_f(pd);
                if (with_g) { z = ld(xz, row * 2 * D + D + cc); gt = ld(g, row * D + cc); }
            }
            s_u[j][ql] = u; s_dt[j][ql] = dt; s_dsl[j][ql] = dsl; s_sdt[j][ql] = sdt;
            s_z[j][ql] = z; s_g[j][ql] = gt; s_gy[j][ql] = gt * z * sigmoid_f(z);
        }
        for (int q = tid; q < TT * 2 * NP; q += SCAN_THREADS) {
            const int j = q / (2 * NP), r = q % (2 * NP), which = r / NP, ss = r % NP, t = t0 + j;
            s_bc[j][r] = (t < L && ss < N) ? bc[((size_t)i * L + t) * 2 * N + which * N + ss] : 0.f;
        }
    };

    // Pass 1: the recurrence, saving h before each TT-step chunk. It needs only u, dt and B, so
    // with NP >= 16 (at most 32 channels per block) it stages P1 = 32 steps at a time into arrays
    // of its own: a quarter of the staging rounds and barriers. With more channels per block the
    // shared memory is not there; it reuses the TT-step arrays.
    constexpr int P1 = NP >= 16 ? 32 : TT;
    constexpr bool OWN = P1 != TT;
    __shared__ float s1_u[OWN ? P1 : 1][OWN ? CH : 1], s1_dt[OWN ? P1 : 1][OWN ? CH : 1];
    __shared__ float s1_b[OWN ? P1 : 1][NP];
    float h = 0.f;
    for (int t0 = 0; t0 < L; t0 += P1) {
        const int steps = min(P1, L - t0);
        __syncthreads();
        if constexpr (OWN) {
            for (int q = tid; q < P1 * CH; q += SCAN_THREADS) {
                const int j = q / CH, ql = q % CH, cc = c0 + ql, t = t0 + j;
                float u = 0.f, dt = 0.f;
                if (t < L && cc < D) {
                    const float pre = conv_pre(xz, w, cb, i, t, cc, L, D, K);
                    u = pre * sigmoid_f(pre);
                    dt = softplus_f(ld(delta, ((size_t)i * L + t) * D + cc) + p[cc * (N + 2) + N + 1]);
                }
                s1_u[j][ql] = u; s1_dt[j][ql] = dt;
            }
            for (int q = tid; q < P1 * NP; q += SCAN_THREADS) {
                const int j = q / NP, ss = q % NP, t = t0 + j;
                s1_b[j][ss] = (t < L && ss < N) ? bc[((size_t)i * L + t) * 2 * N + ss] : 0.f;
            }
        } else {
            stage(t0 / TT, false);
        }
        __syncthreads();
        for (int j = 0; j < steps; ++j) {
            if (j % TT == 0 && c < D) my_states[(size_t)((t0 + j) / TT) * D * NP] = h;
            float dt, u, b;
            if constexpr (OWN) {
                dt = s1_dt[j][cl]; u = s1_u[j][cl]; b = s1_b[j][s];
            } else {
                dt = s_dt[j][cl]; u = s_u[j][cl]; b = s_bc[j][s];
            }
            h = exp2f(dt * a2) * h + dt * u * b;
        }
    }

    // Pass 2: chunks backwards. carry = dL/dh_{t+1} · exp(dt_{t+1} A).
    float carry = 0.f, d_a = 0.f, acc_dskip = 0.f, acc_dbias = 0.f;
    for (int k = n_chunks - 1; k >= 0; --k) {
        const int t0 = k * TT, steps = min(TT, L - t0);
        __syncthreads();
        stage(k, true);
        __syncthreads();
        // Recompute the chunk's states: hs[j] = h after step t0 + j; h0 = h before the chunk.
        const float h0 = c < D ? my_states[(size_t)k * D * NP] : 0.f;
        float hs[TT];
        h = h0;
#pragma unroll
        for (int j = 0; j < TT; ++j) {
            if (j < steps) {
                const float dt = s_dt[j][cl];
                h = exp2f(dt * a2) * h + dt * s_u[j][cl] * s_bc[j][s];
            }
            hs[j] = h;
        }
        // The adjoint recurrence over the chunk, last step first.
#pragma unroll
        for (int j = TT - 1; j >= 0; --j) {
            if (j < steps) {
                const float u = s_u[j][cl], dt = s_dt[j][cl], gy = s_gy[j][cl];
                const float hprev = j > 0 ? hs[j - 1] : h0, hcur = hs[j];
                const float bs = s_bc[j][s], cs = s_bc[j][NP + s];
                const float e = exp2f(dt * a2);
                const float ah = gy * cs + carry;
                const float ddt = state_sum<NP>(ah * (a * e * hprev + bs * u));
                const float du = state_sum<NP>(ah * bs);
                const float y = state_sum<NP>(cs * hcur);
                d_a += ah * dt * e * hprev;
                carry = ah * e;
                const float db = channel_sum_in_warp<NP>(ah * dt * u);
                const float dc = channel_sum_in_warp<NP>(gy * hcur);
                if (lane < NP) { s_part[j][warp][s] = db; s_part[j][warp][NP + s] = dc; }
                if (s == 0) { s_du[j][cl] = du; s_ddt[j][cl] = ddt; s_y[j][cl] = y; }
            }
        }
        __syncthreads();
        // Per (step, channel) gradients, all threads, coalesced over channels. The D and
        // delta_bias terms go to shared memory and are summed per channel below in step order.
        for (int q = tid; q < steps * CH; q += SCAN_THREADS) {
            const int j = q / CH, ql = q % CH, cc = c0 + ql;
            const size_t row = (size_t)i * L + t0 + j;
            const float u = s_u[j][ql], z = s_z[j][ql], gt = s_g[j][ql], gy = s_gy[j][ql];
            const float sz = sigmoid_f(z);
            const float dsk = cc < D ? p[cc * (N + 2) + N] : 0.f;
            const float ddelta = s_ddt[j][ql] * s_sdt[j][ql];
            if (cc < D) {
                dpre[row * D + cc] = (s_du[j][ql] * s_dt[j][ql] + gy * dsk) * s_dsl[j][ql];
                st(ddelta_out, row * D + cc, ddelta);
                st(dxz, row * 2 * D + D + cc, gt * (s_y[j][ql] + dsk * u) * sz * (1.f + z * (1.f - sz)));
            }
            s_du[j][ql] = gy * u;   // reused: this step's D term
            s_ddt[j][ql] = ddelta;  // reused: this step's delta_bias term
        }
        __syncthreads();
        if (tid < CH) {
            for (int j = steps - 1; j >= 0; --j) {
                acc_dskip += s_du[j][tid];
                acc_dbias += s_ddt[j][tid];
            }
        }
        // Sum dB, dC over the block's warps in warp order; one partial per block.
        float* part = dbc_part + ((size_t)i * gridDim.x + blockIdx.x) * L * 2 * N;
        for (int q = tid; q < steps * 2 * NP; q += SCAN_THREADS) {
            const int j = q / (2 * NP), r = q % (2 * NP), which = r / NP, ss = r % NP;
            if (ss >= N) continue;
            float acc = 0.f;
            for (int ww = 0; ww < WARPS; ++ww) acc += s_part[j][ww][r];
            part[(size_t)(t0 + j) * 2 * N + which * N + ss] = acc;
        }
    }
    if (live) dp_part[((size_t)i * D + c) * (N + 2) + s] = d_a * a;
    if (tid < CH && c0 + tid < D) {
        float* dp = dp_part + ((size_t)i * D + c0 + tid) * (N + 2);
        dp[N] = acc_dskip;
        dp[N + 1] = acc_dbias;
    }
}

#define SCAN_KERNELS(TN, T, NP)                                                                  \
    extern "C" __global__ void __launch_bounds__(SCAN_THREADS, 2) mixer_scan_fwd_##TN##_n##NP(        \
        const T* xz, const T* delta, const float* bc, const float* p, const float* w,              \
        const float* cb, T* out, int L, int D, int N, int K) {                                      \
        scan_fwd<T, NP>(xz, delta, bc, p, w, cb, out, L, D, N, K);                               \
    }                                                                                               \
    extern "C" __global__ void __launch_bounds__(SCAN_THREADS, 2) mixer_scan_bwd_##TN##_n##NP(        \
        const T* xz, const T* delta, const float* bc, const float* p, const float* w,              \
        const float* cb, const T* g, T* dxz, T* ddelta, float* dpre, float* dbc_part,              \
        float* dp_part, float* states, int L, int D, int N, int K) {                                \
        scan_bwd<T, NP>(xz, delta, bc, p, w, cb, g, dxz, ddelta, dpre, dbc_part, dp_part,        \
                           states, L, D, N, K);                                                     \
    }

SCAN_KERNELS(f32, float, 4)
SCAN_KERNELS(f32, float, 8)
SCAN_KERNELS(f32, float, 16)
SCAN_KERNELS(f32, float, 32)
SCAN_KERNELS(bf16, __nv_bfloat16, 4)
SCAN_KERNELS(bf16, __nv_bfloat16, 8)
SCAN_KERNELS(bf16, __nv_bfloat16, 16)
SCAN_KERNELS(bf16, __nv_bfloat16, 32)
