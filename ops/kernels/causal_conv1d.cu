// Depthwise causal conv1d + bias + SiLU on the GPU, f32, channel-last:
//   x: (b, l, d), w: (d, k), bias: (d,)  →  out[i,t,c] = silu(bias[c] + Σ_j w[c,j] x[i, t-(k-1)+j, c])
// The math is the CPU op's (ops/src/causal_conv1d/cpu.rs), which these kernels are tested against.

__device__ __forceinline__ float sigmoid_f(float v) { return 1.f / (1.f + expf(-v)); }

__device__ __forceinline__ float conv_pre(const float* __restrict__ x, const float* __restrict__ w,
                                          const float* __restrict__ bias, int i, int t, int c,
                                          int L, int D, int K) {
    float acc = bias[c];
    for (int j = 0; j < K; ++j) {
        const int tt = t - (K - 1) + j;
        if (tt >= 0) acc += w[c * K + j] * x[((size_t)i * L + tt) * D + c];
    }
    return acc;
}

// One thread per output element; consecutive threads are consecutive channels (coalesced).
extern "C" __global__ void causal_conv1d_silu_fwd_f32(
    const float* __restrict__ x, const float* __restrict__ w, const float* __restrict__ bias,
    float* __restrict__ out, int B, int L, int D, int K) {
    const size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)B * L * D) return;
    const int c = idx % D;
    const int t = (idx / D) % L;
    const int i = idx / ((size_t)D * L);
    const float pre = conv_pre(x, w, bias, i, t, c, L, D, K);
    out[idx] = pre * sigmoid_f(pre);
}

// dpre = g · silu'(pre), one thread per element.
extern "C" __global__ void causal_conv1d_silu_dpre_f32(
    const float* __restrict__ x, const float* __restrict__ w, const float* __restrict__ bias,
    const float* __restrict__ g, float* __restrict__ dpre, int B, int L, int D, int K) {
    const size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)B * L * D) return;
    const int c = idx % D;
    const int t = (idx / D) % L;
    const int i = idx / ((size_t)D * L);
    const float pre = conv_pre(x, w, bias, i, t, c, L, D, K);
    const float sg = sigmoid_f(pre);
    dpre[idx] = g[idx] * sg * (1.f + pre * (1.f - sg));
}

// dx[i,t,c] = Σ_j w[c,j] dpre[i, t+(k-1)-j, c], one thread per element.
extern "C" __global__ void causal_conv1d_dx_f32(
    const float* __restrict__ dpre, const float* __restrict__ w, float* __restrict__ dx,
    int B, int L, int D, int K) {
    const size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)B * L * D) return;
    const int c = idx % D;
    const int t = (idx / D) % L;
    const int i = idx / ((size_t)D * L);
    float acc = 0.f;
    for (int j = 0; j < K; ++j) {
        const int to = t + (K - 1) - j;
        if (to < L) acc += w[c * K + j] * dpre[((size_t)i * L + to) * D + c];
    }
    dx[idx] = acc;
}

// Partial dw and dbias over strips of `rows` consecutive (i, t) rows: one thread per (strip, c).
// dw_part: (n_strips, d, k + 1), the last column being dbias. The caller sums over strips.
extern "C" __global__ void causal_conv1d_dw_f32(
    const float* __restrict__ x, const float* __restrict__ dpre, float* __restrict__ dw_part,
    int B, int L, int D, int K, int rows) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    const int strip = blockIdx.y;
    if (c >= D) return;
    float acc[9];
    for (int j = 0; j <= K && j < 9; ++j) acc[j] = 0.f;
    const size_t r0 = (size_t)strip * rows;
    const size_t r1 = min(r0 + rows, (size_t)B * L);
    for (size_t r = r0; r < r1; ++r) {
        const int t = r % L;
        const float dp = dpre[r * D + c];
        for (int j = 0; j < K; ++j) {
            const int tt = t - (K - 1) + j;
            if (tt >= 0) acc[j] += dp * x[(r - (K - 1) + j) * D + c];
        }
        acc[K] += dp;
    }
    float* out = dw_part + ((size_t)strip * D + c) * (K + 1);
    for (int j = 0; j <= K; ++j) out[j] = acc[j];
}
