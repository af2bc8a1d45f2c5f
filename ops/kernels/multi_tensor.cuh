// Multi-tensor launches (ops/src/optim/multi_tensor.rs), as PyTorch's multi-tensor apply: the host
// cuts every tensor into chunks of at most `multi_tensor::CHUNK` elements and gives each block
// one chunk through a table of entries: K pointers (already offset to the chunk's first element)
// and a meta word (low 32 bits: the chunk's length; bit 32: a flag). Blocks never share
// elements, so there are no races.
#pragma once

#define MT_THREADS 256

// The table entry of this block: K pointers, then the meta word.
template <int K>
__device__ __forceinline__ const unsigned long long* mt_entry(const unsigned long long* table) {
    return table + (size_t)blockIdx.x * (K + 1);
}

__device__ __forceinline__ unsigned mt_len(unsigned long long meta) { return (unsigned)(meta & 0xffffffffull); }
__device__ __forceinline__ bool mt_flag(unsigned long long meta) { return (meta >> 32) & 1ull; }
