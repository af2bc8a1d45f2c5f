// Fused softmax cross-entropy over the vocabulary on the GPU, for f32 and bf16 logits; all math in
// f32. The math is the CPU op's (ops/src/model/cross_entropy/cpu.rs), which these kernels are tested
// against (ops/tests/cuda_vs_cpu.rs).
//
//   x: (n, V) logits      targets: (n,) u32
//   forward:  out: (n, 2) f32, out[i] = [lse_i − x[i, t_i], lse_i],  lse_i = log Σ_j exp x[i, j]
//   backward: aux: (n, 2) f32, aux[i] = [lse_i, g_i]  →  dx[i, j] = g_i (exp(x[i,j] − lse_i) − [j = t_i])
//             written in the logits' dtype.
//
// Layout: one block per row. Each thread walks the row with a stride of blockDim.x, keeping a
// running (max m, Σ exp(x − m)) pair ("online softmax": one read of the row), then the block
// merges the pairs with warp shuffles and shared memory in a fixed order (deterministic, no
// atomics). The body of a row is read (and, backward, written) as 16-byte vectors; the few
// elements before the first 16-byte boundary and after the last full vector are handled one by
// one, so any row length and alignment is correct.
//
// A target outside [0, V) is never used as an index: that row's loss and lse are NaN, so its
// gradient row is NaN too, and the mean loss is NaN.

#include <cuda_bf16.h>
#include <float.h>
#include <stdint.h>

__device__ __forceinline__ float to_f32(float v) { return v; }
__device__ __forceinline__ float to_f32(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T> __device__ __forceinline__ T from_f32(float v);
template <> __device__ __forceinline__ float from_f32<float>(float v) { return v; }
template <> __device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float v) { return __float2bfloat16(v); }

// 16 bytes of T as N floats.
template <typename T> struct Pack;

template <> struct Pack<float> {
    static constexpr int N = 4;
    __device__ __forceinline__ static void load(const float* p, float* v) {
        const float4 q = *reinterpret_cast<const float4*>(p);
        v[0] = q.x; v[1] = q.y; v[2] = q.z; v[3] = q.w;
    }
    __device__ __forceinline__ static void store(float* p, const float* v) {
        *reinterpret_cast<float4*>(p) = make_float4(v[0], v[1], v[2], v[3]);
    }
};

template <> struct Pack<__nv_bfloat16> {
    static constexpr int N = 8;
    __device__ __forceinline__ static void load(const __nv_bfloat16* p, float* v) {
        const uint4 q = *reinterpret_cast<const uint4*>(p);
        const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&q);
        for (int k = 0; k < 4; ++k) {
            const float2 f = __bfloat1622float2(h[k]);
            v[2 * k] = f.x;
            v[2 * k + 1] = f.y;
        }
    }
    __device__ __forceinline__ static void store(__nv_bfloat16* p, const float* v) {
        uint4 q;
        __nv_bfloat162* h = reinterpret_cast<__nv_bfloat162*>(&q);
        for (int k = 0; k < 4; ++k) h[k] = __floats2bfloat162_rn(v[2 * k], v[2 * k + 1]);
        *reinterpret_cast<uint4*>(p) = q;
    }
};

// Elements of T from p to the next 16-byte boundary (0 when p is aligned).
template <typename T> __device__ __forceinline__ int misalign(const T* p) {
    return (int)((16 - (reinterpret_cast<uintptr_t>(p) & 15)) & 15) / (int)sizeof(T);
}

// Adds exp(x) to the running pair: s = Σ exp(x_seen − m), m = max seen so far (−FLT_MAX before
// the first element, so −inf logits add exactly 0 and never produce NaN). NaN logits make s NaN.
__device__ __forceinline__ void push(float& m, float& s, float x) {
    if (x > m) {
        s *= expf(m - x);
        m = x;
    }
    s += expf(x - m);
}

// Merges pair (m2, s2) into (m, s). Symmetric bit for bit, so the butterfly below leaves every
// lane with the same value.
__device__ __forceinline__ void merge(float& m, float& s, float m2, float s2) {
    const float mm = fmaxf(m, m2);
    s = s * expf(m - mm) + s2 * expf(m2 - mm);
    m = mm;
}

__device__ __forceinline__ void warp_merge(float& m, float& s) {
    for (int off = 16; off > 0; off /= 2) {
        const float m2 = __shfl_xor_sync(0xffffffffu, m, off);
        const float s2 = __shfl_xor_sync(0xffffffffu, s, off);
        merge(m, s, m2, s2);
    }
}

