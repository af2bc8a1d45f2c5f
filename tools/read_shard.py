#!/usr/bin/env python3
"""Reads a shard file (format v1, docs/shard-format.md) with numpy + zstandard.

    python3 tools/read_shard.py data/train-00000000.shard [--raw OUT]

prints the header and the token array's shape; --raw writes all chunks as little-endian uint32.
"""
import struct, sys
import numpy as np
import zstandard

HEADER = struct.Struct("<8sIIIIIIQQQ")  # magic, version, token_bytes, chunk_tokens, n_chunks, vocab, eot, index_offset, seq, first_token

def read_shard(path):
    """Returns (header dict, tokens) with tokens of shape (n_chunks, chunk_tokens)."""
    data = open(path, "rb").read()
    magic, version, tb, ct, n, vocab, eot, index_offset, seq, first = HEADER.unpack_from(data, 0)
    assert magic == b"MAMBASHD" and version == 1, f"{path}: not a v1 shard"
    offsets = np.frombuffer(data, dtype="<u8", count=n + 1, offset=index_offset)
    assert offsets[0] == 4096 and offsets[-1] == index_offset and len(data) == index_offset + 8 * (n + 1), f"{path}: bad index"
    dctx, dtype = zstandard.ZstdDecompressor(), np.dtype("<u2" if tb == 2 else "<u4")
    tokens = np.empty((n, ct), dtype=dtype)
    for k in range(n):
        raw = dctx.decompress(data[offsets[k]:offsets[k + 1]])  # checks the frame checksum
        tokens[k] = np.frombuffer(raw, dtype=dtype, count=ct)
    header = dict(token_bytes=tb, chunk_tokens=ct, n_chunks=n, vocab_size=vocab, eot_id=eot, seq=seq, first_token=first)
    return header, tokens

if __name__ == "__main__":
    header, tokens = read_shard(sys.argv[1])
    print(header, "tokens", tokens.shape, tokens.dtype)
    if len(sys.argv) > 3 and sys.argv[2] == "--raw":
        tokens.astype("<u4").tofile(sys.argv[3])
