// Selective scan on the GPU, f32, over the packed channel-last layout of
// ops/src/selective_scan/mod.rs:
//   x:  (b, l, 3d)  u | delta | z        bc: (b, l, 2n)  B | C        p: (d, n + 2)  A_log | D | delta_bias
// The math is the CPU op's (ops/src/selective_scan/cpu.rs), which these kernels are tested against.
//
// Thread layout: one thread per (batch i, channel c, state s). A block holds `blockDim.x / W`
// channels of one batch element; W (a power of two <= 32, >= n) lanes per channel, lanes s >= n
// idle. Sums over the state (y, du, ddt) are warp shuffles inside each W-lane group.
//
// Backward, like the reference kernel, never stores all states: pass 1 runs the recurrence and
// saves the state at every chunk boundary (CHUNK steps); pass 2 walks the chunks backwards,
// recomputes the chunk's states into registers and runs the adjoint recurrence. dB and dC are
// summed over the block's channels in shared memory and written as per-block partials, dA_log,
// D and delta_bias as per-batch partials; the caller sums the partials (fixed order), so the
// backward is deterministic.

#define CHUNK 16

__device__ __forceinline__ float softplus_f(float x) { return x > 20.f ? x : log1pf(expf(x)); }
__device__ __forceinline__ float sigmoid_f(float x) { return 1.f / (1.f + expf(-x)); }

__device__ __forceinline__ float group_sum(float v, int W) {
    for (int off = W / 2; off > 0; off /= 2) v += __shfl_xor_sync(0xffffffffu, v, off);
    return v;
}

extern "C" __global__ void selective_scan_fwd_f32(
    const float* __restrict__ x, const float* __restrict__ bc, const float* __restrict__ p,
    float* __restrict__ out, int L, int D, int N, int W) {
    const int s = threadIdx.x % W;
    const int c = blockIdx.x * (blockDim.x / W) + threadIdx.x / W;
    const int i = blockIdx.y;
    const bool chan = c < D;
    const bool lane = chan && s < N;
    const float a = lane ? -expf(p[c * (N + 2) + s]) : 0.f;
    const float d_skip = chan ? p[c * (N + 2) + N] : 0.f;
    const float d_bias = chan ? p[c * (N + 2) + N + 1] : 0.f;
    float h = 0.f;
    for (int t = 0; t < L; ++t) {
        const size_t row = (size_t)i * L + t;
        float u = 0.f, dl = 0.f, z = 0.f, bs = 0.f, cs = 0.f;
        if (chan) { u = x[row * 3 * D + c]; dl = x[row * 3 * D + D + c]; z = x[row * 3 * D + 2 * D + c]; }
        if (lane) { bs = bc[row * 2 * N + s]; cs = bc[row * 2 * N + N + s]; }
        const float dt = softplus_f(dl + d_bias);
        h = expf(dt * a) * h + dt * u * bs;
        const float y = group_sum(cs * h, W);
        if (chan && s == 0) out[row * D + c] = (y + d_skip * u) * (z * sigmoid_f(z));
    }
}