// Block-wide merge (blockDim.x a multiple of 32, at most 1024); the result is valid in thread 0.
__device__ __forceinline__ void block_merge(float& m, float& s) {
    __shared__ float sm[32], ss[32];
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
    warp_merge(m, s);
    if (lane == 0) {
        sm[warp] = m;
        ss[warp] = s;
    }
    __syncthreads();
    if (warp == 0) {
        m = lane < warps ? sm[lane] : -FLT_MAX;
        s = lane < warps ? ss[lane] : 0.f;
        warp_merge(m, s);
    }
}

template <typename T>
__device__ __forceinline__ void forward(const T* __restrict__ x, const uint32_t* __restrict__ targets,
                                        float* __restrict__ out, int V) {
    constexpr int N = Pack<T>::N;
    const size_t row = blockIdx.x;
    const T* xr = x + row * (size_t)V;
    const int head = min(V, misalign(xr));
    const int vecs = (V - head) / N;
    const int tail = head + vecs * N;

    float m = -FLT_MAX, s = 0.f;
    for (int j = threadIdx.x; j < head; j += blockDim.x) push(m, s, to_f32(xr[j]));
    for (int k = threadIdx.x; k < vecs; k += blockDim.x) {
        float v[N];
        Pack<T>::load(xr + head + (size_t)k * N, v);
        for (int e = 0; e < N; ++e) push(m, s, v[e]);
    }
    for (int j = tail + threadIdx.x; j < V; j += blockDim.x) push(m, s, to_f32(xr[j]));
    block_merge(m, s);

    if (threadIdx.x == 0) {
        const uint32_t t = targets[row];
        if (t < (uint32_t)V) {
            const float lse = m + logf(s);
            out[2 * row] = lse - to_f32(xr[t]);
            out[2 * row + 1] = lse;
        } else {
            out[2 * row] = NAN;
            out[2 * row + 1] = NAN;
        }
    }
}

template <typename T>
__device__ __forceinline__ void backward(const T* __restrict__ x, const uint32_t* __restrict__ targets,
                                         const float* __restrict__ aux, T* __restrict__ dx, int V) {
    constexpr int N = Pack<T>::N;
    const size_t row = blockIdx.x;
    const T* xr = x + row * (size_t)V;
    T* dr = dx + row * (size_t)V;
    const float lse = aux[2 * row], g = aux[2 * row + 1];
    // Out of range: never equal to a column index below, and lse is already NaN (forward).
    const uint32_t t = targets[row];
    // Vectors only where input and output share their alignment; otherwise all scalar.
    int head = min(V, misalign(xr));
    if (head < V && misalign(dr + head) != 0) head = V;
    const int vecs = (V - head) / N;
    const int tail = head + vecs * N;

    for (int j = threadIdx.x; j < head; j += blockDim.x) {
        const float p = expf(to_f32(xr[j]) - lse);
        dr[j] = from_f32<T>(g * ((uint32_t)j == t ? p - 1.f : p));
    }
    for (int k = threadIdx.x; k < vecs; k += blockDim.x) {
        const int j0 = head + k * N;
        float v[N];
        Pack<T>::load(xr + j0, v);
        for (int e = 0; e < N; ++e) {
            const float p = expf(v[e] - lse);
            v[e] = g * ((uint32_t)(j0 + e) == t ? p - 1.f : p);
        }
        Pack<T>::store(dr + j0, v);
    }
    for (int j = tail + threadIdx.x; j < V; j += blockDim.x) {
        const float p = expf(to_f32(xr[j]) - lse);
        dr[j] = from_f32<T>(g * ((uint32_t)j == t ? p - 1.f : p));
    }
}

extern "C" __global__ void cross_entropy_fwd_f32(const float* __restrict__ x, const uint32_t* __restrict__ targets,
                                                 float* __restrict__ out, int V) {
    forward(x, targets, out, V);
}

extern "C" __global__ void cross_entropy_fwd_bf16(const __nv_bfloat16* __restrict__ x,
                                                  const uint32_t* __restrict__ targets, float* __restrict__ out,
                                                  int V) {
    forward(x, targets, out, V);
}

extern "C" __global__ void cross_entropy_bwd_f32(const float* __restrict__ x, const uint32_t* __restrict__ targets,
                                                 const float* __restrict__ aux, float* __restrict__ dx, int V) {
    backward(x, targets, aux, dx, V);
}

extern "C" __global__ void cross_entropy_bwd_bf16(const __nv_bfloat16* __restrict__ x,
                                                  const uint32_t* __restrict__ targets, const float* __restrict__ aux,
                                                  __nv_bfloat16* __restrict__ dx, int V) {
    backward(x, targets, aux, dx, V);
}
