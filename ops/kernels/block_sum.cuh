// A block's sum of one float per thread, for kernels that write per-block partial sums (muon.cu,
// sum_squares.cu): warp shuffles, then thread 0 adds the warps' sums in warp order, so the result
// is deterministic. THREADS is the block size, a multiple of 32; every thread must call it.
#pragma once

template <int THREADS>
__device__ __forceinline__ void block_sum_to(float acc, float* __restrict__ out) {
    __shared__ float s_warp[THREADS / 32];
    for (int o = 16; o > 0; o /= 2) acc += __shfl_xor_sync(0xffffffffu, acc, o);
    if (threadIdx.x % 32 == 0) s_warp[threadIdx.x / 32] = acc;
    __syncthreads();
    if (threadIdx.x == 0) {
        float total = 0.f;
        for (int w = 0; w < THREADS / 32; ++w) total += s_warp[w];
        *out = total;
    }
}
