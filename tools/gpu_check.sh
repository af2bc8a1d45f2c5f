#!/usr/bin/env bash
# One GPU session's checks and measurements, for a machine without cargo: the binaries are built
# here with `cargo build --release --features cuda` (+ `--tests` for the two test binaries) and
# copied over. Runs, in order: the CUDA kernels against the CPU ops (ops/tests/cuda_vs_cpu.rs),
# the whole-model CPU-vs-GPU check (trainer/tests/gpu_model.rs), `trainer bench` in bf16 at
# micro-batch 8/16/32 and f32 at 16 with peak memory, and an ncu per-kernel profile of one bf16
# step summarised by tools/ncu_summary.py. Everything lands in OUT_DIR/gpu_check.tar.gz (one
# file: the device tool returns a limited number of files) and the summary on stdout.
# Usage: tools/gpu_check.sh TRAINER CUDA_VS_CPU GPU_MODEL OUT_DIR
set -uo pipefail
trainer=$1; cuda_vs_cpu=$2; gpu_model=$3; out=$4
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
export LD_LIBRARY_PATH=/usr/local/cuda-13.0/targets/x86_64-linux/lib:${LD_LIBRARY_PATH:-}
nvidia-smi --query-gpu=name,driver_version,memory.used --format=csv,noheader

echo "== kernels vs CPU"
"$cuda_vs_cpu" --test-threads 1 --nocapture > "$work/cuda_vs_cpu.log" 2>&1; echo "rc $?"
grep -E "test result|panicked|FAILED" "$work/cuda_vs_cpu.log"
echo "== whole model"
"$gpu_model" --nocapture > "$work/gpu_model.log" 2>&1; echo "rc $?"
grep -E "loss:|worst|test result|panicked" "$work/gpu_model.log"

echo "== bench"
for cfg in "bf16 8" "bf16 16" "bf16 32" "f32 16"; do
  set -- $cfg
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 > "$work/mem-$1-mb$2.csv" &
  smi=$!
  "$trainer" bench --model 130m --device cuda:0 --dtype "$1" --seq-len 1024 --micro-batch "$2" --grad-accum 1 --steps 5 \
    > "$work/bench-$1-mb$2.log" 2>&1
  kill "$smi"; wait "$smi" 2>/dev/null
  echo "$1 mb$2: $(tail -1 "$work/bench-$1-mb$2.log")  peak $(sort -n "$work/mem-$1-mb$2.csv" | tail -1) MiB"
done

echo "== ncu, bf16 micro-batch 16, warm-up + 1 step"
timeout 300 ncu --clock-control none --cache-control none --metrics gpu__time_duration.sum --print-summary per-kernel --csv \
  "$trainer" bench --model 130m --device cuda:0 --dtype bf16 --seq-len 1024 --micro-batch 16 --grad-accum 1 --steps 1 \
  > "$work/ncu.csv" 2> "$work/ncu.err"
echo "ncu rc $?"
python3 "$here/ncu_summary.py" "$work/ncu.csv" 2 25 | tee "$work/ncu_summary.txt"

mkdir -p "$out" && tar -czf "$out/gpu_check.tar.gz" -C "$work" .
