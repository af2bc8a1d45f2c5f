// RMSNorm on the GPU, f32: y = w · x / √(mean(x²) + eps) over rows of d values.
// The math is the CPU op's (ops/src/rms_norm/cpu.rs), which these kernels are tested against.
//
// One warp per row (consecutive lanes read consecutive columns: coalesced), warp-shuffle sums.
// Backward: dx and 1/rms per row in one kernel; dw as per-strip partial sums over rows (one
// thread per (strip, column)), added afterwards in strip order: deterministic.

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

extern "C" __global__ void rms_norm_fwd_f32(const float* __restrict__ x, const float* __restrict__ w,
                                            float* __restrict__ y, int rows, int d, float eps) {
    const int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (row >= rows) return; // whole warps leave together
    const float* xr = x + (size_t)row * d;
    float ss = 0.f;
    for (int j = lane; j < d; j += 32) ss += xr[j] * xr[j];
    const float r = rsqrtf(warp_sum(ss) / d + eps);
    float* yr = y + (size_t)row * d;
    for (int j = lane; j < d; j += 32) yr[j] = w[j] * xr[j] * r;
}

// dx_j = r·w_j·g_j − x_j·r³·(1/d)·Σ_k w_k g_k x_k; also writes r per row for the dw kernel.
extern "C" __global__ void rms_norm_bwd_dx_f32(const float* __restrict__ x, const float* __restrict__ w,
                                               const float* __restrict__ g, float* __restrict__ dx,
                                               float* __restrict__ inv_rms, int rows, int d, float eps) {
    const int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (row >= rows) return;
    const float* xr = x + (size_t)row * d;
    const float* gr = g + (size_t)row * d;
    float ss = 0.f, dot = 0.f;
    for (int j = lane; j < d; j += 32) {
        ss += xr[j] * xr[j];
        dot += w[j] * gr[j] * xr[j];
    }
    const float r = rsqrtf(warp_sum(ss) / d + eps);
    const float c = r * r * r * warp_sum(dot) / d;
    float* dxr = dx + (size_t)row * d;
    for (int j = lane; j < d; j += 32) dxr[j] = r * w[j] * gr[j] - xr[j] * c;
    if (lane == 0) inv_rms[row] = r;
}

// dw_part[strip][j] = Σ_{rows of the strip} g_j · x_j · r_row.
extern "C" __global__ void rms_norm_bwd_dw_f32(const float* __restrict__ x, const float* __restrict__ g,
                                               const float* __restrict__ inv_rms, float* __restrict__ dw_part,
                                               int rows, int d, int strip_rows) {
    const int j = blockIdx.x * blockDim.x + threadIdx.x, strip = blockIdx.y;
    if (j >= d) return;
    const int r0 = strip * strip_rows, r1 = min(r0 + strip_rows, rows);
    float acc = 0.f;
    for (int r = r0; r < r1; ++r) acc += g[(size_t)r * d + j] * x[(size_t)r * d + j] * inv_rms[r];
    dw_part[(size_t)strip * d + j] = acc;
}