// dx: (b, l, 3d) written in full. dbc_part: (b, gridDim.x, l, 2n) per-block partial sums.
// dp_part: (b, d, n + 2) per-batch partial sums. states: (b, d, W, n_chunks) scratch.
//
// Each chunk's inputs are first staged in shared memory by the whole block with coalesced loads
// (the block's channels are consecutive), so the sequential loops over time read shared memory
// instead of waiting on one global load per step. dB and dC of every (step, channel, state) are
// kept in shared memory and summed over the block's channels in a fixed order (no atomics).
// Shared memory: 4·CHUNK·cpb (u, delta, z, g) + 2·CHUNK·n (B, C) + 2·CHUNK·cpb·n (dB, dC) floats.
extern "C" __global__ void __launch_bounds__(256, 2) selective_scan_bwd_f32(
    const float* __restrict__ x, const float* __restrict__ bc, const float* __restrict__ p,
    const float* __restrict__ g, float* __restrict__ dx, float* __restrict__ dbc_part,
    float* __restrict__ dp_part, float* __restrict__ states, int L, int D, int N, int W) {
    extern __shared__ float smem[];
    const int cpb = blockDim.x / W;            // channels per block
    float* s_u = smem;                         // (CHUNK, cpb)
    float* s_dl = s_u + CHUNK * cpb;           // (CHUNK, cpb)
    float* s_z = s_dl + CHUNK * cpb;           // (CHUNK, cpb)
    float* s_g = s_z + CHUNK * cpb;            // (CHUNK, cpb)
    float* s_bc = s_g + CHUNK * cpb;           // (CHUNK, 2n)
    float* s_dbc = s_bc + CHUNK * 2 * N;       // (CHUNK, 2n, cpb)

    const int s = threadIdx.x % W;
    const int cl = threadIdx.x / W;
    const int c0 = blockIdx.x * cpb;
    const int c = c0 + cl;
    const int i = blockIdx.y;
    const bool chan = c < D;
    const bool lane = chan && s < N;
    const int n_chunks = (L + CHUNK - 1) / CHUNK;
    const float a = lane ? -expf(p[c * (N + 2) + s]) : 0.f;
    const float d_skip = chan ? p[c * (N + 2) + N] : 0.f;
    const float d_bias = chan ? p[c * (N + 2) + N + 1] : 0.f;
    float* my_states = states + (((size_t)i * D + (chan ? c : 0)) * W + s) * n_chunks;

    // Stages steps [t0, t0 + CHUNK) of u, delta (and z, g when `all`) and B, C.
    auto stage = [&](int t0, bool all) {
        for (int q = threadIdx.x; q < CHUNK * cpb; q += blockDim.x) {
            const int j = q / cpb, cc = c0 + q % cpb, t = t0 + j;
            float u = 0.f, dl = 0.f, z = 0.f, gt = 0.f;
            if (t < L && cc < D) {
                const size_t row = (size_t)i * L + t;
                u = x[row * 3 * D + cc];
                dl = x[row * 3 * D + D + cc];
                if (all) { z = x[row * 3 * D + 2 * D + cc]; gt = g[row * D + cc]; }
            }
            s_u[q] = u; s_dl[q] = dl; s_z[q] = z; s_g[q] = gt;
        }
        for (int q = threadIdx.x; q < CHUNK * 2 * N; q += blockDim.x) {
            const int t = t0 + q / (2 * N);
            s_bc[q] = t < L ? bc[((size_t)i * L + t) * 2 * N + q % (2 * N)] : 0.f;
        }
    };

    // Pass 1: the recurrence, saving h before each chunk.
    float h = 0.f;
    for (int k = 0; k < n_chunks; ++k) {
        const int t0 = k * CHUNK;
        __syncthreads();
        stage(t0, false);
        __syncthreads();
        if (lane) my_states[k] = h;
#pragma unroll
        for (int j = 0; j < CHUNK; ++j) {
            const float dt = softplus_f(s_dl[j * cpb + cl] + d_bias);
            const float bs = lane ? s_bc[j * 2 * N + s] : 0.f;
            h = expf(dt * a) * h + dt * s_u[j * cpb + cl] * bs;
        }
    }

    // Pass 2: chunks backwards.
    float carry = 0.f; // dL/dh_{t+1} * exp(dt_{t+1} A)
    float d_a = 0.f, acc_dskip = 0.f, acc_dbias = 0.f;
    for (int k = n_chunks - 1; k >= 0; --k) {
        const int t0 = k * CHUNK;
        __syncthreads();
        stage(t0, true);
        __syncthreads();
        float hk[CHUNK];
        const float h_start = lane ? my_states[k] : 0.f;
        float hh = h_start;
#pragma unroll
        for (int j = 0; j < CHUNK; ++j) {
            const float dt = softplus_f(s_dl[j * cpb + cl] + d_bias);
            const float bs = lane ? s_bc[j * 2 * N + s] : 0.f;
            hh = expf(dt * a) * hh + dt * s_u[j * cpb + cl] * bs;
            hk[j] = hh;
        }
#pragma unroll
        for (int j = CHUNK - 1; j >= 0; --j) {
            const int t = t0 + j;
            const float u = s_u[j * cpb + cl], z = s_z[j * cpb + cl], gt = s_g[j * cpb + cl];
            const float bs = lane ? s_bc[j * 2 * N + s] : 0.f;
            const float cs = lane ? s_bc[j * 2 * N + N + s] : 0.f;
            const float pre = s_dl[j * cpb + cl] + d_bias;
            const float dt = softplus_f(pre);
            const float e = expf(dt * a);
            const float hcur = hk[j];
            const float hprev = j > 0 ? hk[j - 1] : h_start;
            const float sz = sigmoid_f(z);
            const float gy = gt * z * sz;
            const float ah = gy * cs + carry;
            const float ddt = group_sum(ah * (a * e * hprev + bs * u), W);
            const float du = group_sum(ah * dt * bs, W);
            const float y = group_sum(cs * hcur, W);
            d_a += ah * dt * e * hprev;
            carry = ah * e;
            if (s < N) {
                s_dbc[(j * 2 * N + s) * cpb + cl] = lane ? ah * dt * u : 0.f;      // dB
                s_dbc[(j * 2 * N + N + s) * cpb + cl] = lane ? gy * hcur : 0.f;    // dC
            }
            if (chan && s == 0 && t < L) {
                const size_t row = (size_t)i * L + t;
                const float ddelta = ddt * sigmoid_f(pre);
                dx[row * 3 * D + c] = du + gy * d_skip;
                dx[row * 3 * D + D + c] = ddelta;
                dx[row * 3 * D + 2 * D + c] = gt * (y + d_skip * u) * sz * (1.f + z * (1.f - sz));
                acc_dskip += gy * u;
                acc_dbias += ddelta;
            }
        }
        __syncthreads();
        // Sum dB, dC over the block's channels in channel order; one partial per block.
        float* part = dbc_part + ((size_t)i * gridDim.x + blockIdx.x) * L * 2 * N;
        for (int q = threadIdx.x; q < CHUNK * 2 * N; q += blockDim.x) {
            const int t = t0 + q / (2 * N);
            float acc = 0.f;
            for (int cc = 0; cc < cpb; ++cc) acc += s_dbc[q * cpb + cc];
            if (t < L) part[(size_t)t * 2 * N + q % (2 * N)] = acc;
        }
    }
    float* dp = dp_part + ((size_t)i * D + c) * (N + 2);
    if (lane) dp[s] = d_a * a;
    if (chan && s == 0) { dp[N] = acc_dskip; dp[N + 1] = acc_dbias; }
}
