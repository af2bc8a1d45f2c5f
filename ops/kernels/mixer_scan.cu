// The mixer's selective scan on the GPU (ops/src/mixer, `mixer_scan`). It reads the in_proj
// output xz = [x | z]: (b, l, 2d) and delta: (b, l, d) in the IO type T (bf16 or f32) and writes
// the output and their gradients in T; all arithmetic is f32. The small inputs are f32: bc
// (b, l, 2n) = B | C, p (d, n + 2) = A_log | D | delta_bias, conv weight w (d, k) and bias cb (d).
// The math is the CPU op's (causal_conv1d/cpu.rs + selective_scan/cpu.rs on the halves of xz),
// which these kernels are tested against (tests/cuda_vs_cpu.rs).
//
// Layout (`Layout` below): a channel's NP states are spread over LN = NP / 4 consecutive lanes
// of 4 states each (b·d·LN threads: 98k for the 130m model at micro-batch 16), 64 channels per
// block. Each lane runs 4 independent recurrences (instruction-level parallelism) and shares the
// per-step loads of u and dt between them; the sums over a channel's states are taken in-thread
// and then over its LN lanes. History on the H200 at micro-batch 16 (docs/benchmarks.md): one
// thread per channel with all 16 states, 52.6k tokens/s; one thread per state, 59.3k; four
// states per thread with deferred sums, 64.9k (scan backward 72.5 -> 54.8 ms per step).
//
// The input u is recomputed from xz as silu(conv1d(x) + cb), so neither u nor a packed copy of
// the inputs is stored for the backward; the backward writes dL/d(pre-activation) as f32 scratch,
// from which the kernels of mixer_conv.cu produce the x half of dxz and the conv's weight
// gradient. The `_u` variants (the trainer's hand-written forward and backward) read u from the
// conv's output instead and the backward writes dL/du, which the conv's backward adds to its own.
//
// Per chunk of time steps the block stages, once per (step, channel), u = silu(conv1d(x) + cb),
// dt = softplus(delta + delta_bias), and what the pass needs of z and g, into shared memory
// (coalesced: consecutive threads read consecutive channels), and B | C per (step, state).
//
// Forward: the recurrences per thread; y summed over the lanes into shared memory; after the
// chunk the block writes out = (y + D u) silu(z) for the chunk, coalesced.
// Backward (like the reference kernel, never storing all states): pass 1 saves each thread's
// states at every chunk boundary (BWD_CHUNK steps) to global scratch; pass 2 walks the chunks
// backwards, recomputes the chunk's states in registers and runs the adjoint recurrence. The sums
// over states of dL/ddt and dL/du are deferred to the end of each half chunk and taken for all its
// steps at once by recursive halving (`lane_sums`); dB and dC (sums over channels) likewise over
// the warp's channels, then over the block's warps in a fixed order into per-block partials;
// dA_log per state, D and delta_bias per channel into per-batch partials. The per-(step, channel)
// gradients of a chunk are written by the whole block after its adjoint loop. The caller sums
// the partials in a fixed order: deterministic.

#include "mixer_common.cuh"
#include "lane_sums.cuh"

// Channels per block, and time steps per chunk of the forward and of the backward's pass 1
// (32 × 64 staged values per array fill the shared memory).
#define SCAN_CHANNELS 64
#define FWD_CHUNK 32
#define BWD_CHUNK 4

// The thread layout for padded state size NP: LN lanes per channel, each holding SPT = NP / LN
// consecutive states (state sn = lane·SPT + k for k < SPT, so a lane's B or C values are one
// 16-byte shared-memory load), CH = 64 channels and THREADS = 64·LN threads per
// block (256 for NP = 16). At most 768 threads per SM are asked for, which leaves 85 registers
// per thread.
template <int NP>
struct Layout {
    static constexpr int SPT = NP < 4 ? NP : 4;
    static constexpr int LN = NP / SPT;
    static constexpr int CH = SCAN_CHANNELS;
    static constexpr int THREADS = CH * LN;
};

