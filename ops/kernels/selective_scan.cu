// Selective scan on the GPU, f32, over the packed channel-last layout of
// ops/src/selective_scan/mod.rs:
//   x:  (b, l, 3d)  u | delta | z        bc: (b, l, 2n)  B | C        p: (d, n + 2)  A_log | D | delta_bias
// The math is the CPU op's (ops/src/selective_scan/cpu.rs), which these kernels are tested against.
//
// Thread layout (like the reference kernel's "one channel per thread row", state in registers):
// one thread per (batch i, channel c), all NP states of the channel in registers; a block holds
// CPB consecutive channels of one batch element. Per-step quantities of the channel (softplus,
// sigmoid, the D skip, the gate) are computed once, not once per state. NP is the state size
// rounded up to 4, 8, 16 or 32 (compile-time, so the state loops unroll); padded states have
// A = B = C = 0 and stay exactly zero.
//
// Inputs are staged chunk by chunk in shared memory with coalesced loads by the whole block
// (the block's channels are consecutive), so the sequential loops over time read shared memory.
//
// Backward, like the reference kernel, never stores all states: pass 1 runs the recurrence and
// saves the state at every chunk boundary (BWD_CHUNK steps) to global scratch; pass 2 walks the
// chunks backwards, recomputes the chunk's states into shared memory and runs the adjoint
// recurrence. dB and dC (sums over channels) are reduced across each warp with a transposing
// butterfly, then over the block's warps in shared memory, and written as per-block partials;
// dA_log, D and delta_bias as per-batch partials. The caller sums the partials in a fixed order,
// so the backward is deterministic.

#define FWD_CHUNK 32
#define BWD_CHUNK 8
#define LOG2E 1.4426950408889634f
#define LN2 0.6931471805599453f

__device__ __forceinline__ float softplus_f(float x) { return x > 20.f ? x : log1pf(expf(x)); }
__device__ __forceinline__ float sigmoid_f(float x) { return 1.f / (1.f + expf(-x)); }

// The channel's parameters: a2[s] = A[s]·log2(e) with A = -exp(A_log) (so exp(dt·A) = exp2(dt·a2)),
// zero for padded states and for threads past the last channel.
template <int NP>
__device__ __forceinline__ void load_params(const float* __restrict__ p, int c, bool chan, int N,
                                            float (&a2)[NP], float& d_skip, float& d_bias) {
#pragma unroll
    for (int s = 0; s < NP; ++s) a2[s] = (chan && s < N) ? -expf(p[c * (N + 2) + s]) * LOG2E : 0.f;
    d_skip = chan ? p[c * (N + 2) + N] : 0.f;
    d_bias = chan ? p[c * (N + 2) + N + 1] : 0.f;
}

// What a pass reads: u and delta; also z; also z and the output gradient g.
#define STAGE_U_DELTA 0
#define STAGE_WITH_Z 1
#define STAGE_WITH_Z_G 2

// Stages steps [t0, t0 + T) of u, delta (z, g as `what` says) for channels [c0, c0 + CPB) into
// s_in[k][j][cl] (k = u, delta, z, g), and B | C into s_bc[j][0..NP) | [NP..2NP), zero-padded.
template <int NP, int CPB, int T>
__device__ __forceinline__ void stage(const float* __restrict__ x, const float* __restrict__ bc,
                                      const float* __restrict__ g, int i, int t0, int c0, int L,
                                      int D, int N, int what, float (*s_in)[T][CPB],
                                      float (*s_bc)[2 * NP]) {
    for (int q = threadIdx.x; q < T * CPB; q += CPB) {
        const int j = q / CPB, cl = q % CPB, cc = c0 + cl, t = t0 + j;
        float u = 0.f, dl = 0.f, z = 0.f, gt = 0.f;
        if (t < L && cc < D) {
            const size_t row = (size_t)i * L + t;
            u = x[row * 3 * D + cc];
            dl = x[row * 3 * D + D + cc];
            if (what >= STAGE_WITH_Z) z = x[row * 3 * D + 2 * D + cc];
            if (what >= STAGE_WITH_Z_G) gt = g[row * D + cc];
        }
        s_in[0][j][cl] = u; s_in[1][j][cl] = dl; s_in[2][j][cl] = z; s_in[3][j][cl] = gt;
    }
    for (int q = threadIdx.x; q < T * 2 * NP; q += CPB) {
        const int j = q / (2 * NP), r = q % (2 * NP), which = r / NP, s = r % NP, t = t0 + j;
        s_bc[j][r] = (t < L && s < N) ? bc[((size_t)i * L + t) * 2 * N + which * N + s] : 0.f;
    }
}

