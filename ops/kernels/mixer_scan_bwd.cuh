// The mixer scan's backward (included by mixer_scan.cu, after `Layout`, `load_states`, `scan_u`
// and `stage_bc`). Like the reference kernel it never stores all states:
//
// Pass 0 runs the recurrence over the whole sequence and saves each thread's states at every
// segment start (BWD_SEG steps) to global scratch (b, n_seg, SPT, d, LN). The `_u` variant (U_IN)
// skips it: its forward saved those states.
// Pass 2 walks the segments backwards. Per segment the block stages, once per (step, channel),
// everything the segment needs into shared memory (u, dt, sigmoid(delta + bias), silu' of the conv
// when u is recomputed, gy = dL/dy = g·silu(z) and g·silu'(z)) and B | C per (step, state); each
// thread re-runs the segment's recurrence from the saved state and keeps its states in its own
// slots of shared memory: with two states per thread (S = 2) before every step and after the
// last, y being summed in that run; with four (S = 4, whose block has twice the channels) only
// at every chunk start (BWD_CHUNK steps), where 17 slots would not leave room for 3 blocks per
// SM. Then, chunk by chunk from the last, it reads (S = 2) or recomputes in registers (S = 4)
// the chunk's states and runs the adjoint recurrence. No barrier is
// needed inside a segment: a thread reads only the staged values and its own slots. The sums over
// states of dL/ddt and dL/du are deferred to the end of each half chunk and taken for all its
// steps at once by recursive halving (`lane_sums`); dB and dC (sums over channels) likewise over
// the warp's channels, then over the block's warps in a fixed order into per-block partials;
// dA_log per state, D and delta_bias per channel into per-batch partials. The per-(step, channel)
// gradients of a segment are written by the whole block after its adjoint. The caller sums the
// partials in a fixed order: deterministic.
//
// History on the H200 at micro-batch 16 (docs/benchmarks.md): 4-step chunks with the states of
// every chunk start in global scratch (400 MB per layer) and four barriers per chunk, 35.8 ms per
// step; 16-step segments as here, 31.0 ms; with the forward's segment states (no pass 0),
// 24.6 ms (seventh round). Tenth round, micro-batch 8 (S = 2): every step's states kept instead
// of recomputed per chunk (docs/benchmarks.md). On an H100 (2026-12-07): y summed in the adjoint,
// which reads C anyway, instead of in the chunk's recompute, 0.6% faster training at 16 × 2 and
// bitwise the same. The kernel is bound by shared-memory wavefronts (L1 71%) and latency (1.4
// eligible warps per scheduler) as much as by issue (62%): keeping each chunk's decays in
// registers for the adjoint cut 13% of the instructions and a third of the ex2s, but its spills
// made it 1% slower, so it was not kept. Staging B | C as bf16 when they are bf16 (half their
// shared-memory bytes, exact) made it 2.4% slower on an H200: not kept either; the L1 load is
// not the limit.
#pragma once

#define BWD_SEG 16
#define BWD_CHUNK 4
// Time steps pass 0 stages at a time.
#define BWD_P0 32

// The backward's dynamic shared memory, offsets in floats (the host computes the same size,
// `bwd_shared_bytes` in ops/src/model/mixer/scan_layout.rs; the kernel traps if it gets less).
template <int NP, int S>
struct BwdSmem {
    static constexpr int CH = Layout<NP, S>::CH, THREADS = Layout<NP, S>::THREADS, WARPS = THREADS / 32;
    // Every step's states kept (the state before each step and after the last: SEG + 1 slots),
    // or only each chunk's first (SEG / CHUNK slots), the rest recomputed.
    static constexpr bool ALL_STEPS = S == 2;
    static constexpr int SLOTS = ALL_STEPS ? BWD_SEG + 1 : BWD_SEG / BWD_CHUNK;
    // Per-(step, channel) arrays [SEG][CH], in this order.
    enum Chan { U, DT, SDT, DSL, GY, GDZ, DU, DDT, Y, N_CHAN };
    static constexpr int CHAN = BWD_SEG * CH;
    static constexpr int BC = N_CHAN * CHAN;                          // [SEG][2 NP]
    static constexpr int H = BC + BWD_SEG * 2 * NP;                   // [SLOTS][THREADS][SPT]
    static constexpr int PART = H + SLOTS * NP * CH;                  // [SEG][WARPS][2 NP]
    static constexpr int END = PART + BWD_SEG * WARPS * 2 * NP;
    // Pass 0, in the same memory before pass 2 starts: u, dt [P0][CH], B [P0][NP].
    static constexpr int P0_DT = BWD_P0 * CH, P0_B = 2 * BWD_P0 * CH, P0_END = P0_B + BWD_P0 * NP;
    static constexpr int FLOATS = END > P0_END ? END : P0_END;
    static_assert(BC % 4 == 0 && H % 4 == 0 && P0_B % 4 == 0, "B | C rows and state slots must be 16-byte aligned");
};

