// In-place updates of many f32 tensors in one launch each (ops/src/multi_tensor.rs; the table's
// layout in multi_tensor.cuh). Each element's arithmetic is the per-tensor candle op's.

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