// v[k] = row[k] for k < SPT: one 16-byte shared-memory load when SPT = 4 (the staged rows and a
// lane's offset in them are multiples of 16 bytes).
template <int SPT>
__device__ __forceinline__ void load_states(float (&v)[SPT], const float* row) {
    if constexpr (SPT == 4) {
        const float4 q = *reinterpret_cast<const float4*>(row);
        v[0] = q.x; v[1] = q.y; v[2] = q.z; v[3] = q.w;
    } else {
#pragma unroll
        for (int k = 0; k < SPT; ++k) v[k] = row[k];
    }
}

// The input u at (row, channel): read from u_in (the conv's output, `U_IN`) or recomputed from xz
// by the conv; *dsl = silu'(pre-activation) when recomputed (the backward's dL/d(pre)).
template <bool U_IN, typename T>
__device__ __forceinline__ float scan_u(const T* __restrict__ xz, const T* __restrict__ u_in,
                                        const float* __restrict__ w, const float* __restrict__ cb,
                                        int i, int t, int cc, int L, int D, int K, float* dsl) {
    if (U_IN) return ld(u_in, ((size_t)i * L + t) * D + cc);
    const float pre = conv_pre(xz, w, cb, i, t, cc, L, D, K), sg = sigmoid_f(pre);
    *dsl = sg * (1.f + pre * (1.f - sg));
    return pre * sg;
}

