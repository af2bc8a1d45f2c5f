#!/usr/bin/env python3
"""Python reference for tools/bench_pipeline.sh, after nanoGPT's data/fineweb.py: GPT-2 tiktoken
`encode_ordinary` in a multiprocessing pool, each document as [eot] + tokens, uint16 output.

    python3 tools/bench_reference_tokenizer.py FILE.parquet --ranks r50k_base.tiktoken --procs N --out OUT.bin

The tiktoken Encoding is built offline from the r50k ranks file (no download). Prints one line:
`python: docs=… tokens=… seconds=… tokens_per_s=…` (seconds: read + tokenize + write, no startup).
"""
import argparse, multiprocessing as mp, time
import numpy as np
import pyarrow.parquet as pq
import tiktoken
import tiktoken.load

GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
enc = None

def init(ranks):
    global enc
    enc = tiktoken.Encoding(name="gpt2", pat_str=GPT2_PATTERN, mergeable_ranks=tiktoken.load.load_tiktoken_bpe(ranks),
                            special_tokens={"<|endoftext|>": 50256})

def tokenize(doc):
    # as fineweb.py: the eot token delimits documents; tokens as uint16
    tokens = [50256]
    tokens.extend(enc.encode_ordinary(doc))
    arr = np.array(tokens)
    assert (0 <= arr).all() and (arr < 2**16).all(), "token dictionary too large for uint16"
    return arr.astype(np.uint16)

if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("file"); ap.add_argument("--ranks", required=True)
    ap.add_argument("--procs", type=int, default=mp.cpu_count()); ap.add_argument("--out", required=True)
    a = ap.parse_args()
    with mp.Pool(a.procs, initializer=init, initargs=(a.ranks,)) as pool:
        pool.map(abs, range(a.procs))  # start the workers (and load the ranks) before timing
        t0 = time.time()
        texts = pq.read_table(a.file, columns=["text"]).column("text").to_pylist()
        n_tokens = 0
        with open(a.out, "wb") as f:
            for tokens in pool.imap(tokenize, texts, chunksize=16):
                f.write(tokens.tobytes())
                n_tokens += len(tokens)
        dt = time.time() - t0
    print(f"python: docs={len(texts)} tokens={n_tokens} seconds={dt:.2f} tokens_per_s={n_tokens / dt:.0f}")
