// Σx² of many f32 tensors in one launch (ops/src/optim/sum_squares.rs): the gradients' global norm for
// clipping. Block (p, t) sums a grid-stride share of tensor t into part[t·P + p]; the host adds
// the partials in a fixed order (deterministic). One launch instead of five candle ops per
// tensor (~1,300 launches per step for the 130m model's 218 gradients).

#include "block_sum.cuh"

#define SSQ_THREADS 256

extern "C" __global__ void sum_squares_f32(const unsigned long long* __restrict__ ptrs,
                                           const long long* __restrict__ lens,
                                           float* __restrict__ part) {
    const float* x = reinterpret_cast<const float*>(ptrs[blockIdx.y]);
    const long long n = lens[blockIdx.y];
    float acc = 0.f;
    for (long long i = (long long)blockIdx.x * SSQ_THREADS + threadIdx.x; i < n; i += (long long)gridDim.x * SSQ_THREADS)
        acc += x[i] * x[i];
    block_sum_to<SSQ_THREADS>(acc, part + (size_t)blockIdx.y * gridDim.x + blockIdx.x);
}
