#!/usr/bin/env bash
# One multi-GPU session's checks and measurements (issues 4 and 6), for a GPU machine without
# cargo: the binaries are built here and copied over (docs/gpu.md, docs/multi-gpu.md).
#
# Usage: tools/multi_gpu_check.sh PHASE BIN_DIR SHARDS OUT_DIR
#   BIN_DIR holds `trainer` (built with --features nccl) and the test binaries `cuda_vs_cpu`,
#   `cuda_muon`, `cuda_multi_tensor`, `gpu_model` and `data_parallel_gpu` (cargo test --release
#   --features nccl --no-run).
#   PHASE a: the CUDA kernels against the CPU ops, the whole-model CPU-vs-GPU check, the NCCL
#            tests, `trainer bench` on one GPU at micro-batch 8/16/32 with peak memory, the
#            data-parallel bench on 1 and on all GPUs, and the 200-step run on all GPUs.
#   PHASE b: the same 200-step run on one GPU (same effective batch), then an ncu per-kernel
#            profile of one bf16 step at micro-batch 16 (tools/ncu_summary.py).
#   PHASE k: (one GPU is enough) the kernel and whole-model tests, the one-GPU bench and the
#            profile: a kernel change's check.
#   PHASE n: the NCCL tests, the data-parallel bench and the 200-step run on all GPUs: the
#            multi-GPU part of phase a alone.
# Results land in OUT_DIR/PHASE.tar.gz (one file: the device tool returns few files) and the
# summary on stdout.
set -uo pipefail
phase=$1; bin=$2; shards=$3; out=$4
work=$(mktemp -d)
nccl_lib=$(python3 -c 'import nvidia.nccl, os; print(os.path.dirname(nvidia.nccl.__file__))' 2>/dev/null)/lib
export LD_LIBRARY_PATH=/usr/local/cuda-13.0/targets/x86_64-linux/lib:$nccl_lib:${LD_LIBRARY_PATH:-}
gpus=$(nvidia-smi --query-gpu=index --format=csv,noheader | paste -sd, -)
nvidia-smi --query-gpu=index,name,driver_version,memory.used --format=csv,noheader
# 200-step equivalence run: 8 sequences per GPU, effective batch 8 × GPUs (one GPU accumulates).
world=$(echo "$gpus" | tr ',' '\n' | wc -l)
run_args=(train --data "$shards" --model 130m --dtype bf16 --micro-batch 8 --steps 200
          --seed 0 --eval-every 50 --eval-chunks 64)

# peak MiB of GPU memory (over all GPUs' samples) while "$@" runs; output to $log.
with_peak() {
  local log=$1; shift
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 > "$log.mem" &
  local smi=$!
  "$@" > "$log" 2>&1; local rc=$?
  kill "$smi"; wait "$smi" 2>/dev/null
  echo "rc $rc, peak $(sort -n "$log.mem" | tail -1) MiB"
}

tests() {
  echo "== kernels vs CPU"
  for t in cuda_vs_cpu cuda_muon cuda_multi_tensor; do
    "$bin/$t" --test-threads 1 --nocapture > "$work/$t.log" 2>&1; echo "$t: rc $?"
    grep -E "test result|panicked|FAILED" "$work/$t.log"
  done
  for io in F32 BF16; do
    echo "mixer ops, $io: worst rel err $(grep -E "mixer_.* $io " "$work/cuda_vs_cpu.log" | sed 's/.*rel err //' | sort -g | tail -n 1)"
  done
  echo "== whole model"
  "$bin/gpu_model" --nocapture > "$work/gpu_model.log" 2>&1; echo "rc $?"
  grep -E "loss:|worst|test result|panicked" "$work/gpu_model.log"
}

bench_one() {
  echo "== bench, one GPU"
  for mb in 8 16 32; do
    echo "bf16 mb$mb: $(with_peak "$work/bench-mb$mb.log" "$bin/trainer" bench --model 130m --device cuda:0 --dtype bf16 --seq-len 1024 --micro-batch $mb --grad-accum 1 --steps 5)"
    tail -n 2 "$work/bench-mb$mb.log"
  done
  # The issue's effective batch, 32 × 1024 tokens, as 16 × 2 and 8 × 4: Muon's share of the step.
  for ga in 2 4; do
    mb=$((32 / ga))
    echo "bf16 mb$mb x accum $ga: $(with_peak "$work/bench-mb${mb}x$ga.log" "$bin/trainer" bench --model 130m --device cuda:0 --dtype bf16 --seq-len 1024 --micro-batch $mb --grad-accum $ga --steps 5)"
    tail -n 1 "$work/bench-mb${mb}x$ga.log"
  done
}

dp() {
  echo "== NCCL tests"
  "$bin/data_parallel_gpu" --ignored --test-threads 1 --nocapture > "$work/dp_gpu.log" 2>&1; echo "rc $?"
  grep -E "^test |test result|panicked|loss" "$work/dp_gpu.log" | head -30
  echo "== data-parallel bench (micro-batch 16, grad-accum 2 per GPU)"
  for d in 0 "$gpus"; do
    echo "devices $d: $(with_peak "$work/dpbench-$d.log" "$bin/trainer" bench --model 130m --dtype bf16 --seq-len 1024 --micro-batch 16 --grad-accum 2 --steps 10 --devices "$d")"
    tail -n 4 "$work/dpbench-$d.log"
  done
}

run_multi() {
  echo "== 200 steps on GPUs $gpus"
  rm -rf /tmp/run-multi
  with_peak "$work/run-multi.log" "$bin/trainer" "${run_args[@]}" --grad-accum 1 --devices "$gpus" --out /tmp/run-multi
  grep -E "step +(1|50|100|150|200) |val" "$work/run-multi.log" | tail -n 12
  cp /tmp/run-multi/metrics.jsonl "$work/metrics-multi.jsonl" 2>/dev/null
}

run_one() {
  echo "== 200 steps on GPU 0, grad-accum $world"
  rm -rf /tmp/run-one
  with_peak "$work/run-one.log" "$bin/trainer" "${run_args[@]}" --grad-accum "$world" --device cuda:0 --out /tmp/run-one
  grep -E "step +(1|50|100|150|200) |val" "$work/run-one.log" | tail -n 12
  cp /tmp/run-one/metrics.jsonl "$work/metrics-one.jsonl" 2>/dev/null
}

profile() {
  echo "== ncu, bf16 micro-batch 16, warm-up + 1 step"
  timeout 240 ncu --clock-control none --cache-control none --metrics gpu__time_duration.sum --print-summary per-kernel --csv \
    "$bin/trainer" bench --model 130m --device cuda:0 --dtype bf16 --seq-len 1024 --micro-batch 16 --grad-accum 1 --steps 1 \
    > "$work/ncu.csv" 2> "$work/ncu.err"
  echo "ncu rc $?"
  python3 "$(dirname "$0")/ncu_summary.py" "$work/ncu.csv" 2 25
}

case "$phase" in
  a) tests; bench_one; dp; run_multi ;;
  b) run_one; profile ;;
  k) tests; bench_one; profile ;;
  n) dp; run_multi ;;
  *) echo "unknown phase $phase (a, b, k or n)" >&2; exit 2 ;;
esac
mkdir -p "$out" && tar -czf "$out/$phase.tar.gz" -C "$work" .
