// Packs up to PACK_MAX_PARTS 2-D regions (f32 or bf16, rows of `cols` elements `src_stride`
// apart) into one new tensor (f32 or bf16) in one pass: part q's element (row, col) goes to
// dst_off + row·dst_stride + col (ops/src/util/pack.rs). It replaces the chains of narrow copies,
// casts and concatenations with which the mixer assembled its small inputs (B | C and the
// per-channel parameters, `mamba_ops::mixer_scan_rows_u`) and x_proj's gradient [dΔ_low | dB | dC]
// (`mamba_ops::concat_columns`), and split [dA_log | dD | ddelta_bias]: about fifteen launches of
// 2–3 µs each per layer and micro-batch.
// Consecutive threads take consecutive elements of a part (consecutive columns of a row).

#include "mixer_common.cuh"

#define PACK_MAX_PARTS 8

// One region; the host's `#[repr(C)]` twin is `pack::Part` (40 bytes).
struct PackPart {
    const void* src;
    unsigned long long dst_off;
    unsigned src_stride, rows, cols, dst_stride, bf16, pad;
};

struct PackParts {
    PackPart p[PACK_MAX_PARTS];
    unsigned long long total;
    int count;
    int pad;
};

template <typename O>
__device__ void pack_2d(const PackParts& ps, O* __restrict__ out) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < ps.total; i += (size_t)gridDim.x * blockDim.x) {
        // The part holding element i (parts in order, a handful: a linear search).
        size_t base = 0;
        int q = 0;
        for (; q < ps.count - 1; ++q) {
            const size_t size = (size_t)ps.p[q].rows * ps.p[q].cols;
            if (i < base + size) break;
            base += size;
        }
        const PackPart& pp = ps.p[q];
        const unsigned e = (unsigned)(i - base), row = e / pp.cols, col = e % pp.cols;
        const size_t s = (size_t)row * pp.src_stride + col;
        const float v = pp.bf16 ? ld(static_cast<const __nv_bfloat16*>(pp.src), s) : ld(static_cast<const float*>(pp.src), s);
        st(out, pp.dst_off + (size_t)row * pp.dst_stride + col, v);
    }
}

extern "C" __global__ void pack_2d_f32(PackParts ps, float* out) { pack_2d<float>(ps, out); }
extern "C" __global__ void pack_2d_bf16(PackParts ps, __nv_bfloat16* out) { pack_2d<__nv_bfloat16>(ps, out); }
