#!/usr/bin/env bash
# GPU throughput of the trainer (fwd + bwd + hybrid optimizer step on random tokens), 130m,
# seq 1024, at several micro-batch sizes, with peak GPU memory sampled by nvidia-smi.
# Usage (on the GPU machine): tools/gpu_bench.sh TRAINER_BINARY [OUT_DIR] [MICRO_BATCHES...]
set -euo pipefail
bin=$1; out=${2:-.}; shift $(( $# >= 2 ? 2 : $# ))
mbs=${*:-8 16 32}
mkdir -p "$out"
for mb in $mbs; do
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 > "$out/mem-mb$mb.csv" &
  smi=$!
  "$bin" bench --model 130m --device cuda:0 --seq-len 1024 --micro-batch "$mb" --grad-accum 1 --steps 3 2>&1 | tee "$out/bench-mb$mb.log"
  kill "$smi"; wait "$smi" 2>/dev/null || true
  echo "mb $mb: peak GPU memory $(sort -n "$out/mem-mb$mb.csv" | tail -1) MiB (nvidia-smi, whole device)"
done
