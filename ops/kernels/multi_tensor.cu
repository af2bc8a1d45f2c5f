// Updates of many tensors in one launch each (ops/src/optim/multi_tensor.rs; the table's
// layout in multi_tensor.cuh). Each element's arithmetic is the per-tensor candle op's.

#include <cuda_bf16.h>
#include "multi_tensor.cuh"

// x ← s·x (the gradients' clipping).
extern "C" __global__ void scale_many_f32(const unsigned long long* __restrict__ table, float s) {
    const unsigned long long* e = mt_entry<1>(table);
    float* x = reinterpret_cast<float*>(e[0]);
    const unsigned n = mt_len(e[1]);
    for (unsigned i = threadIdx.x; i < n; i += blockDim.x) x[i] *= s;
}

// acc ← acc + x (gradient accumulation over micro-batches).
extern "C" __global__ void add_many_f32(const unsigned long long* __restrict__ table) {
    const unsigned long long* e = mt_entry<2>(table);
    float* acc = reinterpret_cast<float*>(e[0]);
    const float* x = reinterpret_cast<const float*>(e[1]);
    const unsigned n = mt_len(e[2]);
    for (unsigned i = threadIdx.x; i < n; i += blockDim.x) acc[i] += x[i];
}

// acc ← acc + x as f32 (the LM head's bf16 gradient summed over row blocks, model/head_loss.rs).
extern "C" __global__ void add_many_bf16_f32(const unsigned long long* __restrict__ table) {
    const unsigned long long* e = mt_entry<2>(table);
    float* acc = reinterpret_cast<float*>(e[0]);
    const __nv_bfloat16* x = reinterpret_cast<const __nv_bfloat16*>(e[1]);
    const unsigned n = mt_len(e[2]);
    for (unsigned i = threadIdx.x; i < n; i += blockDim.x) acc[i] += __bfloat162float(x[i]);
}

// dst ← src as f32 (the bf16 matmul weights' gradients into their f32 parameters' dtype).
extern "C" __global__ void cast_many_bf16_f32(const unsigned long long* __restrict__ table) {
    const unsigned long long* e = mt_entry<2>(table);
    float* dst = reinterpret_cast<float*>(e[0]);
    const __nv_bfloat16* src = reinterpret_cast<const __nv_bfloat16*>(e[1]);
    const unsigned n = mt_len(e[2]);
    for (unsigned i = threadIdx.x; i < n; i += blockDim.x) dst[i] = __bfloat162float(src[i]);
}