// One stage of the transposing butterfly (below): lanes with bit O set keep the upper half of
// their O·2 live values, the others the lower half; each adds its partner's copy of the half it
// keeps. Recursive so that every index is a compile-time constant (the array stays in registers).
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

// Sums NP values over the 32 lanes of a warp; afterwards lane `l` holds the sum of value
// `l % NP`. NP - 1 shuffles for the butterfly instead of 5·NP for NP separate reductions.
template <int NP>
__device__ __forceinline__ float warp_sum_spread(float (&v)[NP]) {
    butterfly<NP, NP / 2>(v, threadIdx.x & 31);
    float r = v[0];
#pragma unroll
    for (int o = NP; o < 32; o *= 2) r += __shfl_xor_sync(0xffffffffu, r, o);
    return r;
}

template <int NP, int CPB>
__device__ void scan_fwd(const float* __restrict__ x, const float* __restrict__ bc,
                         const float* __restrict__ p, float* __restrict__ out, int L, int D, int N) {
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
        stage<NP, CPB, FWD_CHUNK>(x, bc, nullptr, i, t0, c0, L, D, N, STAGE_WITH_Z, s_in, s_bc);
        __syncthreads();
        const int steps = min(FWD_CHUNK, L - t0);
        for (int j = 0; j < steps; ++j) {
            const float u = s_in[0][j][cl], z = s_in[2][j][cl];
            const float dt = softplus_f(s_in[1][j][cl] + d_bias), dtu = dt * u;
            float y = 0.f;
#pragma unroll
            for (int s = 0; s < NP; ++s) {
                h[s] = exp2f(dt * a2[s]) * h[s] + dtu * s_bc[j][s];
                y += s_bc[j][NP + s] * h[s];
            }
            if (chan) out[((size_t)i * L + t0 + j) * D + c] = (y + d_skip * u) * (z * sigmoid_f(z));
        }
    }
}

