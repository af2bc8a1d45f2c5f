// The tied embedding's weight gradient (ops/src/model/embedding/rows.rs, `backward::embedding_rows`):
// dw[v, c] = head[v, c] + Σ_{p in positions of v} g[p, c], in f32, with the head's gradient (or 0)
// first and then the rows of g in increasing position order: the CPU path's order, so the two
// agree bit for bit. The positions come from a CSR built on the host (TokenIndex): row v's are
// positions[offsets[v] .. offsets[v+1]].
//
// Blocks take the vocabulary rows (grid-stride); a block's threads take the columns, EMB_COLS
// each per pass (blockDim.x apart, so a warp reads consecutive columns), with the sums in
// registers. One thread owns each (row, column): no atomics, no zeroing pass, every element of
// dw written once. Rows without positions (most of them) just convert the head's gradient (or
// write zeros). A row's positions are read 32 at a time, one per lane, and passed around the warp
// by shuffles; the gradient rows of EMB_BATCH positions are loaded before they are added (in
// position order), so a frequent token's long row keeps that many loads in flight per column.
// The control flow depends only on the row, so every warp is converged at the shuffles.
//
// On an H200: 0.14 ms per step for the 130m model at micro-batch 16 (docs/benchmarks.md, eighth
// round). A row's positions are summed by one block, so a batch in which one token fills
// thousands of positions takes longer.
//
// History: candle's index_add ran this as one block walking all positions (8.5 ms per step for
// the 130m model at micro-batch 16 on an H200); 256 blocks each walking all positions and
// owning the rows v ≡ block (mod 256) took 1.34 ms, plus 0.37 ms to convert and add the head's
// gradient with candle ops.

#include "mixer_common.cuh"

#define EMB_COLS 4  // columns per thread per pass; ops/src/model/embedding/cuda.rs sizes blocks by it
#define EMB_BATCH 8 // positions whose loads are issued before their adds (divides 32)

template <typename G, typename H, bool HEAD>
__device__ void embedding_rows(const unsigned* __restrict__ offsets,
                               const unsigned* __restrict__ positions, const G* __restrict__ g,
                               const H* __restrict__ head, float* __restrict__ dw, unsigned vocab,
                               int d) {
    const unsigned lane = threadIdx.x % 32;
    for (size_t v = blockIdx.x; v < vocab; v += gridDim.x) {
        const unsigned beg = offsets[v], end = offsets[v + 1];
        for (int c0 = 0; c0 < d; c0 += EMB_COLS * blockDim.x) {
            // This thread's columns; past the end it reads column d - 1 and never stores (the
            // loads need no guard, and each batch's can all be in flight at once).
            int col[EMB_COLS];
            float acc[EMB_COLS];
#pragma unroll
            for (int j = 0; j < EMB_COLS; ++j) {
                col[j] = min(c0 + j * (int)blockDim.x + (int)threadIdx.x, d - 1);
                acc[j] = HEAD ? ld(head, v * d + col[j]) : 0.f;
            }
            for (unsigned k0 = beg; k0 < end; k0 += 32) {
                const unsigned n32 = min(end - k0, 32u);
                const unsigned mine = positions[k0 + min(lane, n32 - 1)]; // lane b: position k0 + b
                for (unsigned b0 = 0; b0 < n32; b0 += EMB_BATCH) {
                    const unsigned cnt = min(n32 - b0, (unsigned)EMB_BATCH);
                    float x[EMB_BATCH][EMB_COLS];
                    if (cnt == EMB_BATCH) {
#pragma unroll
                        for (int b = 0; b < EMB_BATCH; ++b) {
                            const size_t row = (size_t)__shfl_sync(0xffffffffu, mine, b0 + b) * d; // g: (n, d)
#pragma unroll
                            for (int j = 0; j < EMB_COLS; ++j) x[b][j] = ld(g, row + col[j]);
                        }
#pragma unroll
                        for (int b = 0; b < EMB_BATCH; ++b)
#pragma unroll
                            for (int j = 0; j < EMB_COLS; ++j) acc[j] += x[b][j];
                    } else { // the row's last positions: the same, for the first cnt
#pragma unroll
                        for (int b = 0; b < EMB_BATCH; ++b) {
                            const size_t row = (size_t)__shfl_sync(0xffffffffu, mine, min(b0 + b, 31u)) * d;
                            if (b < cnt)
#pragma unroll
                                for (int j = 0; j < EMB_COLS; ++j) x[b][j] = ld(g, row + col[j]);
                        }
#pragma unroll
                        for (int b = 0; b < EMB_BATCH; ++b)
                            if (b < cnt)
#pragma unroll
                                for (int j = 0; j < EMB_COLS; ++j) acc[j] += x[b][j];
                    }
                }
            }
#pragma unroll
            for (int j = 0; j < EMB_COLS; ++j) {
                if (c0 + j * (int)blockDim.x + (int)threadIdx.x < d) dw[v * d + col[j]] = acc[j];
            }
        }
    }
}

// embedding_rows_<g>: no head gradient; embedding_rows_<g>_<head>: with one.
#define EMB_NO_HEAD(NAME, G)                                                                       \
    extern "C" __global__ void NAME(const unsigned* offsets, const unsigned* positions,           \
                                    const G* g, float* dw, unsigned vocab, int d) {               \
        embedding_rows<G, float, false>(offsets, positions, g, nullptr, dw, vocab, d);            \
    }
#define EMB_HEAD(NAME, G, H)                                                                       \
    extern "C" __global__ void NAME(const unsigned* offsets, const unsigned* positions,           \
                                    const G* g, const H* head, float* dw, unsigned vocab, int d) { \
        embedding_rows<G, H, true>(offsets, positions, g, head, dw, vocab, d);                    \
    }

EMB_NO_HEAD(embedding_rows_f32, float)
EMB_NO_HEAD(embedding_rows_bf16, __nv_bfloat16)
EMB_HEAD(embedding_rows_f32_f32, float, float)
EMB_HEAD(embedding_rows_f32_bf16, float, __nv_bfloat16)
EMB_HEAD(embedding_rows_bf16_f32, __nv_bfloat16, float)
EMB_HEAD(embedding_rows_bf16_bf16, __nv_bfloat16, __nv_bfloat16)
