// Muon's elementwise work on stacked (k, r, c) f32 matrices (ops/src/muon), fused so that each
// big tensor is read once or twice instead of once per candle op (candle's affine, add, cast,
// broadcast division and the norm's square/sum each made a full pass; ~10 ms of a 16 ms Muon
// step for the 130m model on an H200).
//
// muon_sumsq + muon_scale_T: u = v / (‖v‖_F + eps) per matrix, v = g + β·m (Nesterov) or m,
// written in T (bf16 or f32): the Newton–Schulz input. sumsq writes per-block partial sums of v²
// (grid (P, k)); every block of muon_scale sums its matrix's P partials in the same fixed order,
// so the norm (and the result) is deterministic.
// muon_momentum_many_f32: m ← β·m + g and the look-ahead v = g + β·m (Nesterov) or m, in place
// on stacked m and v, reading each matrix's gradient where it is (entries m, v, g of
// multi_tensor.cuh): no stacked copy of the gradients, and the Newton–Schulz input then reads v
// alone.
// muon_apply_T: w·decay − scale·o, o in T (the orthogonalized update), out f32;
// muon_apply_many_T the same in place on every matrix of a shape group in one launch (entries
// w, o of multi_tensor.cuh).
// muon_axpby_T: a·x + b·y in T with f32 arithmetic, plus d on the diagonals of the trailing r×r
// matrices when r > 0: Muon's momentum, and Newton–Schulz's aI + bA + cA² (one pass instead of
// two affines and an add, whose bf16 kernels also rounded a, b and c to bf16).

#include "mixer_common.cuh"
#include "block_sum.cuh"
#include "multi_tensor.cuh"

#define MUON_THREADS 256

// muon_momentum_many's scalars, one kernel parameter (a #[repr(C)] struct on the host).
struct MuonMomentumScalars {
    float beta;
    int nesterov;
};

extern "C" __global__ void muon_momentum_many_f32(const unsigned long long* __restrict__ table, MuonMomentumScalars h) {
    const unsigned long long* e = mt_entry<3>(table);
    float* m = reinterpret_cast<float*>(e[0]);
    float* v = reinterpret_cast<float*>(e[1]);
    const float* g = reinterpret_cast<const float*>(e[2]);
    const unsigned n = mt_len(e[3]);
    for (unsigned i = threadIdx.x; i < n; i += blockDim.x) {
        const float gi = g[i], mi = h.beta * m[i] + gi;
        m[i] = mi;
        v[i] = h.nesterov ? gi + h.beta * mi : mi;
    }
}

// muon_apply_many's scalars, one kernel parameter (a #[repr(C)] struct on the host).
struct MuonApplyScalars {
    float decay, scale;
};

__device__ __forceinline__ float muon_v(const float* __restrict__ g, const float* __restrict__ m,
                                        size_t i, float beta, int nesterov) {
    return nesterov ? g[i] + beta * m[i] : m[i];
}

extern "C" __global__ void muon_sumsq(const float* __restrict__ g, const float* __restrict__ m,
                                      float beta, int nesterov, int per, float* __restrict__ part) {
    const size_t base = (size_t)blockIdx.y * per;
    float acc = 0.f;
    for (int i = blockIdx.x * MUON_THREADS + threadIdx.x; i < per; i += gridDim.x * MUON_THREADS) {
        const float v = muon_v(g, m, base + i, beta, nesterov);
        acc += v * v;
    }
    block_sum_to<MUON_THREADS>(acc, part + (size_t)blockIdx.y * gridDim.x + blockIdx.x);
}

template <typename T>
__device__ void muon_scale(const float* __restrict__ g, const float* __restrict__ m, float beta,
                           int nesterov, int per, const float* __restrict__ part, int parts,
                           float eps, T* __restrict__ u) {
    const float* p = part + (size_t)blockIdx.y * parts;
    float ss = 0.f;
    for (int q = 0; q < parts; ++q) ss += p[q];
    const float inv = 1.f / (sqrtf(ss) + eps);
    const size_t base = (size_t)blockIdx.y * per;
    for (int i = blockIdx.x * MUON_THREADS + threadIdx.x; i < per; i += gridDim.x * MUON_THREADS)
        st(u, base + i, muon_v(g, m, base + i, beta, nesterov) * inv);
}

template <typename T>
__device__ void muon_apply(const float* __restrict__ w, const T* __restrict__ o, float decay,
                           float scale, float* __restrict__ out, size_t n) {
    for (size_t i = (size_t)blockIdx.x * MUON_THREADS + threadIdx.x; i < n; i += (size_t)gridDim.x * MUON_THREADS)
        out[i] = w[i] * decay - scale * ld(o, i);
}

template <typename T>
__device__ void muon_axpby(const T* __restrict__ x, const T* __restrict__ y, float a, float b,
                           float d, int r, T* __restrict__ out, size_t n) {
    // With the diagonal term n < 2^32 (the host checks): 32-bit index math, and element
    // q = row·r + col of a matrix is diagonal iff q is a multiple of r + 1.
    const unsigned rr = (unsigned)r * (unsigned)r;
    for (size_t i = (size_t)blockIdx.x * MUON_THREADS + threadIdx.x; i < n; i += (size_t)gridDim.x * MUON_THREADS) {
        float v = a * ld(x, i) + b * ld(y, i);
        if (r > 0 && (unsigned)i % rr % (unsigned)(r + 1) == 0) v += d;
        st(out, i, v);
    }
}

#define MUON_KERNELS(TN, T)                                                                         \
    extern "C" __global__ void muon_scale_##TN(const float* g, const float* m, float beta,          \
                                               int nesterov, int per, const float* part, int parts, \
                                               float eps, T* u) {                                   \
        muon_scale<T>(g, m, beta, nesterov, per, part, parts, eps, u);                              \
    }                                                                                               \
    extern "C" __global__ void muon_apply_##TN(const float* w, const T* o, float decay, float scale, \
                                               float* out, size_t n) {                              \
        muon_apply<T>(w, o, decay, scale, out, n);                                                  \
    }                                                                                               \
    extern "C" __global__ void muon_apply_many_##TN(const unsigned long long* table,               \
                                                    MuonApplyScalars h) {                          \
        const unsigned long long* e = mt_entry<2>(table);                                           \
        float* w = reinterpret_cast<float*>(e[0]);                                                  \
        const T* o = reinterpret_cast<const T*>(e[1]);                                              \
        const unsigned n = mt_len(e[2]);                                                            \
        for (unsigned i = threadIdx.x; i < n; i += blockDim.x) w[i] = w[i] * h.decay - h.scale * ld(o, i); \
    }                                                                                               \
    extern "C" __global__ void muon_axpby_##TN(const T* x, const T* y, float a, float b, float d,  \
                                               int r, T* out, size_t n) {                           \
        muon_axpby<T>(x, y, a, b, d, r, out, n);                                                    \
    }

MUON_KERNELS(f32, float)
MUON_KERNELS(bf16, __nv_bfloat16)