// dx: (b, l, 3d) written in full. dbc_part: (b, gridDim.x, l, 2n) per-block partial sums.
// dp_part: (b, d, n + 2) per-batch partial sums. states: (b, n_chunks, NP, d) scratch.
template <int NP, int CPB>
__device__ void scan_bwd(const float* __restrict__ x, const float* __restrict__ bc,
                         const float* __restrict__ p, const float* __restrict__ g,
                         float* __restrict__ dx, float* __restrict__ dbc_part,
                         float* __restrict__ dp_part, float* __restrict__ states, int L, int D,
                         int N) {
    constexpr int T = BWD_CHUNK, WARPS = CPB / 32;
    __shared__ float s_in[4][T][CPB];        // u, delta, z, g
    __shared__ float s_bc[T][2 * NP];        // B | C
    __shared__ float s_h[T + 1][NP][CPB];    // h before the chunk, then after each step
    __shared__ float s_part[T][WARPS][2 * NP]; // per-warp sums of dB | dC
    const int cl = threadIdx.x, c0 = blockIdx.x * CPB, c = c0 + cl, i = blockIdx.y;
    const int warp = cl / 32, lane = cl % 32;
    const bool chan = c < D;
    const int n_chunks = (L + T - 1) / T;
    float a2[NP], d_skip, d_bias;
    load_params<NP>(p, c, chan, N, a2, d_skip, d_bias);
    float* my_states = states + (size_t)i * n_chunks * NP * D + c; // + (k·NP + s)·D

    // Pass 1: the recurrence, saving h before each chunk.
    float h[NP];
#pragma unroll
    for (int s = 0; s < NP; ++s) h[s] = 0.f;
    for (int k = 0; k < n_chunks; ++k) {
        const int t0 = k * T, steps = min(T, L - t0);
        __syncthreads();
        stage<NP, CPB, T>(x, bc, g, i, t0, c0, L, D, N, STAGE_U_DELTA, s_in, s_bc);
        __syncthreads();
        if (chan) {
#pragma unroll
            for (int s = 0; s < NP; ++s) my_states[((size_t)k * NP + s) * D] = h[s];
        }
        for (int j = 0; j < steps; ++j) {
            const float dt = softplus_f(s_in[1][j][cl] + d_bias), dtu = dt * s_in[0][j][cl];
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
        const int t0 = k * T, steps = min(T, L - t0);
        __syncthreads();
        stage<NP, CPB, T>(x, bc, g, i, t0, c0, L, D, N, STAGE_WITH_Z_G, s_in, s_bc);
        // Recompute the chunk's states: s_h[j + 1] = h after step t0 + j (each thread its column).
#pragma unroll
        for (int s = 0; s < NP; ++s) h[s] = chan ? my_states[((size_t)k * NP + s) * D] : 0.f;
        __syncthreads();
#pragma unroll
        for (int s = 0; s < NP; ++s) s_h[0][s][cl] = h[s];
        for (int j = 0; j < steps; ++j) {
            const float dt = softplus_f(s_in[1][j][cl] + d_bias), dtu = dt * s_in[0][j][cl];
#pragma unroll
            for (int s = 0; s < NP; ++s) {
                h[s] = exp2f(dt * a2[s]) * h[s] + dtu * s_bc[j][s];
                s_h[j + 1][s][cl] = h[s];
            }
        }
        // The adjoint recurrence over the chunk, last step first.
        for (int j = steps - 1; j >= 0; --j) {
            const float u = s_in[0][j][cl], z = s_in[2][j][cl], gt = s_in[3][j][cl];
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
                dx[row * 3 * D + c] = du * dt + gy * d_skip;
                dx[row * 3 * D + D + c] = ddelta;
                dx[row * 3 * D + 2 * D + c] = gt * (y + d_skip * u) * sz * (1.f + z * (1.f - sz));
                acc_dskip += gy * u;
                acc_dbias += ddelta;
            }
        }
        __syncthreads();
        // Sum dB, dC over the block's warps in warp order; one partial per block.
        float* part = dbc_part + ((size_t)i * gridDim.x + blockIdx.x) * L * 2 * N;
        for (int q = threadIdx.x; q < steps * 2 * NP; q += CPB) {
            const int j = q / (2 * NP), r = q % (2 * NP), which = r / NP, s = r % NP;
            if (s >= N) continue;
            float acc = 0.f;
            for (int w = 0; w < WARPS; ++w) acc += s_part[j][w][r];
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

// Instantiations: state sizes up to 4, 8, 16 with 64 channels per block, up to 32 with 32 (its
// shared memory for the recomputed states is twice as large per channel).
#define SCAN_KERNELS(NP, CPB)                                                                        \
    extern "C" __global__ void __launch_bounds__(CPB) selective_scan_fwd_f32_n##NP(                   \
        const float* __restrict__ x, const float* __restrict__ bc, const float* __restrict__ p,      \
        float* __restrict__ out, int L, int D, int N) {                                              \
        scan_fwd<NP, CPB>(x, bc, p, out, L, D, N);                                                   \
    }                                                                                                \
    extern "C" __global__ void __launch_bounds__(CPB) selective_scan_bwd_f32_n##NP(                   \
        const float* __restrict__ x, const float* __restrict__ bc, const float* __restrict__ p,      \
        const float* __restrict__ g, float* __restrict__ dx, float* __restrict__ dbc_part,           \
        float* __restrict__ dp_part, float* __restrict__ states, int L, int D, int N) {              \
        scan_bwd<NP, CPB>(x, bc, p, g, dx, dbc_part, dp_part, states, L, D, N);                      \
    }

SCAN_KERNELS(4, 64)
SCAN_KERNELS(8, 64)
SCAN_KERNELS(16, 64)
SCAN_KERNELS(32, 32)