// row[k] = v[k] for k < SPT (as `load_states`, the other way).
template <int SPT>
__device__ __forceinline__ void store_states(float* row, const float (&v)[SPT]) {
    if constexpr (SPT == 4) {
        *reinterpret_cast<float4*>(row) = make_float4(v[0], v[1], v[2], v[3]);
    } else {
        *reinterpret_cast<float2*>(row) = make_float2(v[0], v[1]);
    }
}

// Writes: the z half of dxz, ddelta, dpre (f32 (b, l, d)), dbc_part (b, gridDim.x, l, 2n),
// dp_part (b, d, n + 2). states: (b, n_seg, SPT, d, LN), scratch written by pass 0, or (U_IN)
// the forward's.
template <typename T, int NP, int S, bool U_IN>
__device__ void scan_bwd(const T* __restrict__ xz, const T* __restrict__ u_in, const T* __restrict__ delta,
                            const float* __restrict__ bc, const float* __restrict__ p,
                            const float* __restrict__ w, const float* __restrict__ cb,
                            const T* __restrict__ g, T* __restrict__ dxz, T* __restrict__ ddelta_out,
                            float* __restrict__ dpre, float* __restrict__ dbc_part,
                            float* __restrict__ dp_part, float* __restrict__ states, int L, int D,
                            int N, int K) {
    using Sm = BwdSmem<NP, S>;
    using Lay = Layout<NP, S>;
    constexpr int LN = Lay::LN, SPT = Lay::SPT, CH = Lay::CH;
    constexpr int SEG = BWD_SEG, TT = BWD_CHUNK, THREADS = Lay::THREADS, WARPS = Sm::WARPS;
    constexpr bool ALL = Sm::ALL_STEPS;
    extern __shared__ __align__(16) float smem[];
    unsigned smem_bytes;
    asm("mov.u32 %0, %%dynamic_smem_size;" : "=r"(smem_bytes));
    if (smem_bytes < Sm::FLOATS * sizeof(float)) __trap();
    float* const s_bc = smem + Sm::BC;
    float* const s_h = smem + Sm::H;
    float* const s_part = smem + Sm::PART;
    // The per-(step, channel) array a at step j, channel ql of the block.
    auto chan = [&](int a, int j, int ql) -> float& { return smem[a * Sm::CHAN + j * CH + ql]; };
    // This thread's state slot q (its SPT states, one vector load or store).
    auto slot = [&](int q) { return s_h + (q * THREADS + threadIdx.x) * SPT; };

    const int tid = threadIdx.x, sl = tid % LN, cl = tid / LN, warp = tid / 32, lane = tid % 32;
    const int c0 = blockIdx.x * CH, c = c0 + cl, i = blockIdx.y;
    const int n_seg = (L + SEG - 1) / SEG;
    // Pass 2's staging (as the forward's): thread tid stages channel ql = tid % CH, rows tid / CH
    // + r·LN for r < PER (a compile-time count); B | C by `stage_bc`.
    constexpr int PER = SEG * CH / THREADS;
    static_assert(PER * THREADS == SEG * CH, "whole rows per pass");
    const int ql = tid % CH, qc = c0 + ql, qj = tid / CH;
    const float q_bias = qc < D ? p[qc * (N + 2) + N + 1] : 0.f, q_skip = qc < D ? p[qc * (N + 2) + N] : 0.f;
    float a2[SPT];
#pragma unroll
    for (int k = 0; k < SPT; ++k) {
        const int sn = sl * SPT + k;
        a2[k] = c < D && sn < N ? -expf(p[c * (N + 2) + sn]) * LOG2E : 0.f;
    }
    // This thread's states in the scratch, laid out (b, segment, k, d, LN) so that consecutive
    // threads (consecutive lanes of consecutive channels) touch consecutive floats: state k of
    // segment q at my_states[(q·SPT + k)·D·LN].
    float* my_states = states + (size_t)i * n_seg * D * NP + (size_t)c * LN + sl;

    // Pass 0: the recurrence, saving h before each segment; u, dt and B staged BWD_P0 steps at
    // a time.
    if (!U_IN) {
        float* const s0_u = smem;
        float* const s0_dt = smem + Sm::P0_DT;
        float* const s0_b = smem + Sm::P0_B;
        float h[SPT];
#pragma unroll
        for (int k = 0; k < SPT; ++k) h[k] = 0.f;
        for (int t0 = 0; t0 < L; t0 += BWD_P0) {
            const int steps = min(BWD_P0, L - t0);
            __syncthreads();
            for (int q = tid; q < BWD_P0 * CH; q += THREADS) {
                const int j = q / CH, ql = q % CH, cc = c0 + ql, t = t0 + j;
                float u = 0.f, dt = 0.f, dsl;
                if (t < L && cc < D) {
                    u = scan_u<U_IN>(xz, u_in, w, cb, i, t, cc, L, D, K, &dsl);
                    dt = softplus_f(ld(delta, ((size_t)i * L + t) * D + cc) + p[cc * (N + 2) + N + 1]);
                }
                s0_u[q] = u;
                s0_dt[q] = dt;
            }
            for (int q = tid; q < BWD_P0 * NP; q += THREADS) {
                const int j = q / NP, ss = q % NP, t = t0 + j;
                s0_b[q] = (t < L && ss < N) ? bc[((size_t)i * L + t) * 2 * N + ss] : 0.f;
            }
            __syncthreads();
            for (int j = 0; j < steps; ++j) {
                if ((t0 + j) % SEG == 0 && c < D) {
                    float* saved = my_states + (size_t)((t0 + j) / SEG) * D * NP;
#pragma unroll
                    for (int k = 0; k < SPT; ++k) saved[(size_t)k * D * LN] = h[k];
                }
                const float dt = s0_dt[j * CH + cl], dtu = dt * s0_u[j * CH + cl];
                float bs[SPT];
                load_states(bs, &s0_b[j * NP + sl * SPT]);
#pragma unroll
                for (int k = 0; k < SPT; ++k) h[k] = exp2_approx(dt * a2[k]) * h[k] + dtu * bs[k];
            }
        }
    }

    // Pass 2: segments backwards. carry = dL/dh_{t+1} · exp(dt_{t+1} A), per state.
    float carry[SPT], d_a[SPT];
#pragma unroll
    for (int k = 0; k < SPT; ++k) { carry[k] = 0.f; d_a[k] = 0.f; }
    float acc_dskip = 0.f, acc_dbias = 0.f;
    for (int sg = n_seg - 1; sg >= 0; --sg) {
        const int t0 = sg * SEG, steps = min(SEG, L - t0);
        // The segment's first states, loaded before the staging so that their latency overlaps it.
        float h[SPT];
#pragma unroll
        for (int k = 0; k < SPT; ++k) h[k] = c < D ? my_states[(size_t)(sg * SPT + k) * D * LN] : 0.f;
        __syncthreads();
#pragma unroll
        for (int r = 0; r < PER; ++r) {
            const int j = qj + r * LN, t = t0 + j;
            float u = 0.f, dt = 0.f, dsl = 0.f, sdt = 0.f, gy = 0.f, gdz = 0.f;
            if (t < L && qc < D) {
                const size_t row = (size_t)i * L + t;
                u = scan_u<U_IN>(xz, u_in, w, cb, i, t, qc, L, D, K, &dsl);
                const float pd = ld(delta, row * D + qc) + q_bias;
                dt = softplus_f(pd);
                sdt = sigmoid_f(pd);
                const float z = ld(xz, row * 2 * D + D + qc), gt = ld(g, row * D + qc), sz = sigmoid_f(z);
                gy = gt * z * sz;
                gdz = gt * sz * (1.f + z * (1.f - sz));
            }
            chan(Sm::U, j, ql) = u; chan(Sm::DT, j, ql) = dt; chan(Sm::SDT, j, ql) = sdt;
            chan(Sm::DSL, j, ql) = dsl; chan(Sm::GY, j, ql) = gy; chan(Sm::GDZ, j, ql) = gdz;
        }
        stage_bc<NP, SEG, THREADS>(s_bc, bc, i, t0, L, N, tid);
        __syncthreads();
        // The previous segment's rows and first states into L2 while this one runs.
        if (sg > 0) {
            const size_t row = (size_t)i * L + t0 - SEG;
            const int w = min(CH, D - c0) * (int)sizeof(T);
            const L2Rows prev[] = {{(U_IN ? u_in + row * D : xz + row * 2 * D) + c0, (U_IN ? D : 2 * D) * sizeof(T), w},
                                   {delta + row * D + c0, D * sizeof(T), w},
                                   {xz + row * 2 * D + D + c0, 2 * D * sizeof(T), w},
                                   {g + row * D + c0, D * sizeof(T), w},
                                   {bc + row * 2 * N, 2 * N * sizeof(float), 2 * N * (int)sizeof(float)}};
            prefetch_l2_rows(prev, SEG, tid, THREADS);
            const L2Rows first_states[] = {{states + (((size_t)i * n_seg + sg - 1) * SPT) * D * LN + (size_t)c0 * LN,
                                            (size_t)D * LN * sizeof(float), min(CH, D - c0) * LN * (int)sizeof(float)}};
            prefetch_l2_rows(first_states, SPT, tid, THREADS);
        }
        // This thread's states before every step (ALL) or each chunk's first step, into its own
        // slots; with ALL also after the last step, and y of every step, summed over the
        // channel's lanes once for the whole segment.
        float ys[SEG];
#pragma unroll
        for (int j = 0; j < SEG; ++j) {
            if (ALL || j % TT == 0) store_states(slot(ALL ? j : j / TT), h);
            // No guard for steps past the sequence's end: their staged dt and u are 0, so the
            // update is h·1 + 0, exactly h.
            const float dt = chan(Sm::DT, j, cl), dtu = dt * chan(Sm::U, j, cl);
            float bs[SPT];
            load_states(bs, &s_bc[j * 2 * NP + sl * SPT]);
#pragma unroll
            for (int k = 0; k < SPT; ++k) h[k] = exp2_approx(dt * a2[k]) * h[k] + dtu * bs[k];
            if constexpr (ALL) {
                float cs[SPT];
                load_states(cs, &s_bc[j * 2 * NP + NP + sl * SPT]);
                ys[j] = 0.f;
#pragma unroll
                for (int k = 0; k < SPT; ++k) ys[j] += cs[k] * h[k];
            }
        }
        if constexpr (ALL) {
            store_states(slot(SEG), h);
            int cnt;
            const int first = lane_sums<1, LN, SEG>(ys, lane, cnt);
#pragma unroll
            for (int q = 0; q < SEG; ++q)
                if (q < cnt) chan(Sm::Y, first + q, cl) = ys[q];
        }
#pragma unroll 1
        for (int kc = SEG / TT - 1; kc >= 0; --kc) {
            const int j0 = kc * TT;
            // The chunk's states, read (ALL) or recomputed: hs[jl][k] = h after step j0 + jl; h0
            // before the chunk. The sums over a channel's states are taken in-thread over its SPT
            // states, then over its LN lanes with lane_sums, all of a batch's values in one go: the
            // dL/ddt and dL/du terms, and y when it was not summed in the segment's run (S = 4),
            // after each half of the adjoint loop.
            float h0[SPT], hs[TT][SPT];
            load_states(h0, slot(ALL ? j0 : kc));
            if constexpr (ALL) {
#pragma unroll
                for (int jl = 0; jl < TT; ++jl) load_states(hs[jl], slot(j0 + jl + 1));
            } else {
#pragma unroll
                for (int k = 0; k < SPT; ++k) h[k] = h0[k];
                // Only B is read here: y needs C, which the adjoint reads anyway, so y is summed
                // there (one 16-byte shared load less per step).
#pragma unroll
                for (int jl = 0; jl < TT; ++jl) {
                    const int j = j0 + jl;
                    const float dt = chan(Sm::DT, j, cl), dtu = dt * chan(Sm::U, j, cl);
                    float bs[SPT];
                    load_states(bs, &s_bc[j * 2 * NP + sl * SPT]);
#pragma unroll
                    for (int k = 0; k < SPT; ++k) {
                        h[k] = exp2_approx(dt * a2[k]) * h[k] + dtu * bs[k]; // unchanged past the end
                        hs[jl][k] = h[k];
                    }
                }
            }
            // The adjoint recurrence, last step first, in two halves of H steps. dB and dC of a
            // step (sums over channels) are summed over the warp's channels with lane_sums, then
            // kept per warp in s_part.
            constexpr int H = TT / 2;
            // Sums over states per step: dL/ddt's A-terms and dL/du, and y without ALL.
            constexpr int NS = ALL ? 2 : 3;
#pragma unroll
            for (int half = 1; half >= 0; --half) {
                float sums[NS * H]; // [A-terms of dL/ddt | dL/du | y] per step of the half, own states
#pragma unroll
                for (int jh = H - 1; jh >= 0; --jh) {
                    const int jl = half * H + jh, j = j0 + jl;
#pragma unroll
                    for (int m = 0; m < NS; ++m) sums[m * H + jh] = 0.f;
                    if (j < steps) {
                        const float dt = chan(Sm::DT, j, cl), dtu = dt * chan(Sm::U, j, cl);
                        const float gy = chan(Sm::GY, j, cl);
                        float dbc[2 * SPT]; // [dB | dC] of this thread's states
                        float bs[SPT], cs[SPT];
                        load_states(bs, &s_bc[j * 2 * NP + sl * SPT]);
                        load_states(cs, &s_bc[j * 2 * NP + NP + sl * SPT]);
#pragma unroll
                        for (int k = 0; k < SPT; ++k) {
                            const float hprev = jl > 0 ? hs[jl - 1][k] : h0[k], hcur = hs[jl][k];
                            const float e = exp2_approx(dt * a2[k]);
                            const float ah = gy * cs[k] + carry[k];
                            // dL/ddt = Σ_s ah (a e hprev + b u) = Σ_s ah a e hprev + u · dL/du,
                            // with a = a2·ln 2: the sum over a2 here, ·ln 2 once per step below.
                            const float q = ah * (e * hprev);
                            sums[jh] += a2[k] * q;
                            sums[H + jh] += ah * bs[k];
                            d_a[k] += dt * q;
                            carry[k] = ah * e;
                            dbc[k] = ah * dtu;
                            dbc[SPT + k] = gy * hcur;
                            if constexpr (!ALL) sums[2 * H + jh] += cs[k] * hcur;
                        }
                        int cnt;
                        const int f = lane_sums<LN, 32, 2 * SPT>(dbc, lane, cnt);
#pragma unroll
                        for (int q = 0; q < 2 * SPT; ++q) {
                            if (q < cnt) {
                                const int idx = f + q, which = idx / SPT, sn = sl * SPT + idx % SPT;
                                s_part[(j * WARPS + warp) * 2 * NP + which * NP + sn] = dbc[q];
                            }
                        }
                    }
                }
                int count;
                const int first = lane_sums<1, LN, NS * H>(sums, lane, count);
#pragma unroll
                for (int q = 0; q < NS * H; ++q) {
                    if (q < count) {
                        const int idx = first + q, jw = j0 + half * H + idx % H;
                        if (idx < H) chan(Sm::DDT, jw, cl) = sums[q] * LN2;
                        else if (idx < 2 * H) chan(Sm::DU, jw, cl) = sums[q];
                        else chan(Sm::Y, jw, cl) = sums[q];
                    }
                }
            }
        }
        __syncthreads();
        // Per (step, channel) gradients, all threads, coalesced over channels. The D and
        // delta_bias terms go back to shared memory and are summed per channel below in step order.
#pragma unroll
        for (int r = 0; r < PER; ++r) {
            const int j = qj + r * LN;
            if (j >= steps) continue;
            const size_t row = (size_t)i * L + t0 + j;
            const float u = chan(Sm::U, j, ql), gy = chan(Sm::GY, j, ql), du_s = chan(Sm::DU, j, ql);
            const float ddelta = (chan(Sm::DDT, j, ql) + u * du_s) * chan(Sm::SDT, j, ql);
            if (qc < D) {
                // dL/du; through the conv's activation unless u came in (then the conv's own
                // backward applies silu', for both uses of its output at once).
                const float du = du_s * chan(Sm::DT, j, ql) + gy * q_skip;
                dpre[row * D + qc] = U_IN ? du : du * chan(Sm::DSL, j, ql);
                st(ddelta_out, row * D + qc, ddelta);
                st(dxz, row * 2 * D + D + qc, chan(Sm::GDZ, j, ql) * (chan(Sm::Y, j, ql) + q_skip * u));
            }
            chan(Sm::DU, j, ql) = gy * u;    // reused: this step's D term
            chan(Sm::DDT, j, ql) = ddelta;   // reused: this step's delta_bias term
        }
        __syncthreads();
        if (tid < CH) {
            for (int j = steps - 1; j >= 0; --j) {
                acc_dskip += chan(Sm::DU, j, tid);
                acc_dbias += chan(Sm::DDT, j, tid);
            }
        }
        // Sum dB, dC over the block's warps in warp order; one partial per block.
        float* part = dbc_part + ((size_t)i * gridDim.x + blockIdx.x) * L * 2 * N;
        for (int q = tid; q < steps * 2 * NP; q += THREADS) {
            const int j = q / (2 * NP), r = q % (2 * NP), which = r / NP, ss = r % NP;
            if (ss >= N) continue;
            float acc = 0.f;
            for (int ww = 0; ww < WARPS; ++ww) acc += s_part[(j * WARPS + ww) * 2 * NP + r];
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