template <typename T, int NP, bool U_IN>
__device__ void scan_fwd(const T* __restrict__ xz, const T* __restrict__ u_in, const T* __restrict__ delta,
                            const float* __restrict__ bc, const float* __restrict__ p,
                            const float* __restrict__ w, const float* __restrict__ cb,
                            T* __restrict__ out, int L, int D, int N, int K) {
    constexpr int LN = Layout<NP>::LN, SPT = Layout<NP>::SPT, CH = Layout<NP>::CH, TT = FWD_CHUNK;
    constexpr int THREADS = Layout<NP>::THREADS;
    __shared__ float s_u[TT][CH], s_dt[TT][CH], s_z[TT][CH], s_y[TT][CH];
    __shared__ __align__(16) float s_bc[TT][2 * NP];
    const int tid = threadIdx.x, sl = tid % LN, cl = tid / LN;
    const int c0 = blockIdx.x * CH, c = c0 + cl, i = blockIdx.y;
    float a2[SPT], h[SPT];
#pragma unroll
    for (int k = 0; k < SPT; ++k) {
        const int sn = sl * SPT + k;
        a2[k] = c < D && sn < N ? -expf(p[c * (N + 2) + sn]) * LOG2E : 0.f;
        h[k] = 0.f;
    }
    for (int t0 = 0; t0 < L; t0 += TT) {
        const int steps = min(TT, L - t0);
        __syncthreads();
        for (int q = tid; q < TT * CH; q += THREADS) {
            const int j = q / CH, ql = q % CH, cc = c0 + ql, t = t0 + j;
            float u = 0.f, dt = 0.f, z = 0.f, dsl;
            if (t < L && cc < D) {
                const size_t row = (size_t)i * L + t;
                u = scan_u<U_IN>(xz, u_in, w, cb, i, t, cc, L, D, K, &dsl);
                dt = softplus_f(ld(delta, row * D + cc) + p[cc * (N + 2) + N + 1]);
                z = ld(xz, row * 2 * D + D + cc);
            }
            s_u[j][ql] = u; s_dt[j][ql] = dt; s_z[j][ql] = z;
        }
        for (int q = tid; q < TT * 2 * NP; q += THREADS) {
            const int j = q / (2 * NP), r = q % (2 * NP), which = r / NP, ss = r % NP, t = t0 + j;
            s_bc[j][r] = (t < L && ss < N) ? bc[((size_t)i * L + t) * 2 * N + which * N + ss] : 0.f;
        }
        __syncthreads();
        for (int j = 0; j < steps; ++j) {
            const float dt = s_dt[j][cl], dtu = dt * s_u[j][cl];
            float bs[SPT], cs[SPT], y = 0.f;
            load_states(bs, &s_bc[j][sl * SPT]);
            load_states(cs, &s_bc[j][NP + sl * SPT]);
#pragma unroll
            for (int k = 0; k < SPT; ++k) {
                h[k] = exp2_approx(dt * a2[k]) * h[k] + dtu * bs[k];
                y += cs[k] * h[k];
            }
            y = channel_lanes_sum<LN>(y);
            if (sl == 0) s_y[j][cl] = y;
        }
        __syncthreads();
        for (int q = tid; q < steps * CH; q += THREADS) {
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
// dp_part (b, d, n + 2). states: (b, n_chunks, SPT, d, LN) scratch.
template <typename T, int NP, bool U_IN>
__device__ void scan_bwd(const T* __restrict__ xz, const T* __restrict__ u_in, const T* __restrict__ delta,
                            const float* __restrict__ bc, const float* __restrict__ p,
                            const float* __restrict__ w, const float* __restrict__ cb,
                            const T* __restrict__ g, T* __restrict__ dxz, T* __restrict__ ddelta_out,
                            float* __restrict__ dpre, float* __restrict__ dbc_part,
                            float* __restrict__ dp_part, float* __restrict__ states, int L, int D,
                            int N, int K) {
    constexpr int LN = Layout<NP>::LN, SPT = Layout<NP>::SPT, CH = Layout<NP>::CH;
    constexpr int TT = BWD_CHUNK, THREADS = Layout<NP>::THREADS, WARPS = THREADS / 32;
    // Per (step, channel): u, dt, silu'(conv pre-activation), sigmoid(delta + bias), z, g,
    // gy = dL/dy = g·silu(z); then the adjoint's sums over states: dL/du (before ·dt), the
    // A-term of dL/ddt, y.
    __shared__ float s_u[TT][CH], s_dt[TT][CH], s_dsl[TT][CH], s_sdt[TT][CH], s_z[TT][CH], s_g[TT][CH];
    __shared__ float s_gy[TT][CH];
    __shared__ float s_du[TT][CH], s_ddt[TT][CH], s_y[TT][CH];
    __shared__ __align__(16) float s_bc[TT][2 * NP];
    __shared__ float s_part[TT][WARPS][2 * NP]; // per-warp sums of dB | dC
    const int tid = threadIdx.x, sl = tid % LN, cl = tid / LN, warp = tid / 32, lane = tid % 32;
    const int c0 = blockIdx.x * CH, c = c0 + cl, i = blockIdx.y;
    const int n_chunks = (L + TT - 1) / TT;
    float a2[SPT];
#pragma unroll
    for (int k = 0; k < SPT; ++k) {
        const int sn = sl * SPT + k;
        a2[k] = c < D && sn < N ? -expf(p[c * (N + 2) + sn]) * LOG2E : 0.f;
    }
    // This thread's states in the scratch, laid out (b, chunk, k, d, LN) so that consecutive
    // threads (consecutive lanes of consecutive channels) touch consecutive floats: state k of
    // chunk q at my_states[(q·SPT + k)·D·LN].
    float* my_states = states + (size_t)i * n_chunks * D * NP + (size_t)c * LN + sl;

    // Stages chunk k's per-(step, channel) values (with_g: also z and g) and B | C.
    auto stage = [&](int k, bool with_g) {
        const int t0 = k * TT;
        for (int q = tid; q < TT * CH; q += THREADS) {
            const int j = q / CH, ql = q % CH, cc = c0 + ql, t = t0 + j;
            float u = 0.f, dt = 0.f, dsl = 0.f, sdt = 0.f, z = 0.f, gt = 0.f;
            if (t < L && cc < D) {
                const size_t row = (size_t)i * L + t;
                u = scan_u<U_IN>(xz, u_in, w, cb, i, t, cc, L, D, K, &dsl);
                const float pd = ld(delta, row * D + cc) + p[cc * (N + 2) + N + 1];
                dt = softplus_f(pd);
                sdt = sigmoid_f(pd);
                if (with_g) { z = ld(xz, row * 2 * D + D + cc); gt = ld(g, row * D + cc); }
            }
            s_u[j][ql] = u; s_dt[j][ql] = dt; s_dsl[j][ql] = dsl; s_sdt[j][ql] = sdt;
            s_z[j][ql] = z; s_g[j][ql] = gt; s_gy[j][ql] = gt * z * sigmoid_f(z);
        }
        for (int q = tid; q < TT * 2 * NP; q += THREADS) {
            const int j = q / (2 * NP), r = q % (2 * NP), which = r / NP, ss = r % NP, t = t0 + j;
            s_bc[j][r] = (t < L && ss < N) ? bc[((size_t)i * L + t) * 2 * N + which * N + ss] : 0.f;
        }
    };

    // Pass 1: the recurrence, saving h before each TT-step chunk. It stages only u, dt and B, so
    // it takes P1 = 32 steps at a time into arrays of its own: a quarter of the staging rounds
    // and barriers.
    constexpr int P1 = 32;
    __shared__ float s1_u[P1][CH], s1_dt[P1][CH];
    __shared__ __align__(16) float s1_b[P1][NP];
    float h[SPT];
#pragma unroll
    for (int k = 0; k < SPT; ++k) h[k] = 0.f;
    for (int t0 = 0; t0 < L; t0 += P1) {
        const int steps = min(P1, L - t0);
        __syncthreads();
        for (int q = tid; q < P1 * CH; q += THREADS) {
            const int j = q / CH, ql = q % CH, cc = c0 + ql, t = t0 + j;
            float u = 0.f, dt = 0.f, dsl;
            if (t < L && cc < D) {
                u = scan_u<U_IN>(xz, u_in, w, cb, i, t, cc, L, D, K, &dsl);
                dt = softplus_f(ld(delta, ((size_t)i * L + t) * D + cc) + p[cc * (N + 2) + N + 1]);
            }
            s1_u[j][ql] = u; s1_dt[j][ql] = dt;
        }
        for (int q = tid; q < P1 * NP; q += THREADS) {
            const int j = q / NP, ss = q % NP, t = t0 + j;
            s1_b[j][ss] = (t < L && ss < N) ? bc[((size_t)i * L + t) * 2 * N + ss] : 0.f;
        }
        __syncthreads();
        for (int j = 0; j < steps; ++j) {
            if (j % TT == 0 && c < D) {
                float* saved = my_states + (size_t)((t0 + j) / TT) * D * NP;
#pragma unroll
                for (int k = 0; k < SPT; ++k) saved[(size_t)k * D * LN] = h[k];
            }
            const float dt = s1_dt[j][cl], dtu = dt * s1_u[j][cl];
            float bs[SPT];
            load_states(bs, &s1_b[j][sl * SPT]);
#pragma unroll
            for (int k = 0; k < SPT; ++k) h[k] = exp2_approx(dt * a2[k]) * h[k] + dtu * bs[k];
        }
    }

    // Pass 2: chunks backwards. carry = dL/dh_{t+1} · exp(dt_{t+1} A), per state.
    float carry[SPT], d_a[SPT];
#pragma unroll
    for (int k = 0; k < SPT; ++k) { carry[k] = 0.f; d_a[k] = 0.f; }
    float acc_dskip = 0.f, acc_dbias = 0.f;
    for (int kc = n_chunks - 1; kc >= 0; --kc) {
        const int t0 = kc * TT, steps = min(TT, L - t0);
        // The chunk's first states are loaded before the staging, so that their latency overlaps
        // the staging's loads.
        float h0[SPT], hs[TT][SPT];
#pragma unroll
        for (int k = 0; k < SPT; ++k) h0[k] = c < D ? my_states[(size_t)kc * D * NP + (size_t)k * D * LN] : 0.f;
        __syncthreads();
        stage(kc, true);
        __syncthreads();
        // Recompute the chunk's states: hs[j][k] = h after step t0 + j; h0 before the chunk.
        // The sums over a channel's states are taken in-thread over its SPT states, then over
        // its LN lanes: y per step, the dL/ddt and dL/du terms with lane_sums after each half
        // of the adjoint loop (all of a half's values in one go).
#pragma unroll
        for (int k = 0; k < SPT; ++k) h[k] = h0[k];
#pragma unroll
        for (int j = 0; j < TT; ++j) {
            const float dt = s_dt[j][cl], dtu = dt * s_u[j][cl];
            float bs[SPT], cs[SPT], y = 0.f;
            load_states(bs, &s_bc[j][sl * SPT]);
            load_states(cs, &s_bc[j][NP + sl * SPT]);
#pragma unroll
            for (int k = 0; k < SPT; ++k) {
                if (j < steps) h[k] = exp2_approx(dt * a2[k]) * h[k] + dtu * bs[k];
                hs[j][k] = h[k];
                y += cs[k] * h[k];
            }
            y = channel_lanes_sum<LN>(y);
            if (sl == 0) s_y[j][cl] = y;
        }
        // The adjoint recurrence, last step first, in two halves of H steps. dB and dC of a step
        // (sums over channels) are summed over the warp's channels with lane_sums, then per warp
        // into s_part.
        constexpr int H = TT / 2;
#pragma unroll
        for (int half = 1; half >= 0; --half) {
            float sums[2 * H]; // [A-terms of dL/ddt | dL/du] per step of the half, own states
#pragma unroll
            for (int jj = H - 1; jj >= 0; --jj) {
                const int j = half * H + jj;
                sums[jj] = 0.f;
                sums[H + jj] = 0.f;
                if (j < steps) {
                    const float dt = s_dt[j][cl], dtu = dt * s_u[j][cl], gy = s_gy[j][cl];
                    float dbc[2 * SPT]; // [dB | dC] of this thread's states
                    float bs[SPT], cs[SPT];
                    load_states(bs, &s_bc[j][sl * SPT]);
                    load_states(cs, &s_bc[j][NP + sl * SPT]);
#pragma unroll
                    for (int k = 0; k < SPT; ++k) {
                        const float hprev = j > 0 ? hs[j - 1][k] : h0[k], hcur = hs[j][k];
                        const float e = exp2_approx(dt * a2[k]);
                        const float ah = gy * cs[k] + carry[k];
                        // dL/ddt = Σ_s ah (a e hprev + b u) = Σ_s ah a e hprev + u · dL/du,
                        // with a = a2·ln 2: the sum over a2 here, ·ln 2 once per step below.
                        const float q = ah * (e * hprev);
                        sums[jj] += a2[k] * q;
                        sums[H + jj] += ah * bs[k];
                        d_a[k] += dt * q;
                        carry[k] = ah * e;
                        dbc[k] = ah * dtu;
                        dbc[SPT + k] = gy * hcur;
                    }
                    int cnt;
                    const int f = lane_sums<LN, 32, 2 * SPT>(dbc, lane, cnt);
#pragma unroll
                    for (int q = 0; q < 2 * SPT; ++q) {
                        if (q < cnt) {
                            const int idx = f + q, which = idx / SPT, sn = sl * SPT + idx % SPT;
                            s_part[j][warp][which * NP + sn] = dbc[q];
                        }
                    }
                }
            }
            int count;
            const int first = lane_sums<1, LN, 2 * H>(sums, lane, count);
#pragma unroll
            for (int q = 0; q < 2 * H; ++q) {
                if (q < count) {
                    const int idx = first + q;
                    if (idx < H) s_ddt[half * H + idx][cl] = sums[q] * LN2;
                    else s_du[half * H + idx - H][cl] = sums[q];
                }
            }
        }
        __syncthreads();
        // Per (step, channel) gradients, all threads, coalesced over channels. The D and
        // delta_bias terms go to shared memory and are summed per channel below in step order.
        for (int q = tid; q < steps * CH; q += THREADS) {
            const int j = q / CH, ql = q % CH, cc = c0 + ql;
            const size_t row = (size_t)i * L + t0 + j;
            const float u = s_u[j][ql], z = s_z[j][ql], gt = s_g[j][ql], gy = s_gy[j][ql];
            const float sz = sigmoid_f(z);
            const float dsk = cc < D ? p[cc * (N + 2) + N] : 0.f;
            const float ddelta = (s_ddt[j][ql] + u * s_du[j][ql]) * s_sdt[j][ql];
            if (cc < D) {
                // dL/du; through the conv's activation unless u came in (then the conv's own
                // backward applies silu', for both uses of its output at once).
                const float du = s_du[j][ql] * s_dt[j][ql] + gy * dsk;
                dpre[row * D + cc] = U_IN ? du : du * s_dsl[j][ql];
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
        for (int q = tid; q < steps * 2 * NP; q += THREADS) {
            const int j = q / (2 * NP), r = q % (2 * NP), which = r / NP, ss = r % NP;
            if (ss >= N) continue;
            float acc = 0.f;
            for (int ww = 0; ww < WARPS; ++ww) acc += s_part[j][ww][r];
            part[(size_t)(t0 + j) * 2 * N + which * N + ss] = acc;
        }
    }
#pragma unroll
    for (int k = 0; k < SPT; ++k) {
        const int sn = sl * SPT + k;
        if (c < D && sn < N) dp_part[((size_t)i * D + c) * (N + 2) + sn] = d_a[k] * (a2[k] * LN2);
    }
    if (tid < CH && c0 + tid < D) {
        float* dp = dp_part + ((size_t)i * D + c0 + tid) * (N + 2);
        dp[N] = acc_dskip;
        dp[N + 1] = acc_dbias;
    }
}

// `mixer_scan_{fwd,bwd}_*` recompute u from xz (the `mixer_scan` op); `mixer_scan_{fwd,bwd}_u_*`
// read it from u_in, the conv's output (the model's hand-written forward and backward), and the
// backward then writes dL/du instead of dL/d(pre-activation).
#define SCAN_VARIANT(NAME, TN, T, NP, U_IN)                                                        \
    extern "C" __global__ void __launch_bounds__(Layout<NP>::THREADS, 768 / Layout<NP>::THREADS) mixer_scan_fwd##NAME##TN##_n##NP( \
        const T* xz, const T* u_in, const T* delta, const float* bc, const float* p,               \
        const float* w, const float* cb, T* out, int L, int D, int N, int K) {                      \
        scan_fwd<T, NP, U_IN>(xz, u_in, delta, bc, p, w, cb, out, L, D, N, K);                     \
    }                                                                                               \
    extern "C" __global__ void __launch_bounds__(Layout<NP>::THREADS, 768 / Layout<NP>::THREADS) mixer_scan_bwd##NAME##TN##_n##NP( \
        const T* xz, const T* u_in, const T* delta, const float* bc, const float* p,               \
        const float* w, const float* cb, const T* g, T* dxz, T* ddelta, float* dpre,                \
        float* dbc_part, float* dp_part, float* states, int L, int D, int N, int K) {               \
        scan_bwd<T, NP, U_IN>(xz, u_in, delta, bc, p, w, cb, g, dxz, ddelta, dpre, dbc_part,       \
                              dp_part, states, L, D, N, K);                                         \
    }
#define SCAN_KERNELS(TN, T, NP)                                                                     \
    SCAN_VARIANT(_, TN, T, NP, false)                                                               \
    SCAN_VARIANT(_u_, TN, T, NP, true)

SCAN_KERNELS(f32, float, 4)
SCAN_KERNELS(f32, float, 8)
SCAN_KERNELS(f32, float, 16)
SCAN_KERNELS(f32, float, 32)
SCAN_KERNELS(bf16, __nv_bfloat16, 4)
SCAN_KERNELS(bf16, __nv_bfloat16, 8)
SCAN_KERNELS(bf16, __nv_bfloat16, 16)
SCAN_KERNELS(bf16, __nv_bfloat16, 32)
