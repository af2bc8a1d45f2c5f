// Muon's elementwise work on stacked (k, r, c) f32 matrices (ops/src/optim/muon), fused so that each
// big tensor is read once or twice instead of once per candle op (candle's affine, add, cast,
// broadcast division and the norm's square/sum each made a full pass; ~10 ms of a 16 ms Muon
// step for the 130m model on an H200).
//
// muon_momentum_many_V: m ← β·m + g (f32) and the look-ahead v = g + β·m (Nesterov) or m, written
// in V (f32, or bf16: Newton–Schulz's input dtype), in place on stacked m and v, reading each
// matrix's gradient where it is (entries m, v, g of multi_tensor.cuh): no stacked copy of the
// gradients. Newton–Schulz takes v unnormalized (below).
// muon_apply_T: w·decay − scale·o, o in T (the orthogonalized update), out f32;
// muon_apply_many_T the same in place on every matrix of a shape group in one launch (entries
// w, o of multi_tensor.cuh).
// muon_axpby_T: a·x + b·y in T with f32 arithmetic, plus d on the diagonals of the trailing r×r
// matrices when r > 0, times s_j^power for matrix j (of `per` elements) when given scales s:
// Muon's momentum, and Newton–Schulz's aI + bA + cA² (one pass instead of two affines and an add,
// whose bf16 kernels also rounded a, b and c to bf16).
// muon_gram_scales_T: s_j = 1 / (sqrt(tr G_j) + eps) for a stack of Gram matrices G_j = X_jᵀX_j
// (or X_j X_jᵀ), so s_j = 1 / (‖X_j‖_F + eps): Newton–Schulz's normalization folded into its first
// iteration, s_j² G_j being the normalized input's Gram matrix and s_j·(aI + bA + cA²) its
// polynomial. This replaced two passes over the (k, r, c) look-ahead (the norm, then the
// division): ~0.45 ms per step for the 130m model. One block per matrix, the diagonal summed in
// a fixed order: deterministic.

#include "mixer_common.cuh"
#include "block_sum.cuh"
#include "multi_tensor.cuh"

#define MUON_THREADS 256

// muon_momentum_many's scalars, one kernel parameter (a #[repr(C)] struct on the host).
struct MuonMomentumScalars {
    float beta;
    int nesterov;
};

template <typename V>
__device__ void muon_momentum_many(const unsigned long long* __restrict__ table, MuonMomentumScalars h) {
    const unsigned long long* e = mt_entry<3>(table);
    float* m = reinterpret_cast<float*>(e[0]);
    V* v = reinterpret_cast<V*>(e[1]);
    const float* g = reinterpret_cast<const float*>(e[2]);
    const unsigned n = mt_len(e[3]);
    for (unsigned i = threadIdx.x; i < n; i += blockDim.x) {
        const float gi = g[i], mi = h.beta * m[i] + gi;
        m[i] = mi;
        st(v, i, h.nesterov ? gi + h.beta * mi : mi);
    }
}

// muon_apply_many's scalars, one kernel parameter (a #[repr(C)] struct on the host).
struct MuonApplyScalars {
    float decay, scale;
};

template <typename T>
__device__ void muon_apply(const float* __restrict__ w, const T* __restrict__ o, float decay,
                           float scale, float* __restrict__ out, size_t n) {
    for (size_t i = (size_t)blockIdx.x * MUON_THREADS + threadIdx.x; i < n; i += (size_t)gridDim.x * MUON_THREADS)
        out[i] = w[i] * decay - scale * ld(o, i);
}

template <typename T>
__device__ void muon_axpby(const T* __restrict__ x, const T* __restrict__ y, float a, float b,
                           float d, int r, const float* __restrict__ scales, int power, unsigned per,
                           T* __restrict__ out, size_t n) {
    // With the diagonal term or scales n < 2^32 (the host checks): 32-bit index math, and element
    // q = row·r + col of a matrix is diagonal iff q is a multiple of r + 1.
    const unsigned rr = (unsigned)r * (unsigned)r;
    for (size_t i = (size_t)blockIdx.x * MUON_THREADS + threadIdx.x; i < n; i += (size_t)gridDim.x * MUON_THREADS) {
        float v = a * ld(x, i) + b * ld(y, i);
        if (r > 0 && (unsigned)i % rr % (unsigned)(r + 1) == 0) v += d;
        if (scales != nullptr) {
            const float s = scales[(unsigned)i / per];
            v *= power == 2 ? s * s : s;
        }
        st(out, i, v);
    }
}

template <typename T>
__device__ void muon_gram_scales(const T* __restrict__ gram, int r, float eps, float* __restrict__ scales) {
    const T* g = gram + (size_t)blockIdx.x * r * r;
    float acc = 0.f;
    for (int q = threadIdx.x; q < r; q += MUON_THREADS) acc += ld(g, (size_t)q * (r + 1));
    __shared__ float trace;
    block_sum_to<MUON_THREADS>(acc, &trace);
    if (threadIdx.x == 0) scales[blockIdx.x] = 1.f / (sqrtf(fmaxf(trace, 0.f)) + eps);
}

#define MUON_KERNELS(TN, T)                                                                         \
    extern "C" __global__ void muon_momentum_many_##TN(const unsigned long long* table,            \
                                                       MuonMomentumScalars h) {                    \
        muon_momentum_many<T>(table, h);                                                            \
    }                                                                                               \
    extern "C" __global__ void muon_gram_scales_##TN(const T* gram, int r, float eps, float* scales) { \
        muon_gram_scales<T>(gram, r, eps, scales);                                                  \
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
                                               int r, const float* scales, int power, unsigned per, \
                                               T* out, size_t n) {                                  \
        muon_axpby<T>(x, y, a, b, d, r, scales, power, per, out, n);                                \
    }

MUON_KERNELS(f32, float)
MUON_KERNELS(bf16, __nv_bfloat16)
