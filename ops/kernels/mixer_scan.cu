// The mixer's selective scan on the GPU (ops/src/model/mixer, `mixer_scan`). It reads the in_proj
// output xz = [x | z]: (b, l, 2d) and delta: (b, l, d) in the IO type T (bf16 or f32) and writes
// the output and their gradients in T; all arithmetic is f32. The small inputs are f32: bc
// (b, l, 2n) = B | C, p (d, n + 2) = A_log | D | delta_bias, conv weight w (d, k) and bias cb (d).
// The math is the CPU op's (ops/src/model/mixer/cpu/{conv,scan}.rs on the halves of xz),
// which these kernels are tested against (tests/cuda_vs_cpu.rs).
//
// Layout (`Layout` below): a channel's NP states are spread over LN = NP / 4 consecutive lanes
// of 4 states each (b·d·LN threads: 98k for the 130m model at micro-batch 16), 64 channels per
// block; or, at small batches, over NP / 2 lanes of 2 states, 32 channels per block. Each lane
// runs its 4 (or 2) independent recurrences side by side (instruction-level parallelism) and
// shares the per-step loads of u and dt between them; the sums over a channel's states are taken
// in-thread and then over its LN lanes. History on the H200 at micro-batch 16
// (docs/benchmarks.md): one thread per channel with all 16 states, 52.6k tokens/s; one thread per
// state, 59.3k; four states per thread with deferred sums, 64.9k (scan backward 72.5 -> 54.8 ms
// per step); two states per thread at micro-batch 8 (ninth round): 8 x 4 143.9k -> 160.1k.
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
// Forward: the recurrences per thread, y's sums over the lanes deferred to the end of each chunk;
// then the block writes out = (y + D u) silu(z) for the chunk, coalesced.
// Backward: mixer_scan_bwd.cuh.

#include "mixer_common.cuh"
#include "lane_sums.cuh"

// Time steps per chunk of the forward (32 × 64 staged values per array fill the shared memory).
#define FWD_CHUNK 32

// The thread layout for padded state size NP and S states per thread: LN = NP / S lanes per
// channel, each holding S consecutive states (state sn = lane·S + k for k < S, so a lane's B or C
// values are one 16- or 8-byte shared-memory load), CH = 16·S channels per block and THREADS =
// CH·LN = 16·NP threads per block (256 for NP = 16). S = 4 normally; S = 2 (`_s2` kernels) doubles
// the threads per channel for batches too small to fill the GPU with S = 4 (the host chooses,
// `ops/src/model/mixer/scan_layout.rs`). At most 768 threads per SM are asked for, which leaves 85
// registers per thread.
template <int NP, int S>
struct Layout {
    static_assert(NP % S == 0, "the states split evenly over a channel's lanes");
    static constexpr int SPT = S;
    static constexpr int LN = NP / S;
    static constexpr int CH = 16 * S;
    static constexpr int THREADS = CH * LN;
};

