// The residual stream's update out = residual + x (ops/src/model/residual.rs): the f32 stream plus a
// block's output in T (bf16 under mixed precision), converted in the same pass (as candle ops, a
// cast kernel and an add: three passes over the stream instead of one).

#include "mixer_common.cuh"

template <typename T>
__device__ void residual_add(const float* __restrict__ r, const T* __restrict__ x,
                             float* __restrict__ out, size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        out[i] = r[i] + ld(x, i);
}

extern "C" __global__ void residual_add_f32(const float* r, const float* x, float* out, size_t n) {
    residual_add<float>(r, x, out, n);
}
extern "C" __global__ void residual_add_bf16(const float* r, const __nv_bfloat16* x, float* out, size_t n) {
    residual_add<__nv_bfloat16>(r, x, out, n);
}
