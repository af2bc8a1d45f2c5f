// Σx² of many f32 tensors in one launch (ops/src/sum_squares.rs): the gradients' global norm for
// clipping. Block (p, t) sums a grid-stride share of tensor t into part[t·P + p]; the host adds
// the partials in a fixed order (deterministic). One launch instead of five candle ops per
// tensor (~1,300 launches per step for the 130m model's 218 gradients).

#define SSQ_THREADS 256

extern "C" __global__ void sum_squares_f32(const unsigned long long* __restrict__ ptrs,
                                           const long long* __restrict__ lens,
                                           float* __restrict__ part) {
    __shared__ float s_warp[SSQ_THREADS / 32];
    const float* x = reinterpret_cast<const float*>(ptrs[blockIdx.y]);
    const long long n = lens[blockIdx.y];
    float acc = 0.f;
    for (long long i = (long long)blockIdx.x * SSQ_THREADS + threadIdx.x; i < n; i += (long long)gridDim.x * SSQ_THREADS)
        acc += x[i] * x[i];
    for (int o = 16; o > 0; o /= 2) acc += __shfl_xor_sync(0xffffffffu, acc, o);
    if (threadIdx.x % 32 == 0) s_warp[threadIdx.x / 32] = acc;
    __syncthreads();
    if (threadIdx.x == 0) {
        float total = 0.f;
        for (int w = 0; w < SSQ_THREADS / 32; ++w) total += s_warp[w];
        part[(size_t)blockIdx.y * gridDim.x + blockIdx.x] = total;
    }
}