// v[k] = row[k] for k < SPT: one 16-byte (SPT = 4) or 8-byte (SPT = 2) shared-memory load (the
// staged rows are 16-byte aligned and a lane's offset in them is a multiple of SPT floats).
template <int SPT>
__device__ __forceinline__ void load_states(float (&v)[SPT], const float* row) {
    if constexpr (SPT == 4) {
        const float4 q = *reinterpret_cast<const float4*>(row);
        v[0] = q.x; v[1] = q.y; v[2] = q.z; v[3] = q.w;
    } else {
        static_assert(SPT == 2, "2 or 4 states per thread");
        const float2 q = *reinterpret_cast<const float2*>(row);
        v[0] = q.x; v[1] = q.y;
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

// Stages B | C of the ROWS time steps from t0 for batch i into s_bc, [ROWS][2·NP] (B then C of
// each step; zero past the sequence's end and for padded states): ROWS·2·NP / THREADS values per
// thread, a compile-time count, so its loads issue together. Both passes' staging.
template <int NP, int ROWS, int THREADS>
__device__ __forceinline__ void stage_bc(float* __restrict__ s_bc, const float* __restrict__ bc,
                                         int i, int t0, int L, int N, int tid) {
    constexpr int PER_BC = ROWS * 2 * NP / THREADS;
    static_assert(PER_BC * THREADS == ROWS * 2 * NP, "whole rows per pass");
#pragma unroll
    for (int r = 0; r < PER_BC; ++r) {
        const int q = tid + r * THREADS;
        const int j = q / (2 * NP), rr = q % (2 * NP), which = rr / NP, ss = rr % NP, t = t0 + j;
        s_bc[q] = (t < L && ss < N) ? bc[((size_t)i * L + t) * 2 * N + which * N + ss] : 0.f;
    }
}

// One array's rows for `prefetch_l2_rows`: the block's first byte of the first row, the row pitch
// and the bytes per row the block reads.
struct L2Rows {
    const void* first;
    size_t pitch;
    int width;
};

// Asks L2 for the lines of the rows a block stages next (the forward's next chunk, the backward's
// previous segment) while it computes this one, so that staging them later waits on L2 instead of
// DRAM: one `prefetch.global.L2` per 128-byte line and array row, spread over the block's threads;
// a hint that holds no registers or shared memory and changes no result. On an H100 at micro-batch
// 16 (docs/benchmarks.md, 2026-12-07) it took the backward from 959 to 915 µs per launch and the
// forward from 348 to 326 µs.
template <int NA>
__device__ __forceinline__ void prefetch_l2_rows(const L2Rows (&a)[NA], int rows, int tid, int threads) {
    int total = 0;
#pragma unroll
    for (int k = 0; k < NA; ++k) total += rows * ((a[k].width + 127) / 128);
    for (int q = tid; q < total; q += threads) {
        int r = q;
#pragma unroll
        for (int k = 0; k < NA; ++k) {
            const int lines = (a[k].width + 127) / 128;
            if (r >= 0 && r < rows * lines) {
                const char* line = static_cast<const char*>(a[k].first) + (size_t)(r / lines) * a[k].pitch + (r % lines) * 128;
                asm volatile("prefetch.global.L2 [%0];" ::"l"(line));
            }
            r -= rows * lines;
        }
    }
}

#include "mixer_scan_bwd.cuh"

// The `_u` variant (U_IN) also saves each thread's states at every segment start of the backward
// (BWD_SEG steps) into `states`, (b, n_seg, SPT, d, LN) as the backward reads them, so the
// backward need not re-run the recurrence first; the other variant never touches `states`.
template <typename T, int NP, int S, bool U_IN>
__device__ void scan_fwd(const T* __restrict__ xz, const T* __restrict__ u_in, const T* __restrict__ delta,
                            const float* __restrict__ bc, const float* __restrict__ p,
                            const float* __restrict__ w, const float* __restrict__ cb,
                            T* __restrict__ out, float* __restrict__ states, int L, int D, int N, int K) {
    using Lay = Layout<NP, S>;
    constexpr int LN = Lay::LN, SPT = Lay::SPT, CH = Lay::CH, THREADS = Lay::THREADS, TT = FWD_CHUNK;
    static_assert(FWD_CHUNK % BWD_SEG == 0, "segment starts fall on chunk steps");
    // Staging: thread tid always stages channel ql = tid % CH (THREADS is a multiple of CH), rows
    // tid / CH + r·LN for r < PER (a compile-time count, so each thread's loads of a chunk are
    // issued together); B | C by `stage_bc`.
    constexpr int PER = TT * CH / THREADS;
    static_assert(PER * THREADS == TT * CH, "whole rows per pass");
    __shared__ float s_u[TT][CH], s_dt[TT][CH], s_z[TT][CH], s_y[TT][CH];
    __shared__ __align__(16) float s_bc[TT][2 * NP];
    const int tid = threadIdx.x, sl = tid % LN, cl = tid / LN, lane = tid % 32;
    const int c0 = blockIdx.x * CH, c = c0 + cl, i = blockIdx.y;
    const int ql = tid % CH, qc = c0 + ql, qj = tid / CH;
    const float q_bias = qc < D ? p[qc * (N + 2) + N + 1] : 0.f, q_skip = qc < D ? p[qc * (N + 2) + N] : 0.f;
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
#pragma unroll
        for (int r = 0; r < PER; ++r) {
            const int j = qj + r * LN, t = t0 + j;
            float u = 0.f, dt = 0.f, z = 0.f, dsl;
            if (t < L && qc < D) {
                const size_t row = (size_t)i * L + t;
                u = scan_u<U_IN>(xz, u_in, w, cb, i, t, qc, L, D, K, &dsl);
                dt = softplus_f(ld(delta, row * D + qc) + q_bias);
                z = ld(xz, row * 2 * D + D + qc);
            }
            s_u[j][ql] = u; s_dt[j][ql] = dt; s_z[j][ql] = z;
        }
        stage_bc<NP, TT, THREADS>(&s_bc[0][0], bc, i, t0, L, N, tid);
        __syncthreads();
        if (t0 + TT < L) {
            const size_t row = (size_t)i * L + t0 + TT;
            const int w = min(CH, D - c0) * (int)sizeof(T);
            const L2Rows next[] = {{(U_IN ? u_in + row * D : xz + row * 2 * D) + c0, (U_IN ? D : 2 * D) * sizeof(T), w},
                                   {delta + row * D + c0, D * sizeof(T), w},
                                   {xz + row * 2 * D + D + c0, 2 * D * sizeof(T), w},
                                   {bc + row * 2 * N, 2 * N * sizeof(float), 2 * N * (int)sizeof(float)}};
            prefetch_l2_rows(next, min(TT, L - t0 - TT), tid, THREADS);
        }
        // The recurrences, all TT steps unrolled: only h carries from step to step, so the loads
        // and decays of later steps overlap it. Past the end of the sequence the staged dt and u
        // are 0, which leaves h unchanged. y per step: this thread's part, summed over the
        // channel's lanes after the chunk, all steps at once (`lane_sums`).
        float ys[TT];
#pragma unroll
        for (int j = 0; j < TT; ++j) {
            if (U_IN && j % BWD_SEG == 0 && t0 + j < L && c < D) {
                const int n_seg = (L + BWD_SEG - 1) / BWD_SEG;
                float* saved = states + ((size_t)i * n_seg + (t0 + j) / BWD_SEG) * D * NP + (size_t)c * LN + sl;
#pragma unroll
                for (int k = 0; k < SPT; ++k) saved[(size_t)k * D * LN] = h[k];
            }
            const float dt = s_dt[j][cl], dtu = dt * s_u[j][cl];
            float bs[SPT], cs[SPT];
            load_states(bs, &s_bc[j][sl * SPT]);
            load_states(cs, &s_bc[j][NP + sl * SPT]);
            ys[j] = 0.f;
#pragma unroll
            for (int k = 0; k < SPT; ++k) {
                h[k] = exp2_approx(dt * a2[k]) * h[k] + dtu * bs[k];
                ys[j] += cs[k] * h[k];
            }
        }
        int cnt;
        const int first = lane_sums<1, LN, TT>(ys, lane, cnt);
#pragma unroll
        for (int q = 0; q < TT; ++q)
            if (q < cnt) s_y[first + q][cl] = ys[q];
        __syncthreads();
#pragma unroll
        for (int r = 0; r < PER; ++r) {
            const int j = qj + r * LN;
            if (j < steps && qc < D) {
                const float z = s_z[j][ql];
                st(out, ((size_t)i * L + t0 + j) * D + qc, (s_y[j][ql] + q_skip * s_u[j][ql]) * (z * sigmoid_f(z)));
            }
        }
    }
}

// `mixer_scan_{fwd,bwd}_*` recompute u from xz (the `mixer_scan` op); `mixer_scan_{fwd,bwd}_u_*`
// read it from u_in, the conv's output (the model's hand-written forward and backward), and the
// backward then writes dL/du instead of dL/d(pre-activation).
#define SCAN_VARIANT(NAME, TN, T, NP, S, U_IN)                                                     \
    extern "C" __global__ void __launch_bounds__(Layout<NP, S>::THREADS, 768 / Layout<NP, S>::THREADS) mixer_scan_fwd##NAME##TN##_n##NP##_s##S( \
        const T* xz, const T* u_in, const T* delta, const float* bc, const float* p,               \
        const float* w, const float* cb, T* out, float* states, int L, int D, int N, int K) {       \
        scan_fwd<T, NP, S, U_IN>(xz, u_in, delta, bc, p, w, cb, out, states, L, D, N, K);          \
    }                                                                                               \
    extern "C" __global__ void __launch_bounds__(Layout<NP, S>::THREADS, 768 / Layout<NP, S>::THREADS) mixer_scan_bwd##NAME##TN##_n##NP##_s##S( \
        const T* xz, const T* u_in, const T* delta, const float* bc, const float* p,               \
        const float* w, const float* cb, const T* g, T* dxz, T* ddelta, float* dpre,                \
        float* dbc_part, float* dp_part, float* states, int L, int D, int N, int K) {               \
        scan_bwd<T, NP, S, U_IN>(xz, u_in, delta, bc, p, w, cb, g, dxz, ddelta, dpre, dbc_part,    \
                                 dp_part, states, L, D, N, K);                                      \
    }
#define SCAN_KERNELS(TN, T, NP)                                                                     \
    SCAN_VARIANT(_, TN, T, NP, 4, false)                                                            \
    SCAN_VARIANT(_u_, TN, T, NP, 4, true)                                                           \
    SCAN_VARIANT(_, TN, T, NP, 2, false)                                                            \
    SCAN_VARIANT(_u_, TN, T, NP, 2, true)

SCAN_KERNELS(f32, float, 4)
SCAN_KERNELS(f32, float, 8)
SCAN_KERNELS(f32, float, 16)
SCAN_KERNELS(f32, float, 32)
SCAN_KERNELS(bf16, __nv_bfloat16, 4)
SCAN_KERNELS(bf16, __nv_bfloat16, 8)
SCAN_KERNELS(bf16, __nv_bfloat16, 16)
SCAN_KERNELS(bf16, __nv_bfloat16, 32)
