// Sums across the lanes of a warp for the scan kernels (mixer_scan.cu): many per-lane values
// summed over groups of lanes at once by recursive halving.
#pragma once

// Sums of V per-lane values over groups of lanes: the lanes whose indices differ only in the bits
// LO, 2·LO, ..., HI/2 (LO = 1, HI = LN: the lanes of one channel, i.e. sums over its states;
// LO = LN, HI = 32: the channels of a warp). Recursive halving: at each stage a lane keeps half
// of its values, sends the other half to its partner and adds what it receives, so V sums cost
// about V shuffles instead of V·log2(HI/LO) (once the count is odd, the remaining values go
// through a plain butterfly). On return v[0..count) hold the sums of values [first, first +
// count) of the original list; returns first. Every size is a compile-time constant once the
// loops unroll, so v stays in registers. The order of additions is fixed: deterministic.
template <int LO, int HI, int V>
__device__ __forceinline__ int lane_sums(float (&v)[V], int lane, int& count) {
    int first = 0, cnt = V;
#pragma unroll
    for (int o = HI / 2; o >= LO; o /= 2) {
        if (cnt % 2 == 0) {
            const int half = cnt / 2;
            const bool upper = (lane & o) != 0;
#pragma unroll
            for (int k = 0; k < V / 2; ++k) {
                if (k < half) {
                    const float send = upper ? v[k] : v[k + half];
                    const float keep = upper ? v[k + half] : v[k];
                    v[k] = keep + __shfl_xor_sync(0xffffffffu, send, o);
                }
            }
            if (upper) first += half;
            cnt = half;
        } else {
#pragma unroll
            for (int k = 0; k < V; ++k)
                if (k < cnt) v[k] += __shfl_xor_sync(0xffffffffu, v[k], o);
        }
    }
    count = cnt;
    return first;
}
