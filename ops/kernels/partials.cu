// Sums of per-block partial results in a fixed order (deterministic, no atomics):
//   out[o, x] = Σ_{p < parts} part[o, p, x]      part: (outer, parts, inner), out: (outer, inner)
// One thread per (o, x); consecutive threads read consecutive x, so every read is coalesced
// (candle's generic sum over a middle dim of this shape was ~15x slower).
extern "C" __global__ void sum_partials_f32(const float* __restrict__ part, float* __restrict__ out,
                                            int outer, int parts, int inner) {
    const size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)outer * inner) return;
    const size_t o = idx / inner, x = idx % inner;
    const float* p = part + o * parts * (size_t)inner + x;
    float acc = 0.f;
#pragma unroll 8
    for (int k = 0; k < parts; ++k) acc += p[(size_t)k * inner];
    out[idx] = acc;
}
