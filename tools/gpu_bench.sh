#!/usr/bin/env bash
# GPU throughput of the trainer (fwd + bwd + hybrid optimizer step), 130m, seq 1024, at several
# micro-batch sizes, with peak GPU memory sampled by nvidia-smi (the whole device: an upper bound
# that includes the CUDA memory pool).
# Usage (on the GPU machine): tools/gpu_bench.sh TRAINER_BINARY [OUT_DIR] [MICRO_BATCHES...]
# Environment: DTYPE=bf16|f32 (default bf16); DATA=shard dir to read real batches through the
# training data loader (default: random tokens); STEPS (default 5).
set -euo pipefail
bin=$1; out=${2:-.}; shift $(( $# >= 2 ? 2 : $# ))
mbs=${*:-8 16 32}
dtype=${DTYPE:-bf16}
data_args=()
if [ -n "${DATA:-}" ]; then data_args=(--data "$DATA"); fi
mkdir -p "$out"
for mb in $mbs; do
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 > "$out/mem-$dtype-mb$mb.csv" &
  smi=$!
  "$bin" bench --model 130m --device cuda:0 --dtype "$dtype" --seq-len 1024 --micro-batch "$mb" --grad-accum 1 \
    --steps "${STEPS:-5}" "${data_args[@]}" 2>&1 | tee "$out/bench-$dtype-mb$mb.log"
  kill "$smi"; wait "$smi" 2>/dev/null || true
  echo "$dtype mb $mb: peak GPU memory $(sort -n "$out/mem-$dtype-mb$mb.csv" | tail -1) MiB (nvidia-smi, whole device)"
done
